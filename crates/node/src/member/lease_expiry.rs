//! Lease expiry, driven by the leader.
//!
//! Lease deadlines are not replicated (as in etcd): keep-alives reach the leader only, so only
//! the leader's clock decides when a lease runs out. This task watches the member's role; while
//! it leads, it asks the store which leases are past their deadline and proposes a
//! `LeaseRevoke` for each through Raft, so the attached keys disappear on every member in the
//! same revision. On becoming leader it first forgets every deadline, so each lease gets a full
//! TTL from the new leader's clock rather than expiring at once because the old leader's
//! keep-alives were invisible here (etcd's lessor `Promote`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flotilla_proto::etcdserverpb::LeaseRevokeRequest;

use super::handle::NodeHandle;

/// How often the leader looks for expired leases (etcd's lessor checks every 500 ms).
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Milliseconds of the process's monotonic clock: the time base of every lease deadline.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Starts the expiry task; it runs for the life of the process. Must be called inside a Tokio
/// runtime.
pub fn spawn(node: NodeHandle) {
    tokio::spawn(run(node));
}

async fn run(node: NodeHandle) {
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let mut was_leader = false;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leads = node.status.borrow().is_leader();
        let expired = {
            let Ok(mut sm) = node.sm.write() else {
                return;
            };
            if leads {
                sm.expired_leases(now_ms(), !was_leader)
            } else {
                Vec::new()
            }
        };
        was_leader = leads;
        for id in expired {
            let fresh = in_flight.lock().map(|mut s| s.insert(id)).unwrap_or(false);
            if !fresh {
                continue;
            }
            let node = node.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                match node.write(LeaseRevokeRequest { id }).await {
                    Ok(_) => tracing::info!(lease = format!("{id:x}"), "lease expired"),
                    // Retried on a later tick if the lease still exists and we still lead.
                    Err(e) => tracing::warn!(lease = format!("{id:x}"), error = %e,
                        "revoking an expired lease failed"),
                }
                if let Ok(mut s) = in_flight.lock() {
                    s.remove(&id);
                }
            });
        }
    }
}
