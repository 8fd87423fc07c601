//! Counters and gauges for `GET /metrics`, in the Prometheus text format (version 0.0.4).
//!
//! Plain atomics, bumped where things happen: once per group commit, per flush or per connection —
//! never once per frame on the fan-out path, where a shared cache line written by every socket would
//! cost more than the delivery itself. Rendering is the only place that reads them.

use crate::chat::{Rejection, REFUSAL_KINDS};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A protocol error that closes a connection, counted in `relay_bad_inputs_total{kind=…}` after
/// the chat's refusals ([`crate::chat::REFUSAL_KINDS`], defined with the rules that make them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadInput {
    /// Undecodable or out-of-order packets, invalid UTF-8, WebSocket protocol violations.
    Protocol,
    /// Binary frames or packets.
    Binary,
    /// Messages over `maxPayload`.
    TooBig,
}

impl BadInput {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [BadInput; 3] = [BadInput::Protocol, BadInput::Binary, BadInput::TooBig];

    /// The metric label, stable across releases.
    pub fn label(self) -> &'static str {
        match self {
            BadInput::Protocol => "protocol",
            BadInput::Binary => "binary",
            BadInput::TooBig => "too_big",
        }
    }
}

/// Upper bounds of the store latency histogram, in seconds.
const STORE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    pub connected: AtomicU64,
    pub connections_total: AtomicU64,
    pub refused_connections: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub store_failures: AtomicU64,
    pub deliveries: AtomicU64,
    /// Writes the fan-out made: one per socket per pass that had messages for it.
    pub fanout_writes: AtomicU64,
    pub replayed_memory: AtomicU64,
    pub replayed_database: AtomicU64,
    pub catch_ups: AtomicU64,
    /// Replay reads that waited for a turn (the database busy, not down).
    pub replay_reads_queued: AtomicU64,
    /// Replay reads waiting for a turn now.
    pub replay_reads_waiting: AtomicU64,
    /// Replay reads that failed or timed out (their sockets were closed: the database down).
    pub replay_failures: AtomicU64,
    /// CONNECTs that recovered their session (same socket id, missed messages from the offset).
    pub recovered: AtomicU64,
    /// CONNECTs that asked to recover and could not (unknown or expired pid, unknown offset):
    /// the ordinary replay applied.
    pub not_recovered: AtomicU64,
    /// History pages served.
    pub history_pages: AtomicU64,
    /// Presence events queued for sockets that asked for them.
    pub presence_events: AtomicU64,
    /// Typing events queued for sockets that asked for presence.
    pub typing_events: AtomicU64,
    /// Cluster mode: batches published on the bus, and those that could not be.
    pub bus_published: AtomicU64,
    pub bus_publish_failures: AtomicU64,
    /// Cluster mode: batches received from other nodes, and messages on the bus ignored as not
    /// batches of this cluster.
    pub bus_received: AtomicU64,
    pub bus_rejected: AtomicU64,
    /// Cluster mode: rows read from the database because the bus did not bring them (in time).
    pub bus_gap_rows: AtomicU64,
    /// Cluster mode: times the subscription to the bus was made again.
    pub bus_reconnects: AtomicU64,
    /// Cluster mode: 1 while subscribed to the bus.
    pub bus_up: AtomicU64,
    /// Cluster mode: 1 while this node is the cluster's sequencer.
    pub sequencer: AtomicU64,
    /// Cluster mode: submissions handed to the sequencer node, those that came back unanswered
    /// (committed here instead), and those this node committed for others.
    pub forwarded: AtomicU64,
    pub forward_returned: AtomicU64,
    pub forwarded_in: AtomicU64,
    /// Cluster mode: this node's id, for `relay_node_info`.
    pub node: std::sync::OnceLock<String>,
    pub closed_slow: AtomicU64,
    /// Milliseconds since the delivery canary last came back (as of its last tick).
    pub canary_age_ms: AtomicU64,
    refused: [AtomicU64; REFUSAL_KINDS.len()],
    bad_input: [AtomicU64; BadInput::ALL.len()],
    store_buckets: [AtomicU64; STORE_BUCKETS.len()],
    store_count: AtomicU64,
    store_micros: AtomicU64,
}

impl Metrics {
    /// Counts one event the chat's rules refused.
    pub fn refused(&self, rejection: &Rejection) {
        self.refused[rejection.kind()].fetch_add(1, Relaxed);
    }

