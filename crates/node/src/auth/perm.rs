//! Key-range permission matching, as etcd's `range_perm_cache.go`: a user may touch a range when
//! the union of its roles' permission intervals of that kind covers the whole range — two
//! permissions `[a, c)` and `[c, e)` together allow a read of `[b, d)`.
//!
//! Intervals are half-open; a permission or request whose `range_end` is empty is the single
//! key, and one whose `range_end` is `"\0"` runs to the end of the keyspace (etcdctl's
//! `--from-key`).

use flotilla_proto::authpb::{Permission, permission::Type};

/// The end of an interval: a key (exclusive) or the end of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinity,
}

/// A half-open key interval `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: End,
}

impl Interval {
    fn new(key: &[u8], range_end: &[u8]) -> Interval {
        let end = match range_end {
            [] => {
                // The single key `key` is `[key, key + "\0")`.
                let mut e = key.to_vec();
                e.push(0);
                End::Key(e)
            }
            [0] => End::Infinity,
            e => End::Key(e.to_vec()),
        };
        Interval {
            start: key.to_vec(),
            end,
        }
    }
}

/// Whether a permission of type `have` allows an operation needing `want` (READ or WRITE).
fn grants(have: Type, want: Type) -> bool {
    have == Type::Readwrite || have == want
}

/// Whether `perms` together cover `[key, range_end)` for operations of kind `want`.
pub fn covered<'a>(
    perms: impl IntoIterator<Item = &'a Permission>,
    want: Type,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let target = Interval::new(key, range_end);
    let mut ivs: Vec<Interval> = perms
        .into_iter()
        .filter(|p| grants(p.perm_type(), want))
        .map(|p| Interval::new(&p.key, &p.range_end))
        .collect();
    ivs.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep from the target's start: each interval that begins at or before the covered point
    // extends it; a gap before the target's end means "not covered".
    let mut reach = target.start.clone();
    for iv in ivs {
        if iv.start > reach {
            break;
        }
        match iv.end {
            End::Infinity => return true,
            End::Key(e) => {
                if e > reach {
                    reach = e;
                }
            }
        }
        if let End::Key(t) = &target.end
            && reach >= *t
        {
            return true;
        }
    }
    match &target.end {
        End::Key(t) => reach >= *t,
        End::Infinity => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: Type, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    #[test]
    fn single_key_permission_allows_only_that_key() {
        let p = [perm(Type::Read, "foo", "")];
        assert!(covered(&p, Type::Read, b"foo", b""));
        assert!(!covered(&p, Type::Read, b"foo0", b""));
        assert!(!covered(&p, Type::Read, b"foo", b"fop"));
        assert!(!covered(&p, Type::Write, b"foo", b""));
    }

    #[test]
    fn prefix_permission_covers_keys_and_subranges() {
        let p = [perm(Type::Readwrite, "foo", "fop")];
        assert!(covered(&p, Type::Read, b"foo", b""));
        assert!(covered(&p, Type::Write, b"foo/bar", b""));
        assert!(covered(&p, Type::Read, b"foo", b"fop"));
        assert!(covered(&p, Type::Read, b"foo/a", b"foo/b"));
        assert!(!covered(&p, Type::Read, b"foo", b"foq"));
        assert!(!covered(&p, Type::Read, b"fo", b""));
    }

    #[test]
    fn adjacent_permissions_join() {
        let p = [perm(Type::Read, "c", "e"), perm(Type::Read, "a", "c")];
        assert!(covered(&p, Type::Read, b"b", b"d"));
        assert!(!covered(&p, Type::Read, b"b", b"f"));
        let gap = [perm(Type::Read, "a", "b"), perm(Type::Read, "c", "e")];
        assert!(!covered(&gap, Type::Read, b"a", b"d"));
    }

    #[test]
    fn from_key_permission_is_open_ended() {
        let p = [perm(Type::Write, "m", "\0")];
        assert!(covered(&p, Type::Write, b"zzz", b""));
        assert!(covered(&p, Type::Write, b"m", b"\0"));
        assert!(!covered(&p, Type::Write, b"a", b""));
        let bounded = [perm(Type::Write, "m", "z")];
        assert!(!covered(&bounded, Type::Write, b"m", b"\0"));
    }
}
