//! Store revisions and their on-disk encoding.
//!
//! A revision is etcd's `(main, sub)` pair: `main` is the store revision a write transaction
//! creates, `sub` numbers the changes inside that transaction. Revisions are stored big-endian
//! so that sled's lexicographic key order is revision order, which makes "every change since
//! revision R" (watch replay, snapshots, index rebuild) a plain ordered range scan.

/// One change's position in the store history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision of the write transaction.
    pub main: i64,
    /// The index of the change inside that transaction.
    pub sub: i64,
}

/// Length of an encoded revision.
pub const REVISION_LEN: usize = 16;

impl Revision {
    /// A revision from its parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian encoding; order-preserving for non-negative revisions.
    pub fn to_bytes(self) -> [u8; REVISION_LEN] {
        let mut out = [0u8; REVISION_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Decodes [`Revision::to_bytes`]; `None` if the slice has the wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != REVISION_LEN {
            return None;
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&bytes[..8]);
        sub.copy_from_slice(&bytes[8..]);
        Some(Revision {
            main: i64::from_be_bytes(main),
            sub: i64::from_be_bytes(sub),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_preserves_order() {
        let revs = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 3),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
        for r in revs {
            assert_eq!(Revision::from_bytes(&r.to_bytes()), Some(r));
        }
        assert_eq!(Revision::from_bytes(&[1, 2, 3]), None);
    }
}
