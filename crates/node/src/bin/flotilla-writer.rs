//! `flotilla-writer`: a continuous-write client for end-to-end tests that records every
//! acknowledged put and then checks that none was lost.
//!
//! One file (with its unit tests, about a fifth of it) because it is one binary: the writer,
//! the verifier and the report share the record of what was acknowledged.
//!
//! The end-to-end suite runs it as a Pod against a cluster's client Service while the
//! cluster's pods are killed, scaled and replaced; the question it answers is "did an
//! acknowledged write ever disappear?". It speaks only the public etcd v3 gRPC API.
//!
//! **Writing.** Each of `--workers` tasks writes `{prefix}{worker:02}/{seq:08}` for seq = 0,
//! 1, 2, … one put at a time, never the same key twice, with a value that encodes the seq.
//! A put that answers records `(seq, header.revision)` as *acked*; one that fails or times
//! out records the seq as *uncertain* (it may or may not have been applied), and the worker
//! backs off (100 ms doubling to 1 s) and replaces its gRPC channel with a fresh one: a new
//! TCP connection, which kube-proxy may route to a live pod (a tonic channel otherwise keeps
//! redialling the address it resolved, and a half-dead connection can stall it), and the next
//! endpoint of `--endpoints` when several are given. Writing stops when `--duration` has
//! passed, when `--stop-file` appears, or on SIGTERM/SIGINT; a put in flight then finishes
//! (bounded by `--request-timeout`). Every 5 s a `progress …` line goes to stdout.
//!
//! **Verifying.** Then everything under the prefix is read back with linearizable, paginated
//! Range requests pinned to the first page's revision (each page retried with backoff on a
//! fresh channel until `--verify-timeout`) and checked against what was recorded:
//!
//! - *lost*: an acked key that is missing, or whose value encodes another seq;
//! - *unexpected*: a key under the prefix that was never attempted (or is malformed);
//! - *revision mismatch*: an acked key whose `mod_revision` differs from the revision in its
//!   put response header (each key is written once, so etcd semantics make them equal);
//! - *out of order*: a present key whose `mod_revision` is not above the revision of every
//!   acked put of the same worker with a smaller seq — that put was acknowledged before this
//!   one was issued, so linearizability places it earlier. An *uncertain* predecessor gives
//!   no such bound: its request may still have been in flight inside the cluster (queued for
//!   forwarding to a leader, say) and be applied after its successor; the writer counts those
//!   as `late_uncertain` on a `note` line, as information and not as a failure.
//!
//! It prints `RESULT acked=N uncertain=U present=P lost=L unexpected=X revision_mismatch=R
//! out_of_order=O`, then the first few failures. Exit code 0 when L, X, R and O are all 0
//! and N > 0; 1 otherwise; 2 when the data could not be read back within `--verify-timeout`
//! (a `VERIFY_ERROR` line then replaces the `RESULT` line).
//!
//! Use a fresh prefix for each run: keys left by an earlier run under the same prefix would
//! count as unexpected (or as lost, with other values). In Kubernetes, give the Pod a
//! `terminationGracePeriodSeconds` above `--verify-timeout` if it is to be stopped by SIGTERM.
//!
//! ```text
//! flotilla-writer --endpoints demo.e2e.svc:2379 --prefix e2e/scale/ --stop-file /tmp/stop
//! ```

