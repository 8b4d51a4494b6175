//! The simulator's own pseudo-random generator.
//!
//! Every decision of a run comes from here, seeded by the one `u64` seed: no thread RNG, no
//! clock. SplitMix64 is tiny, fast and passes BigCrush, which is plenty for choosing faults; it
//! also makes `fork` cheap, so the network, the faults and the workload each draw from their own
//! stream and changing how often one of them draws does not reshuffle the others.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is decided by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed ^ 0x5eed_f107_111a_0000,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// An independent generator derived from this one (for a separate stream of decisions).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    /// A number in `0..n` (`0` when `n == 0`), without modulo bias worth caring about.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `ppm` per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize])
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing function, also used to fold trace events and
/// state-machine hash chains.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds `value` into the running hash `acc`.
pub fn fold(acc: u64, value: u64) -> u64 {
    mix64(acc ^ value.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(value)
}

/// A hash of a byte string (for comparing entry payloads cheaply).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut acc = bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        acc = fold(acc, u64::from_le_bytes(word));
    }
    acc
}
