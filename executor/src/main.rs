//! `executor` binary: parse flags, apply the `.env` file, turn SIGTERM/SIGINT into a
//! cancellation, and hand both to [`executor::run`]. A second signal exits at once
//! (messages still held reappear after their visibility timeout: nothing is lost).

use std::process::ExitCode;

use clap::Parser;
use common::exit::Exit;
use executor::Cli;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let until_empty = cli.until_empty;
    // Before any thread exists: AWS_* variables written in .env must reach aws-config.
    if let Err(e) = common::config::apply_dotenv_to_process(cli.global.env_file.as_deref()) {
        eprintln!("error: {e}");
        return Exit::for_error(&e).to_exit_code();
    }
    let own = Cli::env_names();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    common::config::warn_unknown_env(cli.global.env_file.as_deref(), &own, &["EXECUTOR_"]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signals(shutdown.clone()));
        match executor::run(cli, shutdown).await {
            Ok(stats) => executor::exit_for(&stats, until_empty).to_exit_code(),
            Err(e) => {
                eprintln!("error: {}", common::error::human_chain(e.as_ref()));
                Exit::for_anyhow(&e).to_exit_code()
            }
        }
    })
}

/// First SIGTERM/SIGINT: graceful stop. Second: exit now.
async fn on_signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot listen for SIGTERM: {e}");
            return;
        }
    };
    let mut first = true;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        if first {
            tracing::info!(
                signal = name,
                "shutting down gracefully (a second signal exits at once)"
            );
            shutdown.cancel();
            first = false;
        } else {
            tracing::warn!(signal = name, "second signal: exiting now");
            std::process::exit(130);
        }
    }
}
