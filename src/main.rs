//! The command line. Everything else lives in the library (see `lib.rs`).

use clap::{Args, Parser, Subcommand};
use sipfarm::config::{Config, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

/// SIP registrar and stateless proxy whose location service lives in a sharded memcached farm.
#[derive(Parser)]
#[command(name = "sipfarm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one instance (embedded in-memory location store unless --memcached is given).
    Serve(ServeArgs),
    /// Look at the memcached farm.
    #[command(subcommand)]
    Farm(FarmCommand),
}

#[derive(Subcommand)]
enum FarmCommand {
    /// Each configured node: up or down, items, bytes, hit ratio and evictions (memcached's
    /// own stats), and, with --instance, which nodes that running instance considers dead.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// TOML configuration file (its memcached.nodes and first UDP listen address are used).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// memcached nodes, comma-separated HOST:PORT (overrides the file).
    #[arg(long, value_name = "HOST:PORT,...")]
    memcached: Option<String>,
    /// A running instance to ask for its view (UDP IP:PORT). Default with --config: its first
    /// UDP listen address.
    #[arg(long, value_name = "IP:PORT")]
    instance: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; flags override its keys (see config/sipfarm.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen address, repeatable: udp:HOST:PORT or tcp:HOST:PORT (IPv6 as tcp:[::1]:5060).
    /// Default: udp:127.0.0.1:5060 and tcp:127.0.0.1:5060.
    #[arg(long, value_name = "PROTO:HOST:PORT")]
    listen: Vec<String>,
    /// Domain this instance is registrar for, repeatable or comma-separated (any port
    /// matches). Default: localhost and the listen addresses.
    #[arg(long, value_name = "DOMAIN")]
    domain: Vec<String>,
    /// memcached nodes, comma-separated HOST:PORT. Every instance of a farm must list the
    /// same nodes in the same spelling. Without it: the embedded in-memory store.
    #[arg(long, value_name = "HOST:PORT,...")]
    memcached: Option<String>,
    /// Copies of each record, on distinct nodes (1 to the node count; default 2, or 1 with
    /// a single node).
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
    /// Shortest registration accepted, in seconds (shorter: 423 with Min-Expires). Default 60.
    #[arg(long, value_name = "SECONDS")]
    min_expires: Option<u32>,
    /// Longest registration granted, in seconds (longer ones are shortened). Default 86400.
    #[arg(long, value_name = "SECONDS")]
    max_expires: Option<u32>,
    /// Registration time when the REGISTER names none, in seconds. Default 3600.
    #[arg(long, value_name = "SECONDS")]
    default_expires: Option<u32>,
    /// Most contacts one address-of-record may hold. Default 10.
    #[arg(long, value_name = "N")]
    max_contacts: Option<usize>,
    /// error, warn, info (default), debug or trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Threads, each running its own event loop with its own sockets on the listen addresses
    /// (SO_REUSEPORT). Default: the number of cores.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The URI that names the farm in Record-Route (no user part), e.g. sip:farm.example.test.
    /// Every instance treats a Route to it as its own. Default: sip:<first domain>.
    #[arg(long, value_name = "URI")]
    farm_uri: Option<String>,
    /// Do not add Record-Route (in-dialog requests then go straight to the peers).
    #[arg(long)]
    no_record_route: bool,
    /// Send requests for foreign domains to this proxy (a sip: URI) instead of resolving
    /// them by RFC 3263.
    #[arg(long, value_name = "URI")]
    outbound_proxy: Option<String>,
    /// DNS server for RFC 3263 lookups (NAPTR, SRV, A), IP or IP:PORT. Default: the system's.
    #[arg(long, value_name = "IP:PORT")]
    dns_server: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            domain: self.domain.clone(),
            memcached: self.memcached.clone(),
            replicas: self.replicas,
            min_expires: self.min_expires,
            max_expires: self.max_expires,
            default_expires: self.default_expires,
            max_contacts: self.max_contacts,
            log_level: self.log_level.clone(),
            threads: self.threads,
            no_record_route: self.no_record_route,
            farm_uri: self.farm_uri.clone(),
            outbound_proxy: self.outbound_proxy.clone(),
            dns_server: self.dns_server.clone(),
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sipfarm={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("sipfarm: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

fn farm_status(args: StatusArgs) -> ExitCode {
    let o = Overrides {
        config: args.config.clone(),
        memcached: args.memcached.clone(),
        ..Default::default()
    };
    let cfg = match Config::load(&o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sipfarm: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(mc) = cfg.memcached else {
        eprintln!("sipfarm: farm status needs --memcached or a --config with memcached.nodes");
        return ExitCode::from(2);
    };
    let instance = match &args.instance {
        Some(i) => match i.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                eprintln!("sipfarm: --instance '{i}' is not IP:PORT");
                return ExitCode::from(2);
            }
        },
        None if args.config.is_some() => cfg
            .listen
            .iter()
            .find(|l| l.proto == sipfarm::config::Proto::Udp)
            .map(|l| l.addr),
        None => None,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let nodes: Vec<String> = mc.nodes.iter().map(|(a, _)| a.clone()).collect();
    print!("{}", rt.block_on(sipfarm::status::render(&nodes, instance)));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Farm(FarmCommand::Status(args)) => farm_status(args),
        Command::Serve(args) => {
            let cfg = match Config::load(&args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sipfarm: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log_level);
            match sipfarm::server::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipfarm: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
