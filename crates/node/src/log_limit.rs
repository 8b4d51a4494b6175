//! [`LogLimit`]: at most one log line per key per interval, counting what it held back.
//!
//! An outage is when the log matters most, and also when the same event repeats fastest: a
//! member cut off from the others campaigns every election timeout, and a dead peer fails
//! every reconnect. Logging each one would bury the first line that explains the outage; logging
//! none would hide it. So the first occurrence is logged at once, repeats within the interval
//! are only counted, and the next line that gets through says how many were held back.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-key rate limit for log lines.
#[derive(Debug)]
pub struct LogLimit<K> {
    every: Duration,
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Eq + Hash> LogLimit<K> {
    /// At most one line per key per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimit {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether a line for `key` may be logged at `now`: `Some(held back since the last one)`,
    /// or `None` (counted, not logged).
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = std::mem::take(held);
                *at = now;
                Some(n)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_passes_repeats_are_counted_until_the_interval_ends() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(10));
        assert_eq!(l.allow("a", t0), Some(0));
        assert_eq!(l.allow("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            l.allow("b", t0 + Duration::from_secs(2)),
            Some(0),
            "keys are separate"
        );
        assert_eq!(l.allow("a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(l.allow("a", t0 + Duration::from_secs(12)), None);
    }
}
