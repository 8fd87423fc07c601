//! The sequencer lease: which node of a cluster commits every node's messages
//! ([`super::forward`]).
//!
//! A Redis key, `<prefix>:sequencer` (prefix: see [`super`]), holds the id of the node that has
//! the lease, with a time to live of [`LEASE_TTL`]. Every node runs one script every
//! [`LEASE_RENEW`]: take the key when it is free, extend it when it is ours, and read whose it
//! is. The result sets this node's [`Role`] for its writer: the sequencer, a node forwarding to
//! it, or (bus down, Redis not answering, shutting down) a node committing its own messages
//! under the per-batch commit lock.
//!
//! The lease only decides who does the work, never correctness: two nodes that both believe
//! they hold it still commit one at a time under the commit lock. A node that is going away gives
//! the lease up first, so the next node takes over within one renewal. So does a node whose own
//! commits fail ([`DbHealth`]): the others forward to the sequencer, so one that cannot reach the
//! database would stop the whole cluster; it takes part again once the database answers it.
//!
//! Must not: be needed for order or dedupe.

use super::{BusHealth, DbHealth};
use crate::metrics::Metrics;
use crate::store::mysql::MysqlStore;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{timeout, Duration};
use tokio_util::sync::CancellationToken;

/// How long the lease lasts without renewal (a killed sequencer is replaced within this).
pub const LEASE_TTL: Duration = Duration::from_millis(2000);
/// How often every node renews or reads the lease.
pub const LEASE_RENEW: Duration = Duration::from_millis(500);
/// How often a node whose bus is down looks whether it is up again.
const BUS_DOWN_CHECK: Duration = Duration::from_millis(50);

/// Take the lease if free, extend it if ours; return the holder.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return holder
";

/// Give the lease up if it is ours.
const RESIGN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Give the lease up if it is ours; return the holder (another node), or nil.
const STEP_DOWN: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return false
end
return holder
";

/// Where this node commits its sockets' messages, as the lease decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Commit here; each group commit takes the commit lock and lets go of it.
    Commit,
    /// This node is the cluster's sequencer: commit here, and keep the commit lock from one group
    /// commit to the next.
    Sequencer,
    /// Another node is the sequencer: forward submissions to it ([`super::forward`]), so that the
    /// cluster's messages meet in one group commit.
    Forward,
}

impl Role {
    /// The role in a word, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Commit => "commit",
            Role::Sequencer => "sequencer",
            Role::Forward => "forward",
        }
    }
}

/// Logs a turn for the better (`good`: info) or the worse (warn) of what this node can do.
fn log_turn(node: &str, good: bool, better: &str, worse: &str) {
    if good {
        tracing::info!(node, "{better}");
    } else {
        tracing::warn!(node, "{worse}");
    }
}

/// The Redis key of the lease.
pub fn key(cluster: &str) -> String {
    format!("{cluster}:sequencer")
}

/// What the lease says now: this node's role, and the sequencer's node id when another node is
/// the sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub role: Role,
    pub sequencer: Option<String>,
}

impl Lease {
    fn alone() -> Lease {
        Lease {
            role: Role::Commit,
            sequencer: None,
        }
    }
}

/// Keeps `lease` (and `role`, the writer's view of it) up to date until `stop`; from `resign`
/// on, this node gives the lease up and commits its own messages. Reads from `health` whether
/// this node is subscribed (if not, no node can forward to it, so it commits alone), and tells
/// it whether Redis answered in time (a Redis that hangs keeps the subscription). While `db`
/// says this node's commits fail, it holds no lease (it forwards to whoever holds it) and pings
/// `database` at each renewal until it answers.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: redis::Client,
    key: String,
    node: String,
    metrics: Arc<Metrics>,
    health: Arc<BusHealth>,
    (database, db): (MysqlStore, Arc<DbHealth>),
    role: watch::Sender<Role>,
    lease: watch::Sender<Lease>,
    resign: CancellationToken,
    stop: CancellationToken,
) {
    let claim = redis::Script::new(CLAIM);
    let step_down = redis::Script::new(STEP_DOWN);
    let mut stepped_down = false;
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let ttl = LEASE_TTL.as_millis() as u64;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = resign.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        // Until the bus is up, look often: forwarding starts as soon as it can.
        wait = if health.up() {
            LEASE_RENEW
        } else {
            BUS_DOWN_CHECK
        };
        if db.failing() && matches!(timeout(LEASE_RENEW, database.ping()).await, Ok(Ok(()))) {
            db.done_pinging();
        }
        let failing = db.failing();
        if failing != stepped_down {
            stepped_down = failing;
            log_turn(
                &node,
                !failing,
                "the database answers this node again: it takes part in the lease",
                "this node's commits fail: it holds no sequencer lease until the database answers it",
            );
        }
        let now = if !health.receiving() {
            Lease::alone()
        } else {
            let held = timeout(LEASE_RENEW, async {
                if conn.is_none() {
                    conn = Some(client.get_multiplexed_async_connection().await?);
                }
                let c = conn.as_mut().expect("connected above");
                if failing {
                    // Give it up if ours; follow whoever holds it (none: commit alone).
                    return step_down
                        .key(&key)
                        .arg(&node)
                        .invoke_async::<Option<String>>(c)
                        .await;
                }
                claim
                    .key(&key)
                    .arg(&node)
                    .arg(ttl)
                    .invoke_async::<String>(c)
                    .await
                    .map(Some)
            })
            .await;
            let answered = matches!(held, Ok(Ok(_)));
            if health.set_answering(answered, &metrics) {
                log_turn(
                    &node,
                    answered,
                    "bus up again: Redis answers",
                    "bus down: Redis did not answer the lease call in time",
                );
            }
            match held {
                Ok(Ok(None)) => Lease::alone(),
                Ok(Ok(Some(holder))) if holder == node => Lease {
                    role: Role::Sequencer,
                    sequencer: None,
                },
                Ok(Ok(Some(holder))) => Lease {
                    role: Role::Forward,
                    sequencer: Some(holder),
                },
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot read the sequencer lease");
                    conn = None;
                    Lease::alone()
                }
                Err(_) => {
                    tracing::debug!("reading the sequencer lease timed out");
                    conn = None;
                    Lease::alone()
                }
            }
        };
        set(&role, &lease, &metrics, &node, now);
    }
    set(&role, &lease, &metrics, &node, Lease::alone());
    // Give it up, so that the next node need not wait for it to expire.
    let resigned = timeout(Duration::from_secs(1), async {
        let mut c = match conn {
            Some(c) => c,
            None => client.get_multiplexed_async_connection().await?,
        };
        redis::Script::new(RESIGN)
            .key(&key)
            .arg(&node)
            .invoke_async::<i64>(&mut c)
            .await
    })
    .await;
    if let Ok(Ok(1)) = resigned {
        tracing::info!(node, "gave up the sequencer lease");
    }
}

fn set(
    role: &watch::Sender<Role>,
    lease: &watch::Sender<Lease>,
    metrics: &Metrics,
    node: &str,
    now: Lease,
) {
    let was = lease.borrow().role;
    if was != now.role {
        tracing::info!(
            node,
            role = now.role.as_str(),
            sequencer = now.sequencer.as_deref().unwrap_or("-"),
            "cluster role"
        );
    }
    metrics
        .sequencer
        .store(u64::from(now.role == Role::Sequencer), Ordering::Relaxed);
    role.send_if_modified(|r| std::mem::replace(r, now.role) != now.role);
    lease.send_if_modified(|l| {
        let changed = *l != now;
        *l = now;
        changed
    });
}