use flotilla_node::cli::{parse_duration, shutdown_signal};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use flotilla_node::tls::Dialer;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(
    about = "Continuous puts against etcd v3 endpoints, then a check that no acked put \
                   was lost"
)]
struct Args {
    /// Comma-separated host:port list of client endpoints (`http://` optional).
    #[arg(
        long,
        env = "FLOTILLA_WRITER_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    endpoints: Vec<String>,
    /// Prefix of every key written (e.g. `e2e/scale/`); use a fresh one per run.
    #[arg(long, env = "FLOTILLA_WRITER_PREFIX")]
    prefix: String,
    /// Concurrent writers, each with one put in flight.
    #[arg(long, env = "FLOTILLA_WRITER_WORKERS", default_value_t = 4)]
    workers: usize,
    /// Stop writing once this file exists.
    #[arg(long, env = "FLOTILLA_WRITER_STOP_FILE")]
    stop_file: Option<PathBuf>,
    /// Stop writing after this long (e.g. 30s, 500ms, 5m).
    #[arg(long, env = "FLOTILLA_WRITER_DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Timeout of each put and of each page read while verifying.
    #[arg(long, env = "FLOTILLA_WRITER_REQUEST_TIMEOUT", default_value = "5s",
          value_parser = parse_duration)]
    request_timeout: Duration,
    /// How long verification may keep retrying to read the data back.
    #[arg(long, env = "FLOTILLA_WRITER_VERIFY_TIMEOUT", default_value = "120s",
          value_parser = parse_duration)]
    verify_timeout: Duration,
    /// Value size in bytes (at least the encoded seq's length).
    #[arg(long, env = "FLOTILLA_WRITER_VALUE_SIZE", default_value_t = 64)]
    value_size: usize,
    /// CA bundle (PEM) to verify the endpoints with; endpoints without a scheme use TLS
    /// (etcdctl's flag).
    #[arg(long, env = "FLOTILLA_WRITER_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with --key and --cacert.
    #[arg(long, env = "FLOTILLA_WRITER_CERT", requires_all = ["key", "cacert"])]
    cert: Option<std::path::PathBuf>,
    /// Client key (PEM) of --cert.
    #[arg(long, env = "FLOTILLA_WRITER_KEY", requires = "cert")]
    key: Option<std::path::PathBuf>,
}

/// The dialer for `args`: plain, or TLS with the CA and client certificate given.
fn dialer(args: &Args) -> anyhow::Result<Dialer> {
    Ok(Dialer::from_files(
        args.cacert.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
    )?)
}

// ---- keys, values and the check (pure) ----

/// The key of `worker`'s put number `seq`.
fn key_for(prefix: &[u8], worker: usize, seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{worker:02}/{seq:08}").as_bytes());
    key
}

/// `(worker, seq)` of a key written by [`key_for`] under `prefix`; `None` for any other key.
fn parse_key(prefix: &[u8], key: &[u8]) -> Option<(usize, u64)> {
    let rest = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
    let (w, seq) = rest.split_once('/')?;
    if !w.bytes().all(|b| b.is_ascii_digit()) || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let parsed = (w.parse().ok()?, seq.parse().ok()?);
    // Only the canonical spelling: `0/1` or `00/000000001` were never written.
    (key_for(prefix, parsed.0, parsed.1) == key).then_some(parsed)
}

/// The value of `worker`'s put number `seq`: the seq first, padded to `size` bytes.
fn value_for(worker: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("seq={seq:08} worker={worker:02} ").into_bytes();
    if v.len() < size {
        v.resize(size, b'.');
    }
    v
}

