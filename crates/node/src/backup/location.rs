//! [`Location`]: where backups live — `s3://bucket/prefix/` on an S3-compatible store, or
//! `file:///dir/` on a local or mounted directory — opened as one `object_store::ObjectStore`,
//! so saving, listing, pruning and restoring have a single code path for both.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::{BackupError, S3Flags};

/// An opened backup location.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The URL the objects' locations are printed under, ending in `/`.
    pub base_url: String,
}

impl Location {
    /// Opens `url`. For `file://` the directory is created when `create` is set (saving);
    /// otherwise it must exist.
    ///
    /// # Errors
    /// [`BackupError::Usage`] for a URL of another form; [`BackupError::Store`] if the store
    /// cannot be set up.
    pub fn parse(url: &str, s3: &S3Flags, create: bool) -> Result<Location, BackupError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Usage(format!(
                    "{url}: no bucket (s3://bucket/prefix/)"
                )));
            }
            let prefix = prefix.trim_matches('/').to_string();
            let store = s3_store(bucket, s3)?;
            let base_url = if prefix.is_empty() {
                format!("s3://{bucket}/")
            } else {
                format!("s3://{bucket}/{prefix}/")
            };
            return Ok(Location {
                store,
                prefix,
                base_url,
            });
        }
        if let Some(dir) = url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(BackupError::Usage(format!(
                    "{url}: a file:// location needs an absolute path (file:///dir/)"
                )));
            }
            let dir = std::path::Path::new(dir);
            if create {
                std::fs::create_dir_all(dir)
                    .map_err(|e| BackupError::Io(format!("creating {}: {e}", dir.display())))?;
            } else if !dir.is_dir() {
                return Err(BackupError::Io(format!(
                    "{}: no such directory",
                    dir.display()
                )));
            }
            // fsync: a backup on a volume must survive a power cut once save says it is done.
            let store = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
            let shown = dir.display().to_string();
            return Ok(Location {
                store: Arc::new(store),
                prefix: String::new(),
                base_url: format!("file://{}/", shown.trim_end_matches('/')),
            });
        }
        Err(BackupError::Usage(format!(
            "{url}: a backup location is s3://bucket/prefix/ or file:///dir/"
        )))
    }

    /// The store path of object `name`.
    ///
    /// # Errors
    /// [`BackupError::Usage`] if the name is not a valid object name.
    pub fn path(&self, name: &str) -> Result<Path, BackupError> {
        if name.is_empty() || name.contains('/') {
            return Err(BackupError::Usage(format!(
                "`{name}` is not an object name"
            )));
        }
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Path::parse(&full).map_err(|e| BackupError::Usage(format!("`{name}`: {e}")))
    }

    /// The store path of the prefix (`None`: the whole store).
    pub fn prefix_path(&self) -> Option<Path> {
        (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
    }

    /// The object name of `path`, if it is directly under the prefix.
    pub fn name_of<'a>(&self, path: &'a Path) -> Option<&'a str> {
        let s = path.as_ref();
        let rest = if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }

    /// The URL of object `name`, as printed.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}{name}", self.base_url)
    }
}

/// The S3 client: region, endpoint and addressing from the flags, credentials from the
/// environment.
fn s3_store(bucket: &str, s3: &S3Flags) -> Result<Arc<dyn ObjectStore>, BackupError> {
    super::install_crypto_provider();
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&s3.s3_region)
        .with_retry(RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(120)),
        );
    if let Some(ep) = &s3.s3_endpoint {
        let ep = ep.trim_end_matches('/');
        let Some((scheme, host)) = ep.split_once("://") else {
            return Err(BackupError::Usage(format!(
                "--s3-endpoint {ep}: expected http://host:port or https://host:port"
            )));
        };
        b = b.with_allow_http(scheme == "http");
        b = if s3.s3_path_style {
            b.with_endpoint(ep).with_virtual_hosted_style_request(false)
        } else {
            // Virtual-hosted style: the bucket is part of the host name.
            b.with_endpoint(format!("{scheme}://{bucket}.{host}"))
                .with_virtual_hosted_style_request(true)
        };
    } else {
        b = b.with_virtual_hosted_style_request(!s3.s3_path_style);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_prefixes_and_names() {
        let s3 = S3Flags {
            s3_endpoint: Some("http://127.0.0.1:9".into()),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
        };
        let loc = Location::parse("s3://bkt/a/b/", &s3, false).expect("s3");
        assert_eq!(loc.prefix, "a/b");
        assert_eq!(loc.url_of("x.db"), "s3://bkt/a/b/x.db");
        let p = loc.path("x.db").expect("path");
        assert_eq!(p.as_ref(), "a/b/x.db");
        assert_eq!(loc.name_of(&p), Some("x.db"));
        assert_eq!(loc.name_of(&Path::from("a/b/c/x.db")), None);
        assert_eq!(loc.name_of(&Path::from("a/bx.db")), None);
        let root = Location::parse("s3://bkt", &s3, false).expect("bucket only");
        assert_eq!(root.prefix, "");
        assert_eq!(root.url_of("x.db"), "s3://bkt/x.db");

        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/", dir.path().display());
        let loc = Location::parse(&url, &s3, false).expect("file");
        assert_eq!(
            loc.url_of("x.db"),
            format!("file://{}/x.db", dir.path().display())
        );
        assert!(Location::parse("file://relative/dir", &s3, true).is_err());
        assert!(Location::parse("gs://bkt/", &s3, false).is_err());
        assert!(Location::parse("s3:///x", &s3, false).is_err());
        assert!(loc.path("a/b").is_err());
    }
}
