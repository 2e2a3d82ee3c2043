//! The command line. Everything else lives in the library (see `lib.rs`).

use clap::{Args, Parser, Subcommand};
use sipfarm::config::{Config, Overrides};
use std::io::Read as _;
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
    Serve(Box<Overrides>),
    /// Look at the memcached farm.
    #[command(subcommand)]
    Farm(FarmCommand),
    /// Edit the users file of digest authentication (HA1 values, never passwords).
    #[command(subcommand)]
    User(UserCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Look at and fix the bindings in the farm (the same records, CAS and replica rules as
    /// the instances).
    #[command(subcommand)]
    Location(LocationCommand),
}

#[derive(Subcommand)]
enum LocationCommand {
    /// The bindings of AOR (expiry, q, source, flow) and what each owner node holds.
    Show {
        #[arg(value_name = "AOR")]
        aor: String,
        #[command(flatten)]
        farm: FarmArgs,
    },
    /// Remove the bindings of AOR, or only CONTACT: tombstones, so no replica brings them
    /// back (the phone's next REGISTER registers it again).
    Rm {
        #[arg(value_name = "AOR")]
        aor: String,
        #[arg(value_name = "CONTACT")]
        contact: Option<String>,
        #[command(flatten)]
        farm: FarmArgs,
    },
    /// Every AOR in the farm with its bindings, walking every node's keys.
    Dump {
        /// `human` (default) or `json`.
        #[arg(long, value_name = "FORMAT", default_value = "human")]
        format: String,
        #[command(flatten)]
        farm: FarmArgs,
    },
    /// Bind CONTACT to AOR for S seconds (a gateway, say), replacing an equal contact.
    Add {
        #[arg(value_name = "AOR")]
        aor: String,
        #[arg(value_name = "CONTACT")]
        contact: String,
        /// Seconds until it expires (1 to 2592000: memcached's longest relative TTL), or 0:
        /// kept until removed (renewed in memcached by the instances).
        #[arg(long, value_name = "S")]
        expires: u32,
        #[command(flatten)]
        farm: FarmArgs,
    },
}

/// Which farm: the nodes of a config file or of --memcached.
#[derive(Args)]
struct FarmArgs {
    /// TOML configuration file (its memcached section is used).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// memcached nodes, comma-separated HOST:PORT (overrides the file).
    #[arg(long, value_name = "HOST:PORT,...")]
    memcached: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE as `serve --config FILE` would read it (its keys, the users file and the
    /// shared secret it names), without starting: exit 0 with a summary, or 2 with what is
    /// wrong and where. Sockets are not bound and memcached is not asked.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or change its password: the password is read from standard input (one
    /// line) and its HA1 for realm DOMAIN written, for MD5 and SHA-256.
    Add(UserArgs),
    /// Remove a user.
    Rm(UserArgs),
}

#[derive(Args)]
struct UserArgs {
    /// The user's address-of-record, USER@DOMAIN (the domain is the realm).
    #[arg(value_name = "USER@DOMAIN")]
    aor: String,
    /// The users file (created when missing, mode 0600).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
}

#[derive(Subcommand)]
enum FarmCommand {
    /// Each configured node: up or down, items, bytes, hit ratio and evictions (memcached's
    /// own stats), and, with --instance, which nodes that running instance considers dead.
    Status(StatusArgs),
    /// Records whose replicas disagree, are missing on an owner node, or sit on a node that
    /// is not an owner; with --repair, the merge of every copy is written to the owners.
    /// Exit 0 when the farm is in order (after the repair), 1 when not.
    Check {
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        farm: FarmArgs,
    },
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

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sipfarm={level},warn")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One object per line; the request's span (Call-ID, CSeq, method, source) in "span".
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
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
    init_logging(&cfg.log_level, cfg.log_json);
    // SIGHUP reads the same file with the same flags again.
    let again = o.clone();
    let source: sipfarm::server::ConfigSource = Box::new(move || Config::load(&again));
    match sipfarm::server::run(cfg, Some(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The configuration and farm named by `--config` / `--memcached` (only those: not the
/// environment of `serve`), or status 2 saying what `what` needs.
fn farm_of(
    config: &Option<PathBuf>,
    memcached: &Option<String>,
    what: &str,
) -> Result<(Config, sipfarm::location::MemcachedConfig), ExitCode> {
    let o = Overrides {
        config: config.clone(),
        memcached: memcached.clone(),
        ..Default::default()
    };
    let mut cfg = Config::load(&o).map_err(|e| fail(&e))?;
    match cfg.memcached.take() {
        Some(mc) => Ok((cfg, mc)),
        None => Err(fail(&format!(
            "{what} needs --memcached or a --config with memcached.nodes"
        ))),
    }
}

/// Run a `location` command against the farm of `farm`; its output, or status 2.
fn location(cmd: &LocationCommand) -> ExitCode {
    let (aor, farm) = match cmd {
        LocationCommand::Show { aor, farm }
        | LocationCommand::Rm { aor, farm, .. }
        | LocationCommand::Add { aor, farm, .. } => (Some(aor), farm),
        LocationCommand::Dump { format, farm } => {
            if format != "human" && format != "json" {
                return fail(&format!("--format '{format}': human or json"));
            }
            (None, farm)
        }
    };
    let mc = match farm_of(&farm.config, &farm.memcached, "location") {
        Ok((_, mc)) => mc,
        Err(code) => return code,
    };
    let aor = match aor.map(|a| sipfarm::operate::parse_aor(a)).transpose() {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let done = rt.block_on(async {
        let store = sipfarm::location::Store::open_client(&mc).await?;
        let Some(aor) = aor else {
            let json = matches!(cmd, LocationCommand::Dump { format, .. } if format == "json");
            let dump = store.dump().await?;
            return Ok(sipfarm::operate::render_dump(&dump, json));
        };
        match cmd {
            LocationCommand::Dump { .. } => Err("dump takes no AOR".into()),
            LocationCommand::Show { .. } => {
                let view = store.inspect(&aor).await?;
                Ok(sipfarm::operate::render(&aor, &view))
            }
            LocationCommand::Rm { contact, .. } => {
                let n = sipfarm::operate::remove(&store, &aor, contact.as_deref()).await?;
                Ok(format!(
                    "{aor}: {n} binding{} removed\n",
                    if n == 1 { "" } else { "s" }
                ))
            }
            LocationCommand::Add {
                contact, expires, ..
            } => {
                if *expires > 2_592_000 {
                    return Err(format!(
                        "--expires {expires}: 1 to 2592000 seconds, or 0 (until removed)"
                    ));
                }
                sipfarm::operate::add(&store, &aor, contact, *expires).await?;
                Ok(match expires {
                    0 => format!("{aor}: {contact} bound until removed\n"),
                    s => format!("{aor}: {contact} bound for {s} s\n"),
                })
            }
        }
    });
    match done {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    // Only the file: a SIPFARM_ variable of this shell must not make a bad file pass.
    let o = Overrides {
        config: Some(file.to_path_buf()),
        ..Default::default()
    };
    match Config::load(&o).and_then(|cfg| sipfarm::server::check(&cfg)) {
        Ok(summary) => {
            println!("{}: ok: {summary}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn farm_check(repair: bool, farm: &FarmArgs) -> ExitCode {
    let mc = match farm_of(&farm.config, &farm.memcached, "farm check") {
        Ok((_, mc)) => mc,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let done = rt.block_on(async {
        let store = sipfarm::location::Store::open_client(&mc).await?;
        store.check(repair).await
    });
    match done {
        Ok(check) => {
            let (text, in_order) = sipfarm::operate::render_check(&check, repair);
            print!("{text}");
            if in_order {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

fn farm_status(args: &StatusArgs) -> ExitCode {
    let (cfg, mc) = match farm_of(&args.config, &args.memcached, "farm status") {
        Ok(both) => both,
        Err(code) => return code,
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
    print!(
        "{}",
        rt.block_on(sipfarm::status::render(&mc.nodes, &mc.key_prefix, instance))
    );
    ExitCode::SUCCESS
}

fn user_add(args: &UserArgs) -> ExitCode {
    // One line, at most 1 KiB: a password, not a file.
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    match std::io::BufRead::read_line(&mut (&mut stdin).take(1024), &mut line) {
        Ok(_) => {}
        Err(e) => {
            return fail(&format!(
                "cannot read the password from standard input: {e}"
            ));
        }
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return fail("no password on standard input (one line expected)");
    }
    match sipfarm::auth::add_user(&args.users, &args.aor, password) {
        Ok(()) => {
            println!("{}: {} added", args.users.display(), args.aor);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn user_rm(args: &UserArgs) -> ExitCode {
    match sipfarm::auth::remove_user(&args.users, &args.aor) {
        Ok(true) => {
            println!("{}: {} removed", args.users.display(), args.aor);
            ExitCode::SUCCESS
        }
        Ok(false) => fail(&format!("{}: no user {}", args.users.display(), args.aor)),
        Err(e) => fail(&e),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(o) => serve(&o),
        Command::Farm(FarmCommand::Status(args)) => farm_status(&args),
        Command::Farm(FarmCommand::Check { repair, farm }) => farm_check(repair, &farm),
        Command::User(UserCommand::Add(args)) => user_add(&args),
        Command::User(UserCommand::Rm(args)) => user_rm(&args),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Location(cmd) => location(&cmd),
    }
}