/// The seq a value written by [`value_for`] encodes.
fn parse_value(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(b"seq=")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What one worker did: seqs `0..attempted` were each either acked or uncertain.
#[derive(Debug, Default, Clone)]
struct WorkerLog {
    /// Seqs issued so far (the next seq to write).
    attempted: u64,
    /// Acked seq → revision of the put response header.
    acked: BTreeMap<u64, i64>,
    /// Seqs whose put failed or timed out.
    uncertain: BTreeSet<u64>,
}

/// A key read back under the prefix.
#[derive(Debug, Clone)]
struct PresentKv {
    key: Vec<u8>,
    value: Vec<u8>,
    mod_revision: i64,
}

/// The outcome of [`check`].
#[derive(Debug, Default)]
struct Report {
    acked: u64,
    uncertain: u64,
    present: u64,
    lost: u64,
    unexpected: u64,
    revision_mismatch: u64,
    out_of_order: u64,
    /// Informational: uncertain puts applied after a later put of the same worker.
    late_uncertain: u64,
    /// One line per failure, in the order found.
    failures: Vec<String>,
}

impl Report {
    fn ok(&self) -> bool {
        self.acked > 0
            && self.lost == 0
            && self.unexpected == 0
            && self.revision_mismatch == 0
            && self.out_of_order == 0
    }

    fn result_line(&self) -> String {
        format!(
            "RESULT acked={} uncertain={} present={} lost={} unexpected={} \
             revision_mismatch={} out_of_order={}",
            self.acked,
            self.uncertain,
            self.present,
            self.lost,
            self.unexpected,
            self.revision_mismatch,
            self.out_of_order
        )
    }
}

/// Checks what was read back under `prefix` against what each worker (index = worker number)
/// recorded; see the module documentation for the four kinds of failure.
fn check(prefix: &[u8], workers: &[WorkerLog], present: &[PresentKv]) -> Report {
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut r = Report {
        acked: workers.iter().map(|w| w.acked.len() as u64).sum(),
        uncertain: workers.iter().map(|w| w.uncertain.len() as u64).sum(),
        present: present.len() as u64,
        ..Report::default()
    };
    // Present keys by worker and seq.
    let mut found: Vec<BTreeMap<u64, &PresentKv>> = vec![BTreeMap::new(); workers.len()];
    for kv in present {
        match parse_key(prefix, &kv.key) {
            Some((w, seq)) if w < workers.len() && seq < workers[w].attempted => {
                found[w].insert(seq, kv);
            }
            Some((w, seq)) => {
                r.unexpected += 1;
                let attempted = workers.get(w).map_or(0, |l| l.attempted);
                r.failures.push(format!(
                    "unexpected: {} (worker {w} seq {seq} never attempted; worker attempted \
                     {attempted} puts)",
                    show(&kv.key)
                ));
            }
            None => {
                r.unexpected += 1;
                r.failures.push(format!(
                    "unexpected: {} (not a key this writer writes)",
                    show(&kv.key)
                ));
            }
        }
    }
    for (w, log) in workers.iter().enumerate() {
        let found = &found[w];
        for (&seq, &rev) in &log.acked {
            let key = show(&key_for(prefix, w, seq));
            match found.get(&seq) {
                None => {
                    r.lost += 1;
                    r.failures
                        .push(format!("lost: {key} acked at revision {rev} is missing"));
                }
                Some(kv) => {
                    match parse_value(&kv.value) {
                        Some(s) if s == seq => {}
                        other => {
                            r.lost += 1;
                            r.failures.push(format!(
                                "lost: {key} acked at revision {rev} holds a value for seq \
                                 {other:?}: {:?}",
                                String::from_utf8_lossy(&kv.value)
                            ));
                        }
                    }
                    if kv.mod_revision != rev {
                        r.revision_mismatch += 1;
                        r.failures.push(format!(
                            "revision_mismatch: {key} acked at revision {rev} has mod_revision \
                             {}",
                            kv.mod_revision
                        ));
                    }
                }
            }
        }
        // Each present key must land after every acked put with a smaller seq.
        let mut acked = log.acked.iter().peekable();
        let mut floor: Option<(u64, i64)> = None;
        for (&seq, kv) in found {
            while let Some(&(&s, &rev)) = acked.peek() {
                if s >= seq {
                    break;
                }
                if floor.is_none_or(|(_, f)| rev > f) {
                    floor = Some((s, rev));
                }
                acked.next();
            }
            if let Some((s, f)) = floor
                && kv.mod_revision <= f
            {
                r.out_of_order += 1;
                r.failures.push(format!(
                    "out_of_order: {} has mod_revision {}, not after revision {f} of {} which \
                     was acked before it was written",
                    show(&kv.key),
                    kv.mod_revision,
                    show(&key_for(prefix, w, s))
                ));
            }
        }
        // Uncertain puts that landed after a later put (allowed; counted for information).
        let mut min_later = i64::MAX;
        for (&seq, kv) in found.iter().rev() {
            if log.uncertain.contains(&seq) && kv.mod_revision > min_later {
                r.late_uncertain += 1;
            }
            min_later = min_later.min(kv.mod_revision);
        }
    }
    if r.acked == 0 {
        r.failures.push("no put was acknowledged".to_string());
    }
    r
}

// ---- I/O ----

/// Prints one line to stdout and flushes it (it is read with `kubectl logs`); a closed stdout
/// is not a reason to stop.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The configured endpoints; every call to [`Endpoints::client`] is a new channel, hence a
/// new TCP connection.
struct Endpoints(Vec<Endpoint>, Dialer);

impl Endpoints {
    fn new(
        list: &[String],
        connect_timeout: Duration,
        dialer: Dialer,
    ) -> anyhow::Result<Endpoints> {
        let mut eps = Vec::with_capacity(list.len());
        let scheme = if dialer.has_tls() { "https" } else { "http" };
        for ep in list.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let uri = if ep.contains("://") {
                ep.to_string()
            } else {
                format!("{scheme}://{ep}")
            };
            let endpoint = Endpoint::from_shared(uri)
                .with_context(|| format!("bad endpoint {ep:?}"))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .tcp_keepalive(Some(Duration::from_secs(10)))
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            eps.push(endpoint);
        }
        if eps.is_empty() {
            bail!("need at least one endpoint");
        }
        // Checked once here, so `client` cannot fail later.
        dialer
            .connect_lazy(eps[0].clone())
            .context("setting up TLS for the endpoints")?;
        Ok(Endpoints(eps, dialer))
    }

    /// A client on a fresh channel to endpoint `i` (modulo the count); it connects lazily,
    /// so a dead endpoint shows up as the first request's error.
    fn client(&self, i: usize) -> KvClient<Channel> {
        let ep = self.0[i % self.0.len()].clone();
        let channel = self
            .1
            .connect_lazy(ep.clone())
            .unwrap_or_else(|_| ep.connect_lazy());
        KvClient::new(channel).max_decoding_message_size(usize::MAX)
    }
}

