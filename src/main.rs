//! The `portico` command: flags, tracing and signals around the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use portico::certs::{write_dev_certs, CertRequest};
use portico::{Config, Server};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "A TLS-terminating front door for private message brokers"
)]
struct Cli {
    /// Log format; the level is set with RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "PORTICO_LOG_FORMAT")]
    log_format: LogFormat,
    /// With no command: `demo`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the front door.
    Serve {
        #[arg(long, default_value = "config/portico.toml")]
        config: PathBuf,
        /// How long open connections may run on after SIGTERM or Ctrl-C.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        grace: Duration,
        /// Reload only on SIGHUP, not when the files change.
        #[arg(long)]
        no_watch: bool,
    },
    /// Check a configuration: exit 0, or print every error and exit 2.
    Check {
        #[arg(long, default_value = "config/portico.toml")]
        config: PathBuf,
    },
    /// Run the demo: dev certificates, a broker pair and two networked
    /// brokers, and the front door, on loopback. What `cargo run --release` runs.
    #[cfg(feature = "demo")]
    Demo,
    /// One broker node (as `portico-broker run`); the demo starts its brokers with it.
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    BrokerNode {
        #[arg(long)]
        config: PathBuf,
        /// Stop when standard input closes (the demo's pipe: its brokers
        /// stop with it, however it ends).
        #[arg(long)]
        stop_with_stdin: bool,
    },
    /// Send messages to a broker (the same tool as `portico-broker producer`).
    #[cfg(feature = "demo")]
    Producer(portico_broker::tools::cli::ProducerFlags),
    /// Receive messages from a broker (the same tool as `portico-broker consumer`).
    #[cfg(feature = "demo")]
    Consumer(portico_broker::tools::cli::ConsumerFlags),
    /// Make development certificates: a CA, one per domain, one per broker.
    Certs {
        /// Folder to write into (an existing ca.crt/ca.key there is reused).
        #[arg(long)]
        out: PathBuf,
        /// A front-door name, such as mq.localhost (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// A broker name; its certificate also covers localhost and every --ip (repeatable).
        #[arg(long = "broker")]
        brokers: Vec<String>,
        /// An IP address for the broker certificates (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
    },
}

/// Durations as the config writes them (`"500ms"`, `"1m30s"`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    portico_core::duration::parse(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let Some(command) = cli.command.or_else(default_command) else {
        // Built without the demo: there is no default command.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::from(2);
    };
    match command {
        #[cfg(feature = "demo")]
        Command::Demo => demo(),
        #[cfg(feature = "demo")]
        Command::BrokerNode {
            config,
            stop_with_stdin,
        } => broker_node(&config, stop_with_stdin),
        Command::Check { config } => check(&config),
        #[cfg(feature = "demo")]
        Command::Producer(flags) => portico_broker::tools::cli::producer(flags),
        #[cfg(feature = "demo")]
        Command::Consumer(flags) => portico_broker::tools::cli::consumer(flags),
        Command::Certs {
            out,
            domains,
            brokers,
            ips,
        } => certs(
            &out,
            CertRequest {
                domains,
                brokers,
                ips,
            },
        ),
        Command::Serve {
            config,
            grace,
            no_watch,
        } => serve(&config, grace, !no_watch),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}", e.report(path));
        ExitCode::from(2)
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} listener{}, {} target group{})",
                path.display(),
                config.listeners.len(),
                if config.listeners.len() == 1 { "" } else { "s" },
                config.target_groups.len(),
                if config.target_groups.len() == 1 {
                    ""
                } else {
                    "s"
                },
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn certs(out: &std::path::Path, request: CertRequest) -> ExitCode {
    if request.domains.is_empty() && request.brokers.is_empty() {
        eprintln!("error: name at least one --domain or --broker");
        return ExitCode::from(2);
    }
    match write_dev_certs(out, &request) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// What `portico` with no command runs: the demo, when it is built in.
fn default_command() -> Option<Command> {
    #[cfg(feature = "demo")]
    return Some(Command::Demo);
    #[cfg(not(feature = "demo"))]
    return None;
}

#[cfg(feature = "demo")]
fn demo() -> ExitCode {
    let runtime = match portico_core::signals::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let root = std::env::current_dir().unwrap_or_default();
    runtime.block_on(async {
        let demo = match portico::demo::Demo::start(&root).await {
            Ok(d) => d,
            Err(e) => {
                error!("{e}");
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        println!("{}", demo.banner());
        info!("portico demo ready");
        portico_core::signals::stop().await;
        info!("stopping the demo");
        demo.stop().await;
        ExitCode::SUCCESS
    })
}

#[cfg(feature = "demo")]
fn broker_node(path: &std::path::Path, stop_with_stdin: bool) -> ExitCode {
    let config = match portico_broker::config::BrokerConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.report(path));
            return ExitCode::from(2);
        }
    };
    let runtime = match portico_core::signals::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let stdin_closed = stdin_closed(stop_with_stdin);
        let stop = async {
            tokio::select! {
                _ = portico_core::signals::stop() => {}
                _ = stdin_closed => info!("standard input closed: stopping"),
            }
        };
        match portico_broker::run_node(config, stop).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                error!("{e}");
                ExitCode::from(2)
            }
        }
    })
}

/// Resolves once standard input reaches its end (never, unless `watch`).
#[cfg(feature = "demo")]
async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let (closed, done) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let _ = done.await;
}

fn serve(path: &std::path::Path, grace: Duration, watch: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match portico_core::signals::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        };
        if watch {
            if let Err(e) = server.watch_config().await {
                warn!("{e}; reload with SIGHUP instead");
            }
        }
        info!(config = %path.display(), "portico is serving");
        portico_core::systemd::notify("READY=1");
        serve_until_stopped(&server).await;
        portico_core::systemd::notify("STOPPING=1");
        info!("shutting down");
        server.shutdown(grace).await;
        info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Reloads on SIGHUP until SIGTERM or Ctrl-C.
#[cfg(unix)]
async fn serve_until_stopped(server: &Server) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stop with Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                // Errors are logged, counted and shown by the server itself.
                let _ = server.reload().await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn serve_until_stopped(_server: &Server) {
    let _ = tokio::signal::ctrl_c().await;
}
