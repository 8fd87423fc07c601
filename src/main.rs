//! The `relay` binary: reads the configuration, starts the server (listening for SIGINT/SIGTERM
//! from the start), prints its address, waits for one of those signals and shuts down in order.
//! Everything else lives in the library.

use clap::Parser;
use relay::config::Config;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("relay=info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();

    config.max_connections = raise_open_file_limit(config.max_connections);
    // Listened for from the start: a supervisor that stops relay as soon as it is up (or while it
    // starts) gets an orderly exit, never the signal's default death.
    let mut stop = shutdown_signal();
    let running = tokio::select! {
        started = relay::server::start(&config) => match started {
            Ok(r) => r,
            Err(e) => {
                eprintln!("relay: {e}");
                return ExitCode::FAILURE;
            }
        },
        () = &mut stop => {
            eprintln!("relay: stopped while starting");
            return ExitCode::SUCCESS;
        }
    };
    // One line on stdout that scripts and tests can wait for. Nobody reading it (a closed
    // pipe) is no reason to stop: `println!` would panic.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "relay listening on http://{}", running.addr);
    let _ = stdout.flush();

    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Every socket is a file descriptor, and the usual soft limit (1024) is far below
/// `MAX_CONNECTIONS`: raise it to the hard limit, as the process may. Returns the connections
/// relay may admit: `max_connections`, or fewer when even the hard limit is short, leaving room
/// for the database's connections, the listener and HTTP requests (a two-hundredth of the limit,
/// at least 64: 19,900 sockets at a limit of 20,000; the database needs some 25 descriptors at
/// most, and the accept loop keeps 32 of them whatever the clients hold). At the limit itself
/// every accept fails, `/metrics` and `/readyz` included: better to refuse the connection past
/// the cap with a 503.
fn raise_open_file_limit(max_connections: usize) -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let reserve = (limit / 200).max(64);
            let fits = usize::try_from(limit.saturating_sub(reserve))
                .unwrap_or(usize::MAX)
                .max(1);
            if fits < max_connections {
                tracing::warn!(
                    limit,
                    max_connections,
                    admitted = fits,
                    "open-file limit too low for MAX_CONNECTIONS: admitting {fits} connections; \
                     raise `ulimit -n` (hard) or lower MAX_CONNECTIONS"
                );
                return fits;
            }
            tracing::debug!(limit, "open-file limit");
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    max_connections
}

/// SIGINT or SIGTERM: listened for from this call on (not from the first poll), so none is
/// missed while the server starts.
fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
