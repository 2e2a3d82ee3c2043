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
    Serve(Overrides),
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

/// What the operator must fix (configuration, arguments): the message, and status 2.
fn fail(e: &str) -> ExitCode {
    eprintln!("sipfarm: {e}");
    ExitCode::from(2)
}

fn serve(o: &Overrides) -> ExitCode {
    let cfg = match Config::load(o) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    init_logging(&cfg.log_level);
    match sipfarm::server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn farm_status(args: &StatusArgs) -> ExitCode {
    let o = Overrides {
        config: args.config.clone(),
        memcached: args.memcached.clone(),
        ..Default::default()
    };
    let cfg = match Config::load(&o) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let Some(mc) = cfg.memcached else {
        return fail("farm status needs --memcached or a --config with memcached.nodes");
    };
    let instance = match &args.instance {
        Some(i) => match i.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => return fail(&format!("--instance '{i}' is not IP:PORT")),
        },
        // A file describes an instance: ask that one (its first UDP listen address).
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
    match Cli::parse().command {
        Command::Serve(o) => serve(&o),
        Command::Farm(FarmCommand::Status(args)) => farm_status(&args),
    }
}
