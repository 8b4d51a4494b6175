//! `flotilla-load`: a closed-loop load generator for any etcd v3 endpoint (Flotilla or etcd).
//!
//! It speaks only the public etcd v3 gRPC API, so the same binary measures Flotilla and etcd in
//! the same run (`scripts/bench-vs-etcd.sh`). Each of `--clients` tasks issues one request at a
//! time (closed loop), choosing a 256-byte put or a linearizable get by `--read-ratio`, over
//! `--conns` shared HTTP/2 connections spread round-robin across the endpoints. Latencies are
//! recorded per request and reported as exact percentiles (all samples are kept: a run is
//! bounded by `--duration` or `--total`, so memory is bounded too).
//!
//! ```text
//! flotilla-load --endpoints 127.0.0.1:2379,127.0.0.1:22379 --clients 64 --duration 10s
//! ```
//!
//! TLS takes etcdctl's flags: `--cacert` (endpoints without a scheme become https://), and
//! `--cert`/`--key` for a client certificate.

use flotilla_node::cli::parse_duration;
use flotilla_node::tls::Dialer;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop put/get load against etcd v3 endpoints")]
struct Args {
    /// Comma-separated host:port list of client endpoints.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// gRPC connections shared by the clients.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// How long to run (e.g. 10s, 500ms); ignored when --total is given.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests in all instead of after --duration.
    #[arg(long)]
    total: Option<u64>,
    /// Fraction of requests that are linearizable gets (0.0 = puts only).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Number of distinct keys written and read.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Write keys 0, 1, 2, … of the key space once each, in order across all clients, instead
    /// of picking them at random (what loading exactly N keys needs; needs --total).
    #[arg(long, requires = "total")]
    sequential_keys: bool,
    /// Label printed with the result line (e.g. "flotilla" or "etcd").
    #[arg(long, default_value = "target")]
    label: String,
    /// CA bundle (PEM) to verify the endpoints with; connect with TLS.
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with --key and --cacert.
    #[arg(long, requires_all = ["key", "cacert"])]
    cert: Option<std::path::PathBuf>,
    /// Client key (PEM) of --cert.
    #[arg(long, requires = "cert")]
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

#[derive(Default)]
struct Samples {
    puts: Vec<u32>,
    gets: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.puts.extend(other.puts);
        self.gets.extend(other.gets);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A tiny deterministic generator: each client's choice of key and operation is reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

async fn connect(args: &Args) -> anyhow::Result<Vec<KvClient<Channel>>> {
    let dialer = dialer(args)?;
    let scheme = if dialer.has_tls() { "https" } else { "http" };
    let mut clients = Vec::with_capacity(args.conns);
    for i in 0..args.conns.max(1) {
        let ep = &args.endpoints[i % args.endpoints.len()];
        let uri = if ep.contains("://") {
            ep.clone()
        } else {
            format!("{scheme}://{ep}")
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("bad endpoint {ep}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = dialer
            .connect(endpoint)
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        clients.push(KvClient::new(channel));
    }
    Ok(clients)
}

async fn run_client(
    mut kv: KvClient<Channel>,
    seed: u64,
    args: std::sync::Arc<Args>,
    deadline: Instant,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> Samples {
    let mut rng = SplitMix(seed);
    let mut samples = Samples::default();
    let value = vec![b'v'; args.value_size];
    loop {
        // With --total, each request takes a ticket: total-1 down to 0, each exactly once.
        let mut ticket = None;
        if args.total.is_some() {
            let left = budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if left <= 0 {
                break;
            }
            ticket = u64::try_from(left - 1).ok();
        } else if Instant::now() >= deadline {
            break;
        }
        let n = match ticket {
            Some(t) if args.sequential_keys => t,
            _ => rng.next(),
        };
        let key = format!("load/{:012}", n % args.key_space.max(1)).into_bytes();
        let is_get = rng.unit() < args.read_ratio;
        let start = Instant::now();
        let result = if is_get {
            kv.range(RangeRequest {
                key,
                ..Default::default()
            })
            .await
            .map(|_| ())
        } else {
            kv.put(PutRequest {
                key,
                value: value.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ())
        };
        let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        match result {
            Ok(()) if is_get => samples.gets.push(micros),
            Ok(()) => samples.puts.push(micros),
            Err(status) => {
                samples.errors += 1;
                if samples.first_error.is_none() {
                    samples.first_error =
                        Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
    samples
}

fn report(label: &str, what: &str, lat: &mut [u32], elapsed: Duration) {
    lat.sort_unstable();
    println!(
        "{label:>10} {what:<4} ops={:<9} ops/s={:<10.0} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        percentile(lat, 100.0),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.endpoints.is_empty() || args.clients == 0 {
        bail!("need at least one endpoint and one client");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be within 0.0..=1.0");
    }
    let conns = connect(&args).await?;
    let args = std::sync::Arc::new(args);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
        args.total
            .map_or(i64::MAX, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    ));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let kv = conns[c % conns.len()].clone();
        tasks.push(tokio::spawn(run_client(
            kv,
            0x5EED ^ c as u64,
            args.clone(),
            deadline,
            budget.clone(),
        )));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.context("client task panicked")?);
    }
    let elapsed = start.elapsed();
    let total = all.puts.len() + all.gets.len();
    println!(
        "{:>10} all  ops={:<9} ops/s={:<10.0} errors={} clients={} elapsed={:.2}s",
        args.label,
        total,
        total as f64 / elapsed.as_secs_f64(),
        all.errors,
        args.clients,
        elapsed.as_secs_f64()
    );
    if !all.puts.is_empty() {
        report(&args.label, "put", &mut all.puts, elapsed);
    }
    if !all.gets.is_empty() {
        report(&args.label, "get", &mut all.gets, elapsed);
    }
    if let Some(e) = all.first_error {
        println!("{:>10} first error: {e}", args.label);
    }
    Ok(())
}
