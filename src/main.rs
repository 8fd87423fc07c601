//! The `relay` binary: reads the configuration, starts the server, waits for SIGINT/SIGTERM and
//! shuts down in order. Everything else lives in the library.

use clap::Parser;
use relay::config::Config;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("relay=info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();

    raise_open_file_limit(config.max_connections);
    let running = match relay::server::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One line on stdout that scripts and tests can wait for.
    println!("relay listening on http://{}", running.addr);
    let _ = std::io::stdout().flush();

    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Every socket is a file descriptor, and the usual soft limit (1024) is far below
/// `MAX_CONNECTIONS`: raise it to the hard limit, as the process may, and say when even that is
/// short.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Sockets, plus the database's connections, the listener and a margin.
            let wanted = max_connections as u64 + 64;
            if limit < wanted {
                tracing::warn!(
                    limit,
                    max_connections,
                    "open-file limit below MAX_CONNECTIONS: connections beyond it will fail; raise `ulimit -n` (hard) or lower MAX_CONNECTIONS"
                );
            } else {
                tracing::debug!(limit, "open-file limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
