//! `tryst`: the rendezvous relay's command-line entry point. The logic lives in the
//! `tryst_relay` library; this file parses arguments, installs logging and maps errors.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;
use tryst_relay::cli::{Cli, Command};
use tryst_relay::config::{self, ServeConfig};
use tryst_relay::serve;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `: `-separated, leaving out a cause whose text
/// the message before it already holds (several errors print their source inside their
/// own message, as their logs need).
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => {
            let config = ServeConfig::load(&args)?;
            if args.check_config {
                print!("{}", serve::check_config(&config)?);
            } else if tryst_engine::driver::is_worker() {
                serve::run_worker_process(&config, args.replay_floor).context("worker")?;
            } else {
                serve::run_supervisor(config)?;
            }
        }
        Command::Tag(args) => print!("{}", tryst_relay::tag::describe(&args.app_id, &args.tag)),
        Command::Expose(args) => std::process::exit(tryst_relay::agent::expose::main(&args)),
        Command::Connect(args) => std::process::exit(tryst_relay::agent::connect::main(&args)),
        Command::Provision(args) => {
            let path = config::provision_secrets_path(&args)?;
            let text = tryst_relay::provision::run(&path, &args)?;
            print!("{text}");
        }
    }
    Ok(())
}

/// Logs to stderr, filtered by `TRYST_LOG` (default: info for tryst, warn otherwise).
fn init_logging() {
    let filter = EnvFilter::try_from_env("TRYST_LOG").unwrap_or_else(|_| {
        EnvFilter::new("warn,tryst=info,tryst_relay=info,tryst_engine=info,tryst_client=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
