//! `restguard`: DRF-compatible authentication server and admin CLI.
//!
//! Exit status: 0 on success, 2 for malformed arguments, 1 with a one-line error otherwise.

mod app;
mod body;
mod cli;
mod client_ip;
mod config;
mod error;
mod metrics;
mod original_path;
mod policy_tables;
mod redact;
mod routes;
mod scaleout;
mod secret_key;
mod stores;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out.replace('\n', " ")
}

fn main() -> std::process::ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error: {}",
            info.to_string().replace('\n', " ")
        );
    }));
    let cli = cli::Cli::parse();
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // Everything the process prints from here on has the configured secrets masked.
    let scrubber = redact::Scrubber::from_config(&config);
    tracing_subscriber::fmt()
        .with_writer(scrubber.stderr())
        .with_env_filter(
            EnvFilter::try_from_env("RESTGUARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let line = chain.join(": ").replace('\n', " ");
            eprintln!("error: {}", scrubber.scrub(&line));
            std::process::ExitCode::from(1)
        }
    }
}
