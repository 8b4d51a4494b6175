//! The backend quota (`--quota-backend-bytes`): etcd's `v3rpc/quota.go` and
//! `etcdserver/quota.go`.
//!
//! Before a Put, a Txn or a LeaseGrant is proposed, the member that received it checks whether
//! its database size plus the request's cost (etcd's estimate: key + value + 256 bytes per put,
//! 64 per lease) stays below the quota. If not, it proposes `ACTIVATE NOSPACE` for itself and
//! answers `etcdserver: mvcc: database space exceeded` without proposing the request. From the
//! moment the alarm entry applies, every member refuses such writes in its apply path
//! (`mvcc/alarm.rs`) until `etcdctl alarm disarm` clears it.
//!
//! The check uses a local, non-replicated number (this member's file size), so it happens only
//! here, before replication, exactly where etcd does it; the apply path decides from the
//! replicated alarms alone. The size is read from disk at most every [`SIZE_TTL`]: sled's
//! `size_on_disk` lists its blob directory, too costly for every request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::{AlarmRequest, AlarmType, PutRequest, TxnRequest};

use crate::member::handle::NodeHandle;
use crate::mvcc::MvccError;
use crate::mvcc::alarm::{LEASE_OVERHEAD, put_cost, txn_cost};

/// etcd's default quota when the flag is 0: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// Above this etcd warns that the quota exceeds its recommended maximum: 8 GiB.
pub const MAX_QUOTA_BYTES: i64 = 8 * 1024 * 1024 * 1024;

/// How long a measured database size is reused.
pub const SIZE_TTL: Duration = Duration::from_millis(100);

/// A request the quota applies to, with etcd's cost.
pub enum Costed<'a> {
    /// A Put.
    Put(&'a PutRequest),
    /// A Txn (read-only ones too: etcd 3.4 checks every Txn).
    Txn(&'a TxnRequest),
    /// A LeaseGrant.
    LeaseGrant,
}

impl Costed<'_> {
    fn cost(&self) -> i64 {
        match self {
            Costed::Put(p) => put_cost(p) as i64,
            Costed::Txn(t) => txn_cost(t) as i64,
            Costed::LeaseGrant => LEASE_OVERHEAD as i64,
        }
    }
}

/// The quota of one member.
#[derive(Debug)]
pub struct BackendQuota {
    /// The limit in bytes; `None` when disabled (a negative flag, as etcd).
    max: Option<i64>,
    /// The last measured size and when it was measured.
    size: Mutex<Option<(Instant, i64)>>,
}

impl BackendQuota {
    /// The quota etcd derives from `--quota-backend-bytes`: 0 means the 2 GiB default, a
    /// negative value disables it, and a value above 8 GiB is used but warned about.
    pub fn new(flag: i64) -> Self {
        let max = match flag {
            f if f < 0 => {
                tracing::warn!("backend quota disabled");
                None
            }
            0 => Some(DEFAULT_QUOTA_BYTES),
            f => {
                if f > MAX_QUOTA_BYTES {
                    tracing::warn!(
                        quota = f,
                        max = MAX_QUOTA_BYTES,
                        "backend quota exceeds maximum recommended quota"
                    );
                }
                Some(f)
            }
        };
        BackendQuota {
            max,
            size: Mutex::new(None),
        }
    }

    /// The limit in bytes (`None`: no quota).
    pub fn limit(&self) -> Option<i64> {
        self.max
    }

    /// This member's database size, measured at most every [`SIZE_TTL`].
    fn db_size(&self, node: &NodeHandle) -> i64 {
        let mut cached = match self.size.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((at, size)) = *cached
            && at.elapsed() < SIZE_TTL
        {
            return size;
        }
        let size = node.sm.read().map(|sm| sm.db_size()).unwrap_or(0);
        *cached = Some((Instant::now(), size));
        size
    }

    /// Whether `size + cost` stays under the quota (etcd's `backendQuota.Available`).
    pub fn available(&self, size: i64, cost: i64) -> bool {
        self.max.is_none_or(|max| size.saturating_add(cost) < max)
    }
}

/// etcd's `quotaAlarmer.check`: refuses `req` with etcd's NOSPACE error, after proposing the
/// alarm for this member, when it would take the database past the quota.
pub async fn check(node: &NodeHandle, req: Costed<'_>) -> Result<(), tonic::Status> {
    let quota = &node.quota;
    if quota.limit().is_none() || quota.available(quota.db_size(node), req.cost()) {
        return Ok(());
    }
    let alarm = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: node.id,
        alarm: AlarmType::Nospace as i32,
    };
    // As etcd, the answer is NOSPACE whether or not the alarm could be replicated.
    if let Err(e) = node.write(alarm).await {
        tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
    }
    Err(MvccError::NoSpace.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_follows_etcd() {
        assert_eq!(BackendQuota::new(0).limit(), Some(DEFAULT_QUOTA_BYTES));
        assert_eq!(BackendQuota::new(-1).limit(), None);
        assert_eq!(
            BackendQuota::new(2 * MAX_QUOTA_BYTES).limit(),
            Some(2 * MAX_QUOTA_BYTES)
        );
        let q = BackendQuota::new(1000);
        assert!(q.available(900, 99));
        assert!(!q.available(900, 100), "etcd wants size + cost < quota");
        assert!(BackendQuota::new(-1).available(i64::MAX, i64::MAX));
    }

    #[test]
    fn costs_are_etcds() {
        let p = PutRequest {
            key: b"abc".to_vec(),
            value: vec![0; 10],
            ..Default::default()
        };
        assert_eq!(Costed::Put(&p).cost(), 256 + 13);
        assert_eq!(Costed::LeaseGrant.cost(), 64);
        assert_eq!(Costed::Txn(&TxnRequest::default()).cost(), 0);
    }
}
