//! Which member serves a backup's snapshot, and how to reach it: the client endpoints with
//! etcdctl's TLS (`--cacert`, `--cert`, `--key`) and auth (`--user`) flags.
//!
//! Every endpoint is asked for its Admin.Status (served by every member, leader or not). The
//! snapshot should come from a **follower** — building the image holds the state machine's read
//! lock, which stalls applies, and the leader is the member every write waits for — but only
//! from one that keeps up: its applied index within [`MAX_FOLLOWER_LAG`] entries of the
//! leader's commit index, in the leader's term, with a leader known, and a voter. Among those
//! the most caught-up wins. When none qualifies the leader serves it; when no member knows a
//! leader, nothing is backed up (a member cut off from its cluster may hold stale data).
//! [`choose`] is that rule, without I/O.

use std::time::Duration;

use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{Role, StatusRequest};
use flotilla_proto::etcdserverpb::AuthenticateRequest;
use flotilla_proto::etcdserverpb::auth_client::AuthClient;
use tonic::transport::{Channel, Endpoint};

use super::{BackupError, ClusterFlags};

/// Default of `--max-follower-lag`: how far (in log entries) a follower's applied index may be
/// behind the leader's commit index for it to serve a backup. A follower that keeps pace under
/// load is a few entries behind; one that is catching up is thousands.
pub const MAX_FOLLOWER_LAG: u64 = 1000;

/// What one endpoint said about its member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The endpoint as given.
    pub endpoint: String,
    /// The member's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Whether it leads.
    pub is_leader: bool,
}

/// The member chosen to serve the snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index into the `seen` slice.
    pub index: usize,
    /// Why this member, in words for the log.
    pub why: String,
}

/// Picks the member (see the module docs).
///
/// # Errors
/// [`BackupError::NoMember`] when no answering member knows a leader.
pub fn choose(seen: &[Seen], max_lag: u64) -> Result<Choice, BackupError> {
    // The leader of the highest term any member reports.
    let Some(term) = seen.iter().filter(|s| s.leader != 0).map(|s| s.term).max() else {
        return Err(BackupError::NoMember(format!(
            "no member knows a leader ({} answered): not backing up a cluster without a \
             quorum",
            seen.len()
        )));
    };
    let leader = seen
        .iter()
        .filter(|s| s.leader != 0 && s.term == term)
        .map(|s| s.leader)
        .max()
        .unwrap_or(0);
    let leader_seen = seen.iter().position(|s| s.id == leader && s.is_leader);
    // The leader's commit index, or (leader not among the endpoints) the highest seen in its term.
    let reference = match leader_seen {
        Some(i) => seen[i].commit,
        None => seen
            .iter()
            .filter(|s| s.term == term)
            .map(|s| s.commit)
            .max()
            .unwrap_or(0),
    };
    let follower = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.id != leader && s.leader == leader && s.term == term && !s.is_learner)
        .filter(|(_, s)| reference.saturating_sub(s.applied) <= max_lag)
        .max_by_key(|(i, s)| (s.applied, std::cmp::Reverse(*i)));
    if let Some((i, s)) = follower {
        return Ok(Choice {
            index: i,
            why: format!(
                "a follower of leader {leader:016x} (term {term}), applied index {} within {} \
                 entries of the leader's commit index {reference}",
                s.applied,
                reference.saturating_sub(s.applied)
            ),
        });
    }
    if let Some(i) = leader_seen {
        let lags: Vec<String> = seen
            .iter()
            .filter(|s| s.id != leader)
            .map(|s| {
                format!(
                    "{} {}",
                    s.name,
                    if s.is_learner {
                        "is a learner".to_string()
                    } else if s.leader != leader || s.term != term {
                        "follows no current leader".to_string()
                    } else {
                        format!("lags {}", reference.saturating_sub(s.applied))
                    }
                )
            })
            .collect();
        let why = if lags.is_empty() {
            format!("the leader (term {term}), the only member among the endpoints")
        } else {
            format!(
                "the leader (term {term}): no follower among the endpoints is within {max_lag} \
                 entries ({})",
                lags.join(", ")
            )
        };
        return Ok(Choice { index: i, why });
    }
    Err(BackupError::NoMember(format!(
        "leader {leader:016x} is not among the endpoints and no follower is within {max_lag} \
         entries of commit index {reference}"
    )))
}

