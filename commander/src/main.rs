//! `commander` binary: parse flags, hand Ctrl-C in as the shutdown signal, run.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = commander::cli::Cli::parse();
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    match commander::run(cli, shutdown).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", common::error::human_chain(e.as_ref()));
            common::exit::Exit::for_anyhow(&e).to_exit_code()
        }
    }
}
