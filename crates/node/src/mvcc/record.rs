//! The stored form of one change (a put or a tombstone) in the revision tree.
//!
//! A record is keyed by its revision, so the mod revision is not repeated inside. The format is
//! our own fixed layout rather than the protobuf `KeyValue`: it is read on every range, it must
//! never change with the generated code, and decoding it can fail cleanly on corrupt bytes.
//!
//! Layout: `kind u8 | create_revision i64 | version i64 | lease i64 | key_len u32 | key | value`,
//! integers big-endian; `kind` 0 = put, 1 = tombstone (whose value is empty).

use super::error::MvccError;

const HEADER: usize = 1 + 8 + 8 + 8 + 4;

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// True for a deletion.
    pub tombstone: bool,
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
    /// Main revision at which the key was created (0 for a tombstone).
    pub create_revision: i64,
    /// Version of the key after this change (0 for a tombstone).
    pub version: i64,
    /// Lease attached to the key (0 = none).
    pub lease: i64,
}

impl Record {
    /// Serializes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len() + self.value.len());
        out.push(u8::from(self.tombstone));
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out
    }

    /// Parses [`Record::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Record, MvccError> {
        let corrupt = || MvccError::Corrupt("short or malformed record".into());
        if bytes.len() < HEADER {
            return Err(corrupt());
        }
        let tombstone = match bytes[0] {
            0 => false,
            1 => true,
            _ => return Err(corrupt()),
        };
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(b)
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[25..29]);
        let key_len = u32::from_be_bytes(len) as usize;
        if bytes.len() < HEADER + key_len {
            return Err(corrupt());
        }
        Ok(Record {
            tombstone,
            create_revision: i64_at(1),
            version: i64_at(9),
            lease: i64_at(17),
            key: bytes[HEADER..HEADER + key_len].to_vec(),
            value: bytes[HEADER + key_len..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let put = Record {
            tombstone: false,
            key: b"key".to_vec(),
            value: b"value".to_vec(),
            create_revision: 3,
            version: 2,
            lease: 77,
        };
        let del = Record {
            tombstone: true,
            key: b"k".to_vec(),
            ..Record::default()
        };
        for rec in [put, del] {
            assert_eq!(Record::decode(&rec.encode()).ok(), Some(rec.clone()));
            let bytes = rec.encode();
            assert!(Record::decode(&bytes[..HEADER - 1]).is_err());
        }
        let mut bad = Record::default().encode();
        bad[0] = 9;
        assert!(Record::decode(&bad).is_err());
        let mut long_key = Record::default().encode();
        long_key[28] = 200;
        assert!(Record::decode(&long_key).is_err());
    }
}
