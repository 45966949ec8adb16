//! The `glimpse` command line: parses arguments, sets up logging and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use glimpse::config::Config;
use glimpse::supervisor::{self, RunOptions};

/// Glimpse: cameras in, searchable embeddings out, on the device.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Stop once every camera reached the end of its file and every record is delivered
        /// (to Pinecone when configured, else to the outbox).
        #[arg(long)]
        exit_when_done: bool,
        /// Seconds the syncer and MQTT get to finish after a stop signal.
        #[arg(long, default_value_t = 10.0)]
        stop_timeout_s: f64,
    },
    /// Validate the config, load both models and open every source; exit 2 listing every
    /// problem, 0 when all is well.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GLIMPSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config, exit_when_done, stop_timeout_s } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let options = RunOptions { exit_when_done, stop_timeout: Duration::from_secs_f64(stop_timeout_s.clamp(0.0, 3600.0)) };
            match supervisor::run(config, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "glimpse cannot run");
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { config } => {
            let problems = glimpse::check::check(&config);
            if problems.is_empty() {
                println!("{}: all checks passed", config.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("problem: {p}");
                }
                println!("{} problem(s) found", problems.len());
                ExitCode::from(2)
            }
        }
    }
}