    /// Counts one protocol error.
    pub fn bad_input(&self, kind: BadInput) {
        self.bad_input[kind as usize].fetch_add(1, Relaxed);
    }

    /// One database write round (a group commit) that took `secs`.
    pub fn store_round(&self, secs: f64) {
        for (bound, bucket) in STORE_BUCKETS.iter().zip(&self.store_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.store_count.fetch_add(1, Relaxed);
        self.store_micros.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        one(
            "relay_connected_sockets",
            "gauge",
            "Open Engine.IO sessions (WebSocket and HTTP long-polling).",
            self.connected.load(Relaxed),
        );
        one(
            "relay_connections_total",
            "counter",
            "Engine.IO sessions opened (WebSocket and HTTP long-polling).",
            self.connections_total.load(Relaxed),
        );
        one(
            "relay_connections_refused_total",
            "counter",
            "Engine.IO handshakes refused (origin, limits, shutdown).",
            self.refused_connections.load(Relaxed),
        );
        one(
            "relay_messages_stored_total",
            "counter",
            "Messages committed to the database.",
            self.stored.load(Relaxed),
        );
        one(
            "relay_duplicates_total",
            "counter",
            "Messages acknowledged as retries of a stored clientOffset.",
            self.duplicates.load(Relaxed),
        );
        one(
            "relay_store_failures_total",
            "counter",
            "Messages not acknowledged because the database failed.",
            self.store_failures.load(Relaxed),
        );
        one(
            "relay_broadcast_deliveries_total",
            "counter",
            "Chat messages handed to sockets (into their output buffers), live and replayed.",
            self.deliveries.load(Relaxed),
        );
        one(
            "relay_fanout_writes_total",
            "counter",
            "Writes the live fan-out made to sockets, each carrying every message a pass had for one socket.",
            self.fanout_writes.load(Relaxed),
        );
        one(
            "relay_catch_ups_total",
            "counter",
            "Times a socket fell behind the live fan-out and was caught up from history.",
            self.catch_ups.load(Relaxed),
        );
        one(
            "relay_replay_reads_queued_total",
            "counter",
            "Replay reads that waited for a turn because the database was busy with others.",
            self.replay_reads_queued.load(Relaxed),
        );
        one(
            "relay_replay_reads_waiting",
            "gauge",
            "Replay reads waiting for a turn now.",
            self.replay_reads_waiting.load(Relaxed),
        );
        one(
            "relay_replay_failures_total",
            "counter",
            "Replay reads that failed or timed out; each closed its socket (1011, retry).",
            self.replay_failures.load(Relaxed),
        );
        one(
            "relay_history_pages_total",
            "counter",
            "Pages of older messages served to history requests.",
            self.history_pages.load(Relaxed),
        );
        one(
            "relay_presence_events_total",
            "counter",
            "Presence events (a room's state or its change) queued for sockets that asked.",
            self.presence_events.load(Relaxed),
        );
        one(
            "relay_typing_events_total",
            "counter",
            "Typing events queued for sockets that asked for presence.",
            self.typing_events.load(Relaxed),
        );
        one(
            "relay_sockets_closed_slow_total",
            "counter",
            "Sockets closed because they did not take our writes within pingTimeout.",
            self.closed_slow.load(Relaxed),
        );
        let _ = write!(
            out,
            "# HELP relay_canary_age_seconds Seconds since a probe last came back through the \
             sequencer and the fan-out.\n# TYPE relay_canary_age_seconds gauge\n\
             relay_canary_age_seconds {}\n",
            self.canary_age_ms.load(Relaxed) as f64 / 1e3
        );
        let _ = write!(
            out,
            "# HELP relay_replayed_messages_total Messages replayed to (re)connecting or lagging sockets.\n\
             # TYPE relay_replayed_messages_total counter\n\
             relay_replayed_messages_total{{source=\"memory\"}} {}\n\
             relay_replayed_messages_total{{source=\"database\"}} {}\n",
            self.replayed_memory.load(Relaxed),
            self.replayed_database.load(Relaxed)
        );
        let _ = write!(
            out,
            "# HELP relay_recoveries_total CONNECTs that asked for connection-state recovery, by result.\n\
             # TYPE relay_recoveries_total counter\n\
             relay_recoveries_total{{result=\"recovered\"}} {}\n\
             relay_recoveries_total{{result=\"not_recovered\"}} {}\n",
            self.recovered.load(Relaxed),
            self.not_recovered.load(Relaxed)
        );
        if let Some(node) = self.node.get() {
            let _ = write!(
                out,
                "# HELP relay_node_info This node of the cluster.\n# TYPE relay_node_info gauge\n\
                 relay_node_info{{node=\"{node}\"}} 1\n"
            );
            for (name, kind, help, value) in [
                (
                    "relay_bus_up",
                    "gauge",
                    "1 while subscribed to the cluster's bus.",
                    &self.bus_up,
                ),
                (
                    "relay_sequencer",
                    "gauge",
                    "1 while this node is the cluster's sequencer (it commits every node's messages).",
                    &self.sequencer,
                ),
                (
                    "relay_forwarded_total",
                    "counter",
                    "Messages handed to the sequencer node over the bus.",
                    &self.forwarded,
                ),
                (
                    "relay_forward_returned_total",
                    "counter",
                    "Forwarded messages that came back unanswered and were committed here.",
                    &self.forward_returned,
                ),
                (
                    "relay_forwarded_in_total",
                    "counter",
                    "Messages this node committed for other nodes, as the sequencer.",
                    &self.forwarded_in,
                ),
                (
                    "relay_bus_published_total",
                    "counter",
                    "Batches published on the bus.",
                    &self.bus_published,
                ),
                (
                    "relay_bus_publish_failures_total",
                    "counter",
                    "Batches the bus could not take (the other nodes read them from the database).",
                    &self.bus_publish_failures,
                ),
                (
                    "relay_bus_received_total",
                    "counter",
                    "Batches received from other nodes.",
                    &self.bus_received,
                ),
                (
                    "relay_bus_rejected_total",
                    "counter",
                    "Messages on the bus channel ignored as not batches of this cluster.",
                    &self.bus_rejected,
                ),
                (
                    "relay_bus_gap_rows_total",
                    "counter",
                    "Rows read from the database because the bus did not bring them in time.",
                    &self.bus_gap_rows,
                ),
                (
                    "relay_bus_reconnects_total",
                    "counter",
                    "Times the subscription to the bus was made again.",
                    &self.bus_reconnects,
                ),
            ] {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                    value.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP relay_bad_inputs_total Refused client input, by kind.\n# TYPE relay_bad_inputs_total counter\n");
        let labels = REFUSAL_KINDS
            .iter()
            .copied()
            .chain(BadInput::ALL.map(BadInput::label));
        for (label, n) in labels.zip(self.refused.iter().chain(&self.bad_input)) {
            let _ = writeln!(
                out,
                "relay_bad_inputs_total{{kind=\"{label}\"}} {}",
                n.load(Relaxed)
            );
        }
        out.push_str("# HELP relay_store_seconds Latency of one database write round (a group commit).\n# TYPE relay_store_seconds histogram\n");
        for (bound, n) in STORE_BUCKETS.iter().zip(&self.store_buckets) {
            let _ = writeln!(
                out,
                "relay_store_seconds_bucket{{le=\"{bound}\"}} {}",
                n.load(Relaxed)
            );
        }
        let count = self.store_count.load(Relaxed);
        let _ = write!(
            out,
            "relay_store_seconds_bucket{{le=\"+Inf\"}} {count}\nrelay_store_seconds_sum {}\nrelay_store_seconds_count {count}\n",
            self.store_micros.load(Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.stored.fetch_add(3, Relaxed);
        m.refused(&Rejection::OffsetMissing);
        m.store_round(0.0015);
        m.store_round(0.2);
        let text = m.render();
        assert!(text.contains(
            "# TYPE relay_messages_stored_total counter\nrelay_messages_stored_total 3\n"
        ));
        assert!(text.contains("relay_bad_inputs_total{kind=\"offset_missing\"} 1\n"));
        assert!(text.contains("relay_bad_inputs_total{kind=\"too_big\"} 0\n"));
        for (i, kind) in BadInput::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "ALL is in declaration order");
        }
        assert!(text.contains("relay_store_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("relay_store_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(text.contains("relay_store_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("relay_store_seconds_bucket{le=\"+Inf\"} 2\nrelay_store_seconds_sum 0.2015\nrelay_store_seconds_count 2\n"));
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