/// How to connect: TLS settings and credentials, read once.
#[derive(Clone)]
pub struct Dialer {
    /// The node's own dialer (a rustls connector; tonic's TLS stays off in the workspace).
    tls: crate::tls::Dialer,
    user: Option<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.tls.has_tls())
            .field("user", &self.user.as_ref().map(|(n, _)| n))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Dialer {
    /// Reads the certificate files the flags name.
    ///
    /// # Errors
    /// [`BackupError::Usage`] for a `--user` without `:`, a `--cert` without `--key` (or the
    /// reverse) or without `--cacert`; [`BackupError::Io`] if a file cannot be read.
    pub fn new(f: &ClusterFlags) -> Result<Dialer, BackupError> {
        if f.cert.is_some() != f.key.is_some() {
            return Err(BackupError::Usage("--cert and --key go together".into()));
        }
        if f.cert.is_some() && f.cacert.is_none() {
            return Err(BackupError::Usage(
                "--cert needs --cacert (the CA the members' certificates chain to)".into(),
            ));
        }
        let tls = crate::tls::Dialer::from_files(
            f.cacert.as_deref(),
            f.cert.as_deref(),
            f.key.as_deref(),
        )
        .map_err(|e| BackupError::Io(e.to_string()))?;
        let user = match &f.user {
            None => None,
            Some(u) => {
                let (name, password) = u
                    .split_once(':')
                    .ok_or_else(|| BackupError::Usage("--user is name:password".into()))?;
                Some((name.to_string(), password.to_string()))
            }
        };
        Ok(Dialer {
            tls,
            user,
            timeout: f.dial_timeout,
        })
    }

    /// The URL of an endpoint: as given when it has a scheme, else `https://` when TLS flags
    /// were given and `http://` otherwise (as etcdctl).
    pub fn url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_string()
        } else if self.tls.has_tls() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }

    /// Connects to `endpoint`.
    ///
    /// # Errors
    /// [`BackupError::Member`] if it cannot be reached.
    pub async fn connect(&self, endpoint: &str) -> Result<Channel, BackupError> {
        let url = self.url(endpoint);
        let ep = Endpoint::from_shared(url.clone())
            .map_err(|e| BackupError::Usage(format!("endpoint {endpoint}: {e}")))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        self.tls.connect(ep).await.map_err(|e| {
            BackupError::Member(format!("connecting to {endpoint}: {}", super::chain(&e)))
        })
    }

    /// An auth token for `--user`, from the member at `channel` (`None` without `--user`).
    ///
    /// # Errors
    /// [`BackupError::Member`] if the member refuses the credentials.
    pub async fn token(
        &self,
        channel: Channel,
        endpoint: &str,
    ) -> Result<Option<String>, BackupError> {
        let Some((name, password)) = &self.user else {
            return Ok(None);
        };
        let req = AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        let r = tokio::time::timeout(self.timeout, AuthClient::new(channel).authenticate(req))
            .await
            .map_err(|_| BackupError::Member(format!("authenticating at {endpoint}: timed out")))?
            .map_err(|s| {
                BackupError::Member(format!(
                    "authenticating as {name} at {endpoint}: {}",
                    s.message()
                ))
            })?;
        Ok(Some(r.into_inner().token))
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A refusal's text, with the transport's cause when there is one (a TLS alert shows up as a
/// bare "operation was canceled" otherwise).
pub fn status_text(s: &tonic::Status) -> String {
    match std::error::Error::source(s) {
        Some(cause) => format!("{}: {}", s.message(), super::chain(cause)),
        None => s.message().to_string(),
    }
}

/// Asks one endpoint for its member's status.
async fn status(d: &Dialer, endpoint: &str) -> Result<(Seen, Channel), BackupError> {
    let ch = d.connect(endpoint).await?;
    let st = tokio::time::timeout(
        d.timeout,
        AdminClient::new(ch.clone()).status(StatusRequest {}),
    )
    .await
    .map_err(|_| BackupError::Member(format!("{endpoint}: Status timed out")))?
    .map_err(|s| BackupError::Member(format!("{endpoint}: Status: {}", status_text(&s))))?
    .into_inner();
    Ok((
        Seen {
            endpoint: endpoint.to_string(),
            id: st.id,
            name: st.name,
            leader: st.leader_id,
            term: st.term,
            commit: st.commit_index,
            applied: st.applied_index,
            is_learner: st.is_learner,
            is_leader: st.role == Role::Leader as i32,
        },
        ch,
    ))
}

/// Asks every endpoint (at once) and picks the member; returns it with a channel to it.
///
/// # Errors
/// [`BackupError::NoMember`] when no member qualifies (the message lists what each endpoint
/// answered).
pub async fn pick(
    d: &Dialer,
    endpoints: &str,
    max_lag: u64,
) -> Result<(Seen, Channel), BackupError> {
    let list: Vec<&str> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if list.is_empty() {
        return Err(BackupError::Usage("--endpoints lists no endpoint".into()));
    }
    let answers = futures::future::join_all(list.iter().map(|ep| status(d, ep))).await;
    let mut seen = Vec::new();
    let mut channels = Vec::new();
    let mut failures = Vec::new();
    for a in answers {
        match a {
            Ok((s, ch)) => {
                seen.push(s);
                channels.push(ch);
            }
            Err(e) => {
                tracing::warn!(error = %e, "an endpoint did not answer");
                failures.push(e.to_string());
            }
        }
    }
    if seen.is_empty() {
        return Err(BackupError::NoMember(format!(
            "no endpoint answered: {}",
            failures.join("; ")
        )));
    }
    let choice = choose(&seen, max_lag).map_err(|e| {
        if failures.is_empty() {
            e
        } else {
            BackupError::NoMember(format!("{e}; {}", failures.join("; ")))
        }
    })?;
    let s = seen.swap_remove(choice.index);
    let ch = channels.swap_remove(choice.index);
    tracing::info!(
        member = s.name,
        id = format!("{:016x}", s.id),
        endpoint = s.endpoint,
        why = choice.why,
        "backing up from this member"
    );
    Ok((s, ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: u64, leader: u64, term: u64, commit: u64, applied: u64) -> Seen {
        Seen {
            endpoint: format!("e{id}"),
            id,
            name: format!("m{id}"),
            leader,
            term,
            commit,
            applied,
            is_learner: false,
            is_leader: id == leader,
        }
    }

    #[test]
    fn a_caught_up_follower_is_preferred_to_the_leader() {
        let s = vec![
            seen(1, 1, 5, 100, 100),
            seen(2, 1, 5, 99, 98),
            seen(3, 1, 5, 100, 99),
        ];
        let c = choose(&s, 10).expect("chosen");
        assert_eq!(s[c.index].id, 3, "{}", c.why);
        assert!(c.why.contains("follower"), "{}", c.why);
    }

    #[test]
    fn the_leader_serves_when_every_follower_lags_or_is_a_learner() {
        let mut learner = seen(3, 1, 5, 100, 100);
        learner.is_learner = true;
        let s = vec![seen(2, 1, 5, 50, 40), seen(1, 1, 5, 2000, 2000), learner];
        let c = choose(&s, 1000).expect("chosen");
        assert_eq!(s[c.index].id, 1, "{}", c.why);
        assert!(c.why.contains("m2 lags 1960"), "{}", c.why);
        assert!(c.why.contains("m3 is a learner"), "{}", c.why);
    }

    #[test]
    fn a_follower_of_a_stale_term_or_without_a_leader_is_never_chosen() {
        let s = vec![
            seen(2, 9, 4, 100, 100),
            seen(3, 0, 6, 100, 100),
            seen(1, 1, 6, 100, 100),
        ];
        let c = choose(&s, 10).expect("chosen");
        assert_eq!(s[c.index].id, 1);
        // Without the leader among the endpoints, a follower of the current term still serves.
        let s = vec![seen(2, 1, 6, 100, 95), seen(3, 1, 6, 100, 99)];
        assert_eq!(s[choose(&s, 10).expect("chosen").index].id, 3);
        // Nobody knows a leader: no backup.
        let s = vec![seen(2, 0, 6, 100, 100), seen(3, 0, 6, 100, 100)];
        assert!(matches!(choose(&s, 10), Err(BackupError::NoMember(_))));
        assert!(matches!(choose(&[], 10), Err(BackupError::NoMember(_))));
        // The leader is elsewhere and every follower here lags.
        let s = vec![seen(2, 1, 6, 5000, 100)];
        assert!(matches!(choose(&s, 10), Err(BackupError::NoMember(_))));
    }
}
