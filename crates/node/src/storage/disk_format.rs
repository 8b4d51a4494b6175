//! The on-disk byte layout of the Raft store: keys and values, hand-rolled.
//!
//! Hand-rolled rather than protobuf because the layout is tiny, fixed, and must not change when
//! the wire protocol does; and rather than serde because every read must turn damaged bytes
//! into a [`StorageError::Io`] naming the key, never a panic.
//!
//! Keys: every key lives in one sled tree. Log entries are `b'e'` followed by the index as a
//! big-endian `u64`, so sled's byte order is log order and a range scan is a log range.
//! Metadata keys start with `b'm'`, so they never fall inside an entry range.
//!
//! Values start with a format byte ([`FORMAT`]) so a later layout can be told apart. Integers are
//! big-endian. An entry is `format, kind, term, index, data…`; the index is stored in the value
//! as well as in the key so a value found under the wrong key is detected.

use flotilla_raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta, StorageError};

use super::identity::MemberIdentity;

/// The layout version written in the first byte of every value.
pub const FORMAT: u8 = 1;

/// Key of the snapshot metadata (index, term, configuration).
pub const SNAPSHOT_META_KEY: &[u8] = b"m:snapshot_meta";
/// Present when the stored snapshot image is partial (member metadata only).
pub const SNAPSHOT_PARTIAL_KEY: &[u8] = b"m:snapshot_partial";
/// Key of the member identity.
pub const IDENTITY_KEY: &[u8] = b"m:identity";

/// Length of an entry value before its data.
const ENTRY_HEADER: usize = 1 + 1 + 8 + 8;

/// Encodes an entry value.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER + entry.data.len());
    encode_entry_into(&mut out, entry);
    out
}

/// Appends an entry value to `out` (the WAL encodes a whole Ready into one buffer).
pub fn encode_entry_into(out: &mut Vec<u8>, entry: &Entry) {
    out.reserve(ENTRY_HEADER + entry.data.len());
    out.push(FORMAT);
    out.push(match entry.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    out.extend_from_slice(&entry.term.to_be_bytes());
    out.extend_from_slice(&entry.index.to_be_bytes());
    out.extend_from_slice(&entry.data);
}

/// Decodes an entry value by the index it carries (a WAL record has no key).
pub fn decode_entry_value(bytes: &[u8]) -> Result<Entry, StorageError> {
    let index = bytes.get(10..18).map(be_u64).ok_or_else(|| {
        StorageError::Io(format!(
            "corrupt log entry: {} bytes, shorter than the {ENTRY_HEADER}-byte header",
            bytes.len()
        ))
    })?;
    decode_entry(index, bytes)
}

/// Decodes the entry stored under the key of `index`.
pub fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let (term, stored_index) = decode_entry_header(index, bytes)?;
    if stored_index != index {
        return Err(StorageError::Io(format!(
            "corrupt log entry at index {index}: the value says index {stored_index}"
        )));
    }
    let kind = match bytes[1] {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        other => {
            return Err(StorageError::Io(format!(
                "corrupt log entry at index {index}: unknown kind {other}"
            )));
        }
    };
    Ok(Entry {
        term,
        index,
        kind,
        data: bytes[ENTRY_HEADER..].to_vec(),
    })
}

