//! Unit tests only: a transport in memory, so sessions can be driven with a paused clock and no
//! network. The test holds the client's end: it sends packet texts (or a transport error) and
//! reads what the session queued from the [`MemorySink`].

use super::{DisconnectReason, EngineConfig, Received, Registry, Transport};
use crate::delivery::queue::PacketQueue;
use crate::delivery::testing::MemorySink;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A registry with its heartbeat running on the test's runtime, and the token that shuts it
/// down.
pub fn registry(config: EngineConfig) -> (Arc<Registry>, CancellationToken) {
    let registry = Registry::new(config);
    let shutdown = CancellationToken::new();
    registry.start(
        &TaskTracker::new(),
        shutdown.clone(),
        CancellationToken::new(),
    );
    (registry, shutdown)
}

pub type ClientEnd = mpsc::UnboundedSender<Result<Received<String>, DisconnectReason>>;

pub struct MemoryTransport {
    inbound: mpsc::UnboundedReceiver<Result<Received<String>, DisconnectReason>>,
    /// The reason the session closed with, once it has.
    pub closed: Arc<Mutex<Option<DisconnectReason>>>,
    queue: Arc<PacketQueue<MemorySink>>,
}

impl MemoryTransport {
    /// A transport, the client's end of it, and the session's packet queue (whose sink takes
    /// everything at once).
    pub fn new() -> (MemoryTransport, ClientEnd, Arc<PacketQueue<MemorySink>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(PacketQueue::new(MemorySink::taking()));
        (
            MemoryTransport {
                inbound: rx,
                closed: Arc::default(),
                queue: queue.clone(),
            },
            tx,
            queue,
        )
    }
}

impl Transport for MemoryTransport {
    type Sink = MemorySink;
    type Text = String;
    const NAME: &'static str = "test";
    const UPGRADES: &'static [&'static str] = &[];

    async fn recv(&mut self) -> Result<Received<String>, DisconnectReason> {
        match self.inbound.recv().await {
            Some(r) => r,
            None => Err(DisconnectReason::TransportError(
                "client end dropped".into(),
            )),
        }
    }

    async fn close(&mut self, reason: &DisconnectReason, _grace: Duration) {
        *self.closed.lock().unwrap() = Some(reason.clone());
        self.queue.close();
    }
}
