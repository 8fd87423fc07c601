//! The yardstick among Rust Socket.IO servers: the socket.io tutorial's chat on socketioxide,
//! with its default transports (polling, then WebSocket) and no database at all (an in-memory
//! counter as the id), so every cost it shows is the server's own. The load tool starts it with
//! `--socketioxide-reference` (build it once first: see `benches/README.md`).
//!
//! It prints "relay listening on http://HOST:PORT" like relay, so the tool finds it the same way.

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

static LAST_ID: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (svc, io) = SocketIo::builder().max_payload(1_000_000).build_svc();
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "chat message",
            async |io: SocketIo, Data((msg, _offset)): Data<(Value, Value)>, ack: AckSender| {
                let id = LAST_ID.fetch_add(1, Ordering::Relaxed) + 1;
                let _ = io.emit("chat message", &(msg, id)).await;
                let _ = ack.send(&());
            },
        );
    });
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = TcpListener::bind(format!("{host}:{port}")).await?;
    println!("relay listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
