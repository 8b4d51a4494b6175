//! The snapshot format of the MVCC store and a small CRC-32.
//!
//! A snapshot is every entry of the store's sled tree (history since the compact revision,
//! leases, metadata) as length-prefixed pairs after a magic header, followed by a CRC-32
//! (IEEE) of everything before it, so a truncated or damaged transfer is refused before
//! anything is replaced.

use super::error::MvccError;

const MAGIC: &[u8; 8] = b"FLMVCC01";

/// A raw tree entry: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32(seed, data)`), table-driven/SIMD via
/// `crc32fast`: a full image of a large store is checksummed whenever a follower needs one.
pub fn crc32(seed: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(data);
    h.finalize()
}

/// The image at the start of `data`, without the zero bytes a transfer padded it with (the
/// Maintenance snapshot pads to a multiple of 512 for etcdctl). The image's end is where the
/// pairs stop and the next four bytes are the checksum of everything before them.
///
/// # Errors
/// [`MvccError::InvalidSnapshot`] if no such end is found.
pub fn trim_padding(data: &[u8]) -> Result<&[u8], MvccError> {
    let bad = |why: &str| MvccError::InvalidSnapshot(why.to_string());
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(bad("missing header"));
    }
    let mut at = MAGIC.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(MAGIC);
    loop {
        if let Some(sum) = data.get(at..at + 4)
            && u32::from_be_bytes(sum.try_into().unwrap_or([0; 4])) == crc.clone().finalize()
            && data[at + 4..].iter().all(|b| *b == 0)
        {
            return Ok(&data[..at + 4]);
        }
        // Skip one pair: key, then value.
        let start = at;
        for _ in 0..2 {
            let len = data
                .get(at..at + 4)
                .map(|l| u32::from_be_bytes(l.try_into().unwrap_or([0; 4])) as usize)
                .ok_or_else(|| bad("truncated entry"))?;
            at = at
                .checked_add(4 + len)
                .filter(|end| *end <= data.len())
                .ok_or_else(|| bad("truncated entry"))?;
        }
        crc.update(&data[start..at]);
    }
}

/// Serializes `(key, value)` pairs.
pub fn encode<I: IntoIterator<Item = Entry>>(entries: I) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&v);
    }
    let sum = crc32(0, &out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// Parses [`encode`]'s output.
pub fn decode(data: &[u8]) -> Result<Vec<Entry>, MvccError> {
    let bad = |why: &str| MvccError::InvalidSnapshot(why.to_string());
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(bad("missing header"));
    }
    let (body, sum) = data.split_at(data.len() - 4);
    let mut want = [0u8; 4];
    want.copy_from_slice(sum);
    if crc32(0, body) != u32::from_be_bytes(want) {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = &body[MAGIC.len()..];
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, MvccError> {
        if rest.len() < 4 {
            return Err(bad("truncated entry"));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&rest[..4]);
        let len = u32::from_be_bytes(len) as usize;
        if rest.len() < 4 + len {
            return Err(bad("truncated entry"));
        }
        let out = rest[4..4 + len].to_vec();
        *rest = &rest[4 + len..];
        Ok(out)
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        entries.push((k, v));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let entries = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), Vec::new())];
        let data = encode(entries.clone());
        assert_eq!(decode(&data).ok(), Some(entries));
        for cut in 0..data.len() {
            assert!(decode(&data[..cut]).is_err());
        }
        let mut flipped = data.clone();
        flipped[10] ^= 1;
        assert!(decode(&flipped).is_err());
    }

    #[test]
    fn padding_is_trimmed_back_to_the_image() {
        let data = encode(vec![
            (b"k".to_vec(), vec![0u8; 7]),
            (Vec::new(), Vec::new()),
        ]);
        for pad in [0usize, 1, 4, 511] {
            let mut padded = data.clone();
            padded.resize(data.len() + pad, 0);
            assert_eq!(trim_padding(&padded).expect("trim"), &data[..]);
        }
        assert!(trim_padding(&data[..data.len() - 1]).is_err());
        assert!(trim_padding(b"not an image").is_err());
    }
}
