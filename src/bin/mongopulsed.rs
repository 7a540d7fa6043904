//! The companion daemon's command line; the work lives in `mongopulse::daemon`.

use std::path::PathBuf;

// Many small, short-lived allocations per event: mimalloc serves them faster
// than glibc's allocator (measured by scripts/bench-ingest.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mongopulse::daemon::{self, Config, LogFormat};

/// Mongo Pulse daemon: ingests events into MongoDB and keeps the rollups that
/// the Grafana data source reads.
///
/// Configuration comes from built-in defaults, then the TOML file given with
/// --config, then environment variables MONGOPULSE__SECTION__KEY (for example
/// MONGOPULSE__MONGODB__URI). See README.md, "Configuration".
#[derive(Parser)]
#[command(name = "mongopulsed", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE", env = "MONGOPULSE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Print the effective configuration (password masked) and exit.
    PrintConfig,
    /// Recompute rollups of a time range from the raw events (safe to re-run).
    Backfill {
        /// Start of the range: RFC 3339 (2024-12-09T14:00:00Z) or epoch ms.
        #[arg(long)]
        from: String,
        /// End of the range (exclusive), same forms.
        #[arg(long)]
        to: String,
        /// Only this rollup spec (default: all).
        #[arg(long)]
        spec: Option<String>,
        /// Allow a range the running daemon has not finalised yet (stop it first).
        #[arg(long)]
        force: bool,
    },
    /// Send realistic demo traffic to a running daemon until stopped.
    Loadgen {
        /// The daemon's HTTP address.
        #[arg(
            long,
            default_value = "http://127.0.0.1:8428",
            env = "MONGOPULSE_LOADGEN_URL"
        )]
        url: String,
        /// An API key the daemon accepts.
        #[arg(long, env = "MONGOPULSE_LOADGEN_KEY", hide_env_values = true)]
        key: String,
        /// Events per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Stop after this many events (0: run until stopped).
        #[arg(long, default_value_t = 0)]
        events: u64,
        /// Share of events sent malformed on purpose (0 to 1), to see rejections.
        #[arg(long, default_value_t = 0.0)]
        invalid_fraction: f64,
        /// First send this many minutes of past traffic (needs the daemon's
        /// rollups.idle_finalize_secs longer than that, or it is refused as late).
        #[arg(long, default_value_t = 0)]
        history_minutes: u32,
        /// Publish the batches to this NATS server (nats://host:4222) instead of
        /// posting them, for a daemon with a NATS source.
        #[arg(long, env = "MONGOPULSE_LOADGEN_NATS")]
        nats: Option<String>,
        /// The JetStream subject to publish to, with --nats.
        #[arg(long, default_value = "events.loadgen")]
        subject: String,
        /// Publish the batches to these Kafka brokers (host:9092[,…]) instead of
        /// posting them, for a daemon with a Kafka source.
        #[arg(long, env = "MONGOPULSE_LOADGEN_KAFKA")]
        kafka: Option<String>,
        /// The Kafka topic to publish to, with --kafka.
        #[arg(long, default_value = "events")]
        topic: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mongopulsed: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintConfig => {
            print!("{}", config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
        Command::Loadgen {
            url,
            key,
            rate,
            events,
            invalid_fraction,
            history_minutes,
            nats,
            subject,
            kafka,
            topic,
        } => {
            init_logging(&config);
            let options = daemon::loadgen::LoadgenOptions {
                url,
                key,
                rate,
                events,
                invalid_fraction,
                history_minutes,
                nats,
                subject,
                kafka,
                topic,
            };
            block_on(async move {
                daemon::loadgen::run(options, shutdown_signal())
                    .await
                    .map(|_| ())
                    .map_err(daemon::DaemonError::Loadgen)
            })
        }
        Command::Backfill {
            from,
            to,
            spec,
            force,
        } => {
            init_logging(&config);
            block_on(daemon::backfill(config, &from, &to, spec.as_deref(), force))
        }
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), daemon::DaemonError>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mongopulsed: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mongopulsed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    init_logging(&config);
    block_on(daemon::run(config, shutdown_signal()))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
