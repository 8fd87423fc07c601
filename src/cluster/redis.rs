//! The Redis bus: committed batches travel between the nodes of a cluster over Redis pub/sub
//! (channel `<cluster name>:batches`), through redis-rs.
//!
//! A node publishes each batch it commits (its rows as stored, and the id committed before them)
//! and hands it to its own [`Follower`] at once; the batches of the other nodes come in through
//! the subscription. Pub/sub may drop messages (a restart of Redis, a slow subscriber): the
//! follower notices the gap by the `prev` chain and reads it from the database, so a message the
//! bus lost is late, never missing. A message on the channel that is not a batch of this cluster's
//! form is logged, counted and ignored.
//!
//! Wire form (JSON): `{"v":1,"node":"<id>","prev":<id>,"rows":[[<id>,"<content>"],…]}`, rows
//! ascending and all above `prev`.
//!
//! Must not: decide order (the follower does), or block the sequencer (publishing is a send to a
//! task of its own).

use super::follower::Follower;
use crate::delivery::batch::Batch;
use crate::metrics::Metrics;
use crate::sequencer::bus::Bus;
use crate::store::Row;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a node of a cluster publishes through.
pub struct RedisBus {
    follower: Follower,
    outbox: mpsc::UnboundedSender<String>,
    node: String,
}

/// Where the bus is: the client, its channel and this node's id.
#[derive(Clone)]
pub struct Endpoint {
    pub client: redis::Client,
    pub channel: String,
    pub node: String,
}

impl RedisBus {
    /// Starts the publisher and the subscriber on `tasks`; both end when `stop` is cancelled.
    /// Batches are published until then, so cancel it after the sequencer stopped.
    pub fn start(
        endpoint: Endpoint,
        follower: Follower,
        offsets: bool,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> RedisBus {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(publish(endpoint.clone(), rx, metrics.clone(), stop.clone()));
        tasks.spawn(subscribe(
            endpoint.clone(),
            follower.clone(),
            offsets,
            max_message_bytes,
            metrics,
            stop,
        ));
        RedisBus {
            follower,
            outbox: tx,
            node: endpoint.node,
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, batch: Arc<Batch>, rows: Vec<Row>) {
        let payload = encode(&self.node, batch.prev, &rows);
        self.follower.offer(batch);
        let _ = self.outbox.send(payload);
    }

    fn catch_up(&self, id: u64) {
        self.follower.catch_up(id);
    }
}

/// A batch's wire form.
pub fn encode(node: &str, prev: u64, rows: &[Row]) -> String {
    let rows: Vec<Value> = rows.iter().map(|r| json!([r.id, r.content])).collect();
    json!({ "v": 1, "node": node, "prev": prev, "rows": rows }).to_string()
}

/// A received batch: the node that published it, `prev`, and its rows. `None` for anything that
/// is not exactly a batch of this form (rows ascending and above `prev`, contents strings of at
/// most `max_message_bytes`).
pub fn decode(payload: &[u8], max_message_bytes: usize) -> Option<(String, u64, Vec<Row>)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    if v.get("v")?.as_u64()? != 1 {
        return None;
    }
    let node = v.get("node")?.as_str()?.to_string();
    let prev = v.get("prev")?.as_u64()?;
    let mut last = prev;
    let mut rows = Vec::new();
    for row in v.get("rows")?.as_array()? {
        let [id, content] = row.as_array()?.as_slice() else {
            return None;
        };
        let (id, content) = (id.as_u64()?, content.as_str()?);
        if id <= last || content.len() > max_message_bytes {
            return None;
        }
        last = id;
        rows.push(Row {
            id,
            content: content.to_string(),
        });
    }
    (!rows.is_empty()).then_some((node, prev, rows))
}

async fn publish(
    endpoint: Endpoint,
    mut outbox: mpsc::UnboundedReceiver<String>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        let payload = tokio::select! {
            biased;
            p = outbox.recv() => match p {
                Some(p) => p,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        if conn.is_none() {
            conn = endpoint
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| tracing::debug!(error = %e, "cannot reach Redis to publish"))
                .ok();
        }
        let Some(c) = conn.as_mut() else {
            // Redis is down: the batch is dropped from the bus; the other nodes read it from the
            // database.
            metrics.bus_publish_failures.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&endpoint.channel)
            .arg(payload)
            .query_async(c)
            .await;
        match sent {
            Ok(_) => {
                metrics.bus_published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "publishing a batch failed");
                metrics.bus_publish_failures.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

async fn subscribe(
    endpoint: Endpoint,
    follower: Follower,
    offsets: bool,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let session = async {
            let mut pubsub = endpoint.client.get_async_pubsub().await?;
            pubsub.subscribe(&endpoint.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = session => s,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(50);
                metrics.bus_up.store(1, Ordering::Relaxed);
                if first {
                    tracing::info!(node = endpoint.node, channel = endpoint.channel, "bus up");
                } else {
                    metrics.bus_reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = endpoint.node, "bus up again; reading what it missed");
                }
                first = false;
                // Whatever was committed while this node was not listening.
                follower.catch_up(u64::MAX);
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match decode(msg.get_payload_bytes(), max_message_bytes) {
                        Some((node, _, _)) if node == endpoint.node => {} // ours, offered already
                        Some((_, prev, rows)) => {
                            metrics.bus_received.fetch_add(1, Ordering::Relaxed);
                            follower.offer(Batch::from_rows(prev, &rows, offsets));
                        }
                        None => {
                            metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                channel = endpoint.channel,
                                bytes = msg.get_payload_bytes().len(),
                                "ignored a message on the bus that is not a batch of this cluster"
                            );
                        }
                    }
                }
                tracing::warn!(
                    node = endpoint.node,
                    "bus down: lost the subscription to Redis"
                );
            }
            Err(e) => {
                if metrics.bus_up.load(Ordering::Relaxed) == 1 || first {
                    tracing::warn!(node = endpoint.node, error = %e, "bus down: cannot reach Redis");
                }
            }
        }
        metrics.bus_up.store(0, Ordering::Relaxed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_anything_else_is_refused() {
        let rows = vec![
            Row {
                id: 11,
                content: "a \"quoted\" 😀".into(),
            },
            Row {
                id: 13,
                content: String::new(),
            },
        ];
        let payload = encode("n1", 10, &rows);
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(("n1".into(), 10, rows))
        );
        for bad in [
            "not json",
            "{}",
            r#"{"v":2,"node":"n","prev":1,"rows":[[2,"x"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[]}"#,
            r#"{"v":1,"node":"n","prev":5,"rows":[[5,"x"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[3,"x"],[2,"y"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,7]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","extra"]]}"#,
            r#"{"v":1,"node":5,"prev":1,"rows":[[2,"x"]]}"#,
        ] {
            assert_eq!(decode(bad.as_bytes(), 100), None, "{bad}");
        }
        let long = encode(
            "n",
            0,
            &[Row {
                id: 1,
                content: "x".repeat(101),
            }],
        );
        assert_eq!(decode(long.as_bytes(), 100), None, "over the message limit");
    }
}