/// The term and index of an entry value, without copying its data.
pub fn decode_entry_header(index: u64, bytes: &[u8]) -> Result<(u64, u64), StorageError> {
    if bytes.len() < ENTRY_HEADER {
        return Err(StorageError::Io(format!(
            "corrupt log entry at index {index}: {} bytes, shorter than the {ENTRY_HEADER}-byte header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT {
        return Err(StorageError::Io(format!(
            "corrupt log entry at index {index}: unknown format {}",
            bytes[0]
        )));
    }
    Ok((be_u64(&bytes[2..10]), be_u64(&bytes[10..18])))
}

/// Encodes the hard state.
pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(FORMAT);
    for v in [hs.term, hs.vote, hs.commit] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// Decodes the hard state.
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState, StorageError> {
    let mut r = Reader::new("hard state", bytes)?;
    let hs = HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
    };
    r.finish()?;
    Ok(hs)
}

/// Encodes snapshot metadata (the configuration included).
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    let cs = &meta.conf_state;
    let mut out = Vec::with_capacity(1 + 16 + 8 + 8 * (cs.voters.len() + cs.learners.len()));
    out.push(FORMAT);
    out.extend_from_slice(&meta.index.to_be_bytes());
    out.extend_from_slice(&meta.term.to_be_bytes());
    for set in [&cs.voters, &cs.learners] {
        out.extend_from_slice(&(set.len() as u32).to_be_bytes());
        for id in set {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

/// Decodes snapshot metadata.
pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<SnapshotMeta, StorageError> {
    let mut r = Reader::new("snapshot metadata", bytes)?;
    let index = r.u64()?;
    let term = r.u64()?;
    let mut conf_state = ConfState::default();
    for set in [&mut conf_state.voters, &mut conf_state.learners] {
        let n = r.u32()?;
        for _ in 0..n {
            set.insert(r.u64()?);
        }
    }
    r.finish()?;
    Ok(SnapshotMeta {
        index,
        term,
        conf_state,
    })
}

/// Encodes the member identity.
pub fn encode_identity(id: &MemberIdentity) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 + 4 + id.name.len());
    out.push(FORMAT);
    out.extend_from_slice(&id.cluster_id.to_be_bytes());
    out.extend_from_slice(&id.member_id.to_be_bytes());
    out.extend_from_slice(&(id.name.len() as u32).to_be_bytes());
    out.extend_from_slice(id.name.as_bytes());
    out
}

/// Decodes the member identity.
pub fn decode_identity(bytes: &[u8]) -> Result<MemberIdentity, StorageError> {
    let mut r = Reader::new("member identity", bytes)?;
    let cluster_id = r.u64()?;
    let member_id = r.u64()?;
    let len = r.u32()? as usize;
    let name = r.bytes(len)?;
    let name = String::from_utf8(name.to_vec())
        .map_err(|_| corrupt("member identity", bytes, "name is not UTF-8"))?;
    r.finish()?;
    Ok(MemberIdentity {
        cluster_id,
        member_id,
        name,
    })
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn corrupt(what: &str, bytes: &[u8], why: &str) -> StorageError {
    StorageError::Io(format!("corrupt {what} ({} bytes): {why}", bytes.len()))
}

/// A bounds-checked cursor over a metadata value.
struct Reader<'a> {
    what: &'static str,
    all: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the format byte and positions after it.
    fn new(what: &'static str, bytes: &'a [u8]) -> Result<Self, StorageError> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => Ok(Reader {
                what,
                all: bytes,
                rest,
            }),
            Some((other, _)) => Err(corrupt(what, bytes, &format!("unknown format {other}"))),
            None => Err(corrupt(what, bytes, "empty value")),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.rest.len() < n {
            return Err(corrupt(self.what, self.all, "truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, StorageError> {
        self.bytes(8).map(be_u64)
    }

    fn u32(&mut self) -> Result<u32, StorageError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn finish(self) -> Result<(), StorageError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.what, self.all, "trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let e = Entry {
            term: 3,
            index: 258,
            kind: EntryKind::ConfChange,
            data: vec![1, 2, 3],
        };
        assert_eq!(decode_entry(258, &encode_entry(&e)), Ok(e));
    }

    #[test]
    fn metadata_round_trips() {
        let hs = HardState {
            term: 1,
            vote: u64::MAX,
            commit: 7,
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)), Ok(hs));
        let meta = SnapshotMeta {
            index: 9,
            term: 4,
            conf_state: ConfState {
                voters: [1, 2, 3].into(),
                learners: [u64::MAX].into(),
            },
        };
        assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta)), Ok(meta));
        let id = MemberIdentity {
            cluster_id: 0xdead_beef,
            member_id: 42,
            name: "flotilla-0".into(),
        };
        assert_eq!(decode_identity(&encode_identity(&id)), Ok(id));
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let e = Entry {
            term: 3,
            index: 5,
            kind: EntryKind::Normal,
            data: vec![9; 4],
        };
        let good = encode_entry(&e);
        for len in 0..good.len() {
            let r = decode_entry(5, &good[..len]);
            if len < ENTRY_HEADER {
                assert!(matches!(r, Err(StorageError::Io(_))), "len {len}: {r:?}");
            }
        }
        let mut bad_kind = good.clone();
        bad_kind[1] = 7;
        assert!(
            matches!(decode_entry(5, &bad_kind), Err(StorageError::Io(m)) if m.contains("kind"))
        );
        assert!(matches!(decode_entry(6, &good), Err(StorageError::Io(m)) if m.contains("index")));
        let mut bad_format = good;
        bad_format[0] = 99;
        assert!(matches!(
            decode_entry(5, &bad_format),
            Err(StorageError::Io(_))
        ));

        let meta = encode_snapshot_meta(&SnapshotMeta::default());
        for len in 0..meta.len() {
            assert!(matches!(
                decode_snapshot_meta(&meta[..len]),
                Err(StorageError::Io(_))
            ));
        }
        let mut long = meta.clone();
        long.push(0);
        assert!(
            matches!(decode_snapshot_meta(&long), Err(StorageError::Io(m)) if m.contains("trailing"))
        );
        // A voter count far larger than the value must fail, not allocate or panic.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_snapshot_meta(&huge),
            Err(StorageError::Io(_))
        ));
        assert!(matches!(
            decode_hard_state(&[FORMAT, 1, 2]),
            Err(StorageError::Io(_))
        ));
        let mut bad_name = encode_identity(&MemberIdentity {
            cluster_id: 1,
            member_id: 2,
            name: "ab".into(),
        });
        let n = bad_name.len();
        bad_name[n - 1] = 0xff;
        assert!(
            matches!(decode_identity(&bad_name), Err(StorageError::Io(m)) if m.contains("UTF-8"))
        );
    }
}
