//! Lease bookkeeping: which leases exist, their TTL, the keys attached to each, and when each
//! expires.
//!
//! The replicated part (id, granted TTL, attached keys) changes only through applied Raft
//! entries, so every member holds the same. Expiry is *not* replicated, as in etcd: keep-alives
//! go to the leader only, and the leader proposes a revoke when a lease runs out. So deadlines
//! live in memory, in milliseconds of whatever monotonic clock the node passes in. A lease
//! whose deadline is unknown (just granted, or loaded after a restart or a new leadership) gets
//! one the first time the node looks at the clock (`now + TTL`): the same grace etcd's lessor
//! gives leases when a member is promoted to leader, so no lease expires early because of a
//! restart or a leader change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// etcd's maximum lease TTL in seconds (`lease.MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The smallest TTL a lease is granted with, in seconds; shorter requests are raised to it as
/// etcd does (its minimum is derived from the election timeout; ours is fixed so every member
/// computes the same granted TTL).
pub const MIN_LEASE_TTL: i64 = 2;

/// One lease's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Keys currently attached.
    pub keys: BTreeSet<Vec<u8>>,
}

/// All leases, plus the in-memory deadlines.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    leases: BTreeMap<i64, Lease>,
    /// The lease attached to each key that has one.
    key_lease: HashMap<Vec<u8>, i64>,
    /// Expiry deadline per lease in the node's milliseconds; absent = not started yet.
    deadlines: HashMap<i64, u64>,
}

impl Leases {
    /// The lease with this id.
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Whether the lease exists.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Ids of all leases, ascending.
    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether there is no lease.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Adds a lease (its deadline starts when the node next looks at the clock).
    pub fn grant(&mut self, id: i64, ttl: i64) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.remove(&id);
    }

    /// Removes a lease; returns its attached keys.
    pub fn revoke(&mut self, id: i64) -> BTreeSet<Vec<u8>> {
        self.deadlines.remove(&id);
        let keys = self.leases.remove(&id).map(|l| l.keys).unwrap_or_default();
        for k in &keys {
            self.key_lease.remove(k);
        }
        keys
    }

    /// Moves `key` to lease `id` (0 = no lease), detaching it from its previous lease.
    pub fn attach(&mut self, key: &[u8], id: i64) {
        let old = self.key_lease.get(key).copied().unwrap_or(0);
        if old == id {
            return;
        }
        if old != 0 {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
            self.key_lease.remove(key);
        }
        if id != 0
            && let Some(l) = self.leases.get_mut(&id)
        {
            l.keys.insert(key.to_vec());
            self.key_lease.insert(key.to_vec(), id);
        }
    }

    /// Starts the deadline of every lease that has none, at `now_ms + TTL`.
    fn start_clocks(&mut self, now_ms: u64) {
        for (id, l) in &self.leases {
            self.deadlines
                .entry(*id)
                .or_insert_with(|| now_ms.saturating_add(ttl_ms(l.ttl)));
        }
    }

    /// Leases whose deadline has passed at `now_ms`, ascending. The node (leader) proposes a
    /// revoke for each.
    pub fn expired(&mut self, now_ms: u64) -> Vec<i64> {
        self.start_clocks(now_ms);
        self.leases
            .keys()
            .copied()
            .filter(|id| self.deadlines.get(id).is_some_and(|d| *d <= now_ms))
            .collect()
    }

    /// Renews a lease for a full TTL from `now_ms`; returns the TTL, or `None` if unknown.
    pub fn keep_alive(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        let ttl = self.leases.get(&id)?.ttl;
        self.deadlines
            .insert(id, now_ms.saturating_add(ttl_ms(ttl)));
        Some(ttl)
    }

    /// Remaining whole seconds of a lease at `now_ms` (rounded up, as etcd), or `None`.
    pub fn remaining(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        self.leases.get(&id)?;
        self.start_clocks(now_ms);
        let deadline = self.deadlines.get(&id).copied().unwrap_or(now_ms);
        let left_ms = deadline.saturating_sub(now_ms);
        Some(left_ms.div_ceil(1000) as i64)
    }

    /// Forgets every deadline, so every lease gets a full TTL again from the next clock
    /// reading. The node calls this when it becomes leader (etcd's `Promote`).
    pub fn reset_deadlines(&mut self) {
        self.deadlines.clear();
    }

    /// Takes over the deadlines of `old` for the leases that still exist (after a reload).
    pub fn keep_deadlines_from(&mut self, old: Leases) {
        self.deadlines = old
            .deadlines
            .into_iter()
            .filter(|(id, _)| self.leases.contains_key(id))
            .collect();
    }
}

fn ttl_ms(ttl: i64) -> u64 {
    (ttl.max(0) as u64).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_moves_keys_between_leases() {
        let mut l = Leases::default();
        l.grant(1, 10);
        l.grant(2, 10);
        l.attach(b"a", 1);
        l.attach(b"b", 1);
        l.attach(b"a", 2);
        assert_eq!(l.get(1).map(|x| x.keys.len()), Some(1));
        assert!(l.get(2).is_some_and(|x| x.keys.contains(b"a".as_slice())));
        l.attach(b"b", 0);
        assert!(l.get(1).is_some_and(|x| x.keys.is_empty()));
        let keys = l.revoke(2);
        assert_eq!(keys.len(), 1);
        // Attaching to a missing lease is a no-op, never a dangling reference.
        l.attach(b"c", 9);
        assert!(l.get(9).is_none());
    }

    #[test]
    fn deadlines_start_lazily_and_renew() {
        let mut l = Leases::default();
        l.grant(7, 5);
        assert!(l.expired(1_000).is_empty());
        assert_eq!(l.remaining(7, 1_000), Some(5));
        assert_eq!(l.remaining(7, 3_500), Some(3));
        assert_eq!(l.expired(6_000), vec![7]);
        assert_eq!(l.keep_alive(7, 6_000), Some(5));
        assert!(l.expired(10_999).is_empty());
        assert_eq!(l.expired(11_000), vec![7]);
        l.reset_deadlines();
        assert!(l.expired(11_000).is_empty());
        assert_eq!(l.keep_alive(8, 0), None);
    }
}
