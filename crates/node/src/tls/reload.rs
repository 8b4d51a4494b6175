//! Certificate rotation without a restart: poll the files' contents, rebuild, swap.
//!
//! Kubernetes updates a Secret volume by writing a new timestamped directory and atomically
//! re-pointing the `..data` symlink; the file paths the member was given never change, their
//! mtime is that of the symlink, and an inotify watch on the old target sees a deletion. So
//! the contents are read again every interval (they are a few kilobytes) and compared with
//! what was last tried. A changed set is rebuilt as a whole — certificate, key and CA
//! together, because a rotation changes them together — and swapped into its
//! [`Reloadable`] holder, which every new connection reads. Connections already open keep the
//! configuration they were made with.
//!
//! A set that does not build (a key written before its certificate, a truncated file) is
//! refused with a WARN and the previous configuration keeps serving; it is not retried until
//! the contents change again, and warnings are rate-limited, so a broken Secret cannot flood
//! the log. A successful reload is logged at INFO.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::TlsError;
use crate::log_limit::LogLimit;

/// At most one "refused" line per file set per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A value that is replaced whole while readers keep what they took.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    /// A holder starting with `value`.
    pub fn new(value: T) -> Self {
        Reloadable {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A panic while swapping cannot leave a half-written Arc: the old one is fine.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value for every later [`load`](Self::load).
    pub fn store(&self, value: T) {
        let value = Arc::new(value);
        match self.current.write() {
            Ok(mut g) => *g = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// Reads every file, in order.
pub fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|cause| TlsError::Read {
                path: p.clone(),
                cause,
            })
        })
        .collect()
}

type Apply = Box<dyn Fn(&[Vec<u8>]) -> Result<(), TlsError> + Send + Sync>;

/// One set of files and what to do with new contents.
pub struct Source {
    what: &'static str,
    files: Vec<PathBuf>,
    /// The contents last tried (loaded or refused).
    tried: Mutex<Vec<Vec<u8>>>,
    apply: Apply,
}

impl Source {
    /// A source whose current contents (`loaded`) are already in use.
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        loaded: Vec<Vec<u8>>,
        apply: impl Fn(&[Vec<u8>]) -> Result<(), TlsError> + Send + Sync + 'static,
    ) -> Source {
        Source {
            what,
            files,
            tried: Mutex::new(loaded),
            apply: Box::new(apply),
        }
    }
}

/// What one poll of a source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// The contents are what was last tried.
    Unchanged,
    /// New contents were loaded.
    Reloaded,
    /// New contents (or unreadable files) were refused; the old configuration stays.
    Refused,
}

/// Every watched source of a member.
#[derive(Default)]
pub struct Watcher {
    sources: Vec<Source>,
    log: Mutex<Option<LogLimit<&'static str>>>,
}

impl Watcher {
    /// Watches one more source.
    pub fn add(&mut self, s: Source) {
        self.sources.push(s);
    }

    /// Whether there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Reads every source once and applies what changed.
    pub fn poll(&self) -> Vec<Polled> {
        self.sources.iter().map(|s| self.poll_one(s)).collect()
    }

    fn warn(&self, what: &'static str, error: &TlsError) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let log = log.get_or_insert_with(|| LogLimit::new(WARN_EVERY));
        if let Some(held) = log.allow(what, Instant::now()) {
            tracing::warn!(files = what, %error, refusals_not_logged = held,
                "new TLS files refused; still serving the previous ones");
        }
    }

    fn poll_one(&self, s: &Source) -> Polled {
        let contents = match read_all(&s.files) {
            Ok(c) => c,
            Err(e) => {
                // Mid-swap, or deleted: keep serving, and look again next time.
                self.warn(s.what, &e);
                return Polled::Refused;
            }
        };
        let Ok(mut tried) = s.tried.lock() else {
            return Polled::Unchanged;
        };
        if *tried == contents {
            return Polled::Unchanged;
        }
        let r = (s.apply)(&contents);
        *tried = contents;
        match r {
            Ok(()) => {
                tracing::info!(files = s.what, paths = ?s.files, "TLS files changed: reloaded");
                Polled::Reloaded
            }
            Err(e) => {
                self.warn(s.what, &e);
                Polled::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::config::{ClientAuth, ServerSpec};
    use crate::tls::pki::{Ca, Usage};

    #[test]
    fn changed_contents_swap_in_and_invalid_ones_keep_the_old_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("reload CA").expect("ca");
        let first = ca
            .issue("first", &["127.0.0.1"], Usage::Server)
            .expect("first");
        let second = ca
            .issue("second", &["127.0.0.1"], Usage::Server)
            .expect("second");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &first.cert_pem).expect("write");
        std::fs::write(&key, &first.key_pem).expect("write");

        let files = vec![cert.clone(), key.clone()];
        let build = |c: &[Vec<u8>]| {
            ServerSpec {
                cert: &c[0],
                key: &c[1],
                client_ca: None,
                client_auth: ClientAuth::None,
                alpn: &[],
            }
            .build()
            .map(|_| String::from_utf8_lossy(&c[0]).into_owned())
        };
        let loaded = read_all(&files).expect("read");
        let holder = Arc::new(Reloadable::new(build(&loaded).expect("build")));
        let target = holder.clone();
        let mut w = Watcher::default();
        w.add(Source::new("test", files, loaded, move |c| {
            target.store(build(c)?);
            Ok(())
        }));

        assert_eq!(w.poll(), vec![Polled::Unchanged]);
        // Half a rotation: the new certificate beside the old key does not build.
        std::fs::write(&cert, &second.cert_pem).expect("write");
        assert_eq!(w.poll(), vec![Polled::Refused]);
        assert_eq!(*holder.load(), first.cert_pem, "the old pair keeps serving");
        assert_eq!(
            w.poll(),
            vec![Polled::Unchanged],
            "the same bad set is not retried"
        );
        // The rest of the rotation lands.
        std::fs::write(&key, &second.key_pem).expect("write");
        assert_eq!(w.poll(), vec![Polled::Reloaded]);
        assert_eq!(*holder.load(), second.cert_pem);
        // A vanished file keeps the current pair.
        std::fs::remove_file(&key).expect("rm");
        assert_eq!(w.poll(), vec![Polled::Refused]);
        assert_eq!(*holder.load(), second.cert_pem);
    }
}