/// A failed request's code and message, with the transport error's causes when there are
/// (tonic's own message for a refused connection is just "tcp connect error").
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Counters shared with the progress printer.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    uncertain: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<String>,
}

impl Progress {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn line(&self) -> String {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        format!(
            "progress acked={} uncertain={} errors={} last_error={last:?}",
            self.acked.load(Ordering::Relaxed),
            self.uncertain.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

struct WriterConfig {
    prefix: Vec<u8>,
    value_size: usize,
    request_timeout: Duration,
}

/// Sleeps `d`, or less if `stop` turns true.
async fn sleep_unless_stopped(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// One worker: sequential puts until `stop`, recording each outcome.
async fn run_worker(
    w: usize,
    eps: Arc<Endpoints>,
    cfg: Arc<WriterConfig>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let mut ep = w;
    let mut kv = eps.client(ep);
    let mut backoff = MIN_BACKOFF;
    while !*stop.borrow() {
        let seq = log.attempted;
        log.attempted += 1;
        let key = key_for(&cfg.prefix, w, seq);
        let req = PutRequest {
            key,
            value: value_for(w, seq, cfg.value_size),
            ..Default::default()
        };
        let err = match tokio::time::timeout(cfg.request_timeout, kv.put(req)).await {
            Ok(Ok(resp)) => match resp.into_inner().header {
                Some(h) => {
                    log.acked.insert(seq, h.revision);
                    progress.acked.fetch_add(1, Ordering::Relaxed);
                    backoff = MIN_BACKOFF;
                    continue;
                }
                None => "put response without a header".to_string(),
            },
            Ok(Err(status)) => status_text(&status),
            Err(_) => format!("timed out after {:?}", cfg.request_timeout),
        };
        log.uncertain.insert(seq);
        progress.uncertain.fetch_add(1, Ordering::Relaxed);
        progress.error(format!("worker {w} seq {seq}: {err}"));
        sleep_unless_stopped(backoff, &mut stop).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        ep = ep.wrapping_add(1);
        kv = eps.client(ep);
    }
    log
}

/// Resolves with the reason writing should stop.
async fn stop_reason(duration: Option<Duration>, stop_file: Option<PathBuf>) -> String {
    let timer = async {
        match duration {
            Some(d) => {
                tokio::time::sleep(d).await;
                d
            }
            None => std::future::pending().await,
        }
    };
    let file = async {
        match &stop_file {
            Some(path) => loop {
                if tokio::fs::try_exists(path).await.unwrap_or(false) {
                    return path.display().to_string();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        d = timer => format!("--duration {d:?} passed"),
        path = file => format!("stop file {path} exists"),
        _ = shutdown_signal() => "signal received".to_string(),
    }
}

/// The first key after every key with `prefix` (etcd's `--prefix` range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads every key under `prefix` (linearizable, paginated, pinned to the first page's
/// revision), retrying each page on a fresh channel until `deadline`; the last error when the
/// deadline passes first.
async fn read_prefix(
    eps: &Endpoints,
    prefix: &[u8],
    request_timeout: Duration,
    page: i64,
    deadline: Instant,
) -> Result<Vec<PresentKv>, String> {
    let end = prefix_end(prefix);
    let mut ep = 0usize;
    let mut kv = eps.client(ep);
    let mut out = Vec::new();
    let mut from = prefix.to_vec();
    let mut revision = 0i64;
    let mut backoff = MIN_BACKOFF;
    let mut last_error = "no attempt made".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last_error);
        }
        let req = RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: page,
            revision,
            serializable: false,
            ..Default::default()
        };
        let err = match tokio::time::timeout(request_timeout.min(left), kv.range(req)).await {
            Ok(Ok(resp)) => {
                let resp = resp.into_inner();
                if revision == 0 {
                    revision = resp.header.as_ref().map_or(0, |h| h.revision);
                }
                let Some(last) = resp.kvs.last() else {
                    return Ok(out);
                };
                from = last.key.clone();
                from.push(0);
                out.extend(resp.kvs.into_iter().map(|kv| PresentKv {
                    key: kv.key,
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                }));
                if !resp.more {
                    return Ok(out);
                }
                backoff = MIN_BACKOFF;
                continue;
            }
            Ok(Err(status)) => {
                if status.code() == tonic::Code::OutOfRange {
                    // The pinned revision was compacted away: start over at the current one.
                    out.clear();
                    from = prefix.to_vec();
                    revision = 0;
                }
                status_text(&status)
            }
            Err(_) => format!("timed out after {:?}", request_timeout.min(left)),
        };
        say(&format!(
            "verify: reading {} keys from {:?} failed (retrying): {err}",
            out.len(),
            String::from_utf8_lossy(&from)
        ));
        last_error = err;
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        ep = ep.wrapping_add(1);
        kv = eps.client(ep);
    }
}

/// Failure lines printed after the RESULT line.
const SHOWN_FAILURES: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.workers == 0 {
        bail!("need at least one worker");
    }
    if args.prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    let eps = Arc::new(Endpoints::new(
        &args.endpoints,
        args.request_timeout,
        dialer(&args)?,
    )?);
    let cfg = Arc::new(WriterConfig {
        prefix: args.prefix.as_bytes().to_vec(),
        value_size: args.value_size,
        request_timeout: args.request_timeout,
    });
    if let Some(path) = &args.stop_file
        && path.exists()
    {
        say(&format!(
            "warning: stop file {} exists already: nothing will be written",
            path.display()
        ));
    }
    say(&format!(
        "writing under {:?} with {} workers to {}",
        args.prefix,
        args.workers,
        args.endpoints.join(",")
    ));

    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers: Vec<_> = (0..args.workers)
        .map(|w| {
            tokio::spawn(run_worker(
                w,
                eps.clone(),
                cfg.clone(),
                progress.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let printer = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                say(&progress.line());
            }
        })
    };

    let reason = stop_reason(args.duration, args.stop_file.clone()).await;
    say(&format!("stopping: {reason}"));
    let _ = stop_tx.send(true);
    let mut logs = Vec::with_capacity(workers.len());
    for w in workers {
        logs.push(w.await.context("writer task failed")?);
    }
    printer.abort();
    say(&progress.line());

    say(&format!(
        "verify: reading back everything under {:?}",
        args.prefix
    ));
    let page = i64::try_from((1 << 20) / (args.value_size + 128))
        .unwrap_or(1)
        .clamp(1, 1000);
    let deadline = Instant::now() + args.verify_timeout;
    let present = match read_prefix(
        &eps,
        args.prefix.as_bytes(),
        args.request_timeout,
        page,
        deadline,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
            let uncertain: usize = logs.iter().map(|l| l.uncertain.len()).sum();
            say(&format!(
                "VERIFY_ERROR acked={acked} uncertain={uncertain} could not read the data back \
                 within {:?}: {e}",
                args.verify_timeout
            ));
            return Ok(ExitCode::from(2));
        }
    };
    let report = check(args.prefix.as_bytes(), &logs, &present);
    say(&report.result_line());
    for f in report.failures.iter().take(SHOWN_FAILURES) {
        say(f);
    }
    if report.failures.len() > SHOWN_FAILURES {
        say(&format!(
            "… and {} more failures",
            report.failures.len() - SHOWN_FAILURES
        ));
    }
    if report.late_uncertain > 0 {
        say(&format!(
            "note late_uncertain={}: uncertain puts applied after a later put of their worker \
             (allowed: their requests were abandoned, not answered)",
            report.late_uncertain
        ));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[u8] = b"t/";

    fn kv(w: usize, seq: u64, rev: i64) -> PresentKv {
        PresentKv {
            key: key_for(P, w, seq),
            value: value_for(w, seq, 64),
            mod_revision: rev,
        }
    }

    /// A worker log from `(seq, Some(rev))` acked and `(seq, None)` uncertain entries, in seq
    /// order from 0.
    fn log(entries: &[Option<i64>]) -> WorkerLog {
        let mut l = WorkerLog::default();
        for e in entries {
            match e {
                Some(rev) => {
                    l.acked.insert(l.attempted, *rev);
                }
                None => {
                    l.uncertain.insert(l.attempted);
                }
            }
            l.attempted += 1;
        }
        l
    }

    fn counts(r: &Report) -> (u64, u64, u64, u64) {
        (r.lost, r.unexpected, r.revision_mismatch, r.out_of_order)
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(key_for(P, 3, 42), b"t/03/00000042");
        assert_eq!(parse_key(P, b"t/03/00000042"), Some((3, 42)));
        assert_eq!(parse_key(P, b"t/123/123456789"), Some((123, 123_456_789)));
        assert_eq!(parse_key(P, b"t/3/42"), None);
        assert_eq!(parse_key(P, b"t/03/0000004x"), None);
        assert_eq!(parse_key(P, b"u/03/00000042"), None);
        assert_eq!(parse_key(P, b"t/03"), None);
        let v = value_for(3, 42, 64);
        assert_eq!(v.len(), 64);
        assert_eq!(parse_value(&v), Some(42));
        assert_eq!(parse_value(&value_for(3, 42, 1)), Some(42));
        assert_eq!(parse_value(b"garbage"), None);
        assert_eq!(prefix_end(b"t/"), b"t0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn all_acked_and_present_is_ok() {
        let logs = [log(&[Some(2), Some(4)]), log(&[Some(3), Some(5)])];
        let present = [kv(0, 0, 2), kv(0, 1, 4), kv(1, 0, 3), kv(1, 1, 5)];
        let r = check(P, &logs, &present);
        assert_eq!(counts(&r), (0, 0, 0, 0), "{:?}", r.failures);
        assert_eq!((r.acked, r.uncertain, r.present), (4, 0, 4));
        assert!(r.ok());
        assert_eq!(
            r.result_line(),
            "RESULT acked=4 uncertain=0 present=4 lost=0 unexpected=0 revision_mismatch=0 \
             out_of_order=0"
        );
    }

    #[test]
    fn nothing_acked_is_a_failure() {
        let r = check(P, &[log(&[None])], &[]);
        assert_eq!(counts(&r), (0, 0, 0, 0));
        assert!(!r.ok());
    }

    #[test]
    fn a_missing_acked_key_is_lost() {
        let logs = [log(&[Some(2), Some(3), Some(4)])];
        let r = check(P, &logs, &[kv(0, 0, 2), kv(0, 2, 4)]);
        assert_eq!(counts(&r), (1, 0, 0, 0));
        assert!(!r.ok());
        assert!(r.failures[0].contains("t/00/00000001"), "{:?}", r.failures);
    }

    #[test]
    fn an_acked_key_with_another_seq_in_its_value_is_lost() {
        let logs = [log(&[Some(2), Some(3)])];
        let mut wrong = kv(0, 1, 3);
        wrong.value = value_for(0, 7, 64);
        let r = check(P, &logs, &[kv(0, 0, 2), wrong]);
        assert_eq!(counts(&r), (1, 0, 0, 0));
    }

    #[test]
    fn an_uncertain_key_may_be_present_or_absent() {
        let logs = [log(&[Some(2), None, Some(5)])];
        let present = check(P, &logs, &[kv(0, 0, 2), kv(0, 1, 3), kv(0, 2, 5)]);
        assert_eq!(counts(&present), (0, 0, 0, 0), "{:?}", present.failures);
        assert!(present.ok());
        let absent = check(P, &logs, &[kv(0, 0, 2), kv(0, 2, 5)]);
        assert_eq!(counts(&absent), (0, 0, 0, 0), "{:?}", absent.failures);
        assert!(absent.ok());
        assert_eq!((absent.acked, absent.uncertain, absent.present), (2, 1, 2));
    }

    #[test]
    fn keys_never_attempted_or_malformed_are_unexpected() {
        let logs = [log(&[Some(2)])];
        let present = [
            kv(0, 0, 2),
            kv(0, 1, 3), // beyond the last attempted seq
            kv(4, 0, 4), // no such worker
            PresentKv {
                key: b"t/stray".to_vec(),
                value: b"x".to_vec(),
                mod_revision: 5,
            },
        ];
        let r = check(P, &logs, &present);
        assert_eq!(counts(&r), (0, 3, 0, 0), "{:?}", r.failures);
        assert_eq!(r.present, 4);
        assert!(!r.ok());
    }

    #[test]
    fn an_acked_key_with_another_mod_revision_is_a_mismatch() {
        let logs = [log(&[Some(2), Some(3)])];
        let r = check(P, &logs, &[kv(0, 0, 2), kv(0, 1, 9)]);
        assert_eq!(counts(&r), (0, 0, 1, 0), "{:?}", r.failures);
        assert!(!r.ok());
    }

    #[test]
    fn a_key_landing_before_an_acked_predecessor_is_out_of_order() {
        // Acked puts recorded in increasing revisions, but the store shows seq 2 before seq 1.
        let logs = [log(&[Some(2), Some(6), Some(4)])];
        let r = check(P, &logs, &[kv(0, 0, 2), kv(0, 1, 6), kv(0, 2, 4)]);
        assert_eq!(counts(&r).3, 1, "{:?}", r.failures);
        assert!(!r.ok());
        // An uncertain put present below an acked predecessor's revision is out of order too.
        let logs = [log(&[Some(5), None])];
        let r = check(P, &logs, &[kv(0, 0, 5), kv(0, 1, 3)]);
        assert_eq!(counts(&r), (0, 0, 0, 1), "{:?}", r.failures);
        // Equal revisions are not "after".
        let logs = [log(&[Some(5), Some(5)])];
        let r = check(P, &logs, &[kv(0, 0, 5), kv(0, 1, 5)]);
        assert_eq!(counts(&r), (0, 0, 0, 1), "{:?}", r.failures);
        // Workers are independent.
        let logs = [log(&[Some(9)]), log(&[Some(2)])];
        let r = check(P, &logs, &[kv(0, 0, 9), kv(1, 0, 2)]);
        assert!(r.ok(), "{:?}", r.failures);
    }

    #[test]
    fn an_uncertain_put_applied_late_is_noted_not_failed() {
        // Seq 0 timed out but was applied after seq 1 was acked: no bound was violated.
        let logs = [log(&[None, Some(3), Some(7)])];
        let r = check(P, &logs, &[kv(0, 0, 5), kv(0, 1, 3), kv(0, 2, 7)]);
        assert_eq!(counts(&r), (0, 0, 0, 0), "{:?}", r.failures);
        assert_eq!(r.late_uncertain, 1);
        assert!(r.ok());
    }
}
