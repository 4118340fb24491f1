//! The `portcullis` command line: nothing but argument parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portcullis::app::App;
use portcullis::config::{Config, DEFAULT_CONFIG_PATH};
use portcullis::{server, telemetry};

/// A reverse-proxy authentication gateway.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        default_value = DEFAULT_CONFIG_PATH,
        value_name = "PATH"
    )]
    config: PathBuf,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (main and admin listeners) until SIGTERM or SIGINT.
    Serve,
    /// Validate the configuration and exit: 0 when valid, 2 with the offending key otherwise.
    CheckConfig,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "{}: configuration is valid ({} route{})",
                cli.config.display(),
                config.routes.len(),
                if config.routes.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Migrate => {
            println!("nothing to migrate");
            Ok(())
        }
        Command::Serve => serve(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let _guards = telemetry::init(&config.logging)?;
    server::check_binds(&config)?;
    let listen = config.server.listen;
    let admin = config.server.admin_listen;
    let app = App::new(config)?;
    tracing::info!(%listen, %admin, version = env!("CARGO_PKG_VERSION"), "portcullis starting");
    server::run_forever(app);
    tracing::info!("portcullis stopped");
    Ok(())
}
