//! The many-seeds simulator runner.
//!
//! ```text
//! cargo run --release -p flotilla-sim -- --seeds 0..10000 --steps 5000
//! cargo run --release -p flotilla-sim -- --seed 1234 --steps 5000 --verbose
//! ```
//!
//! Options: `--seeds A..B` (half-open range), `--seed N`, `--steps N` (safety-phase ticks per
//! seed, default 5000), `--verbose` (print the trace), `--jobs N` (worker threads; each seed
//! still runs alone on one thread, so results do not depend on N), `--mutation NAME` (turn on
//! a deliberate caller bug: forget-vote, send-before-persist, read-before-apply, lying-acks),
//! `--keep-going` (do not stop at the first failing seed).
//!
//! The simulator's `check!` assertions are always on, so a release build checks as much as a
//! debug one; the core's own `debug_assert!`s are only active in debug builds, which the runner
//! prints at start.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use flotilla_sim as sim;
use sim::Options;
use sim::faults::Mutation;

struct Args {
    seeds: std::ops::Range<u64>,
    steps: u64,
    verbose: bool,
    jobs: u64,
    mutation: Mutation,
    keep_going: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 0..100,
        steps: 5000,
        verbose: false,
        jobs: 1,
        mutation: Mutation::None,
        keep_going: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seeds" => {
                let v = value("--seeds")?;
                let (a, b) = v.split_once("..").ok_or("--seeds takes A..B")?;
                let a: u64 = a.parse().map_err(|e| format!("--seeds: {e}"))?;
                let b: u64 = b.parse().map_err(|e| format!("--seeds: {e}"))?;
                args.seeds = a..b;
            }
            "--seed" => {
                let n: u64 = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
                args.seeds = n..n + 1;
            }
            "--steps" => {
                args.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?;
            }
            "--jobs" => {
                args.jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?;
            }
            "--mutation" => {
                let v = value("--mutation")?;
                args.mutation = Mutation::parse(&v).ok_or(format!("unknown mutation {v}"))?;
            }
            "--verbose" => args.verbose = true,
            "--keep-going" => args.keep_going = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "sim: seeds {}..{}, {} steps each, mutation {}, {} job(s); core debug assertions {}",
        args.seeds.start,
        args.seeds.end,
        args.steps,
        args.mutation.name(),
        args.jobs,
        if cfg!(debug_assertions) {
            "on"
        } else {
            "off (simulator checks stay on)"
        }
    );
    // The runner times itself to report seeds/s; nothing inside a simulation reads a clock.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let next = AtomicU64::new(args.seeds.start);
    let seeds_run = AtomicU64::new(0);
    let ticks = AtomicU64::new(0);
    let early_crashes = AtomicU64::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= args.seeds.end {
                        return;
                    }
                    let options = Options {
                        seed,
                        steps: args.steps,
                        verbose: args.verbose,
                        mutation: args.mutation,
                    };
                    let result = sim::run(&options);
                    seeds_run.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(outcome) => {
                            ticks.fetch_add(outcome.stats.ticks, Ordering::Relaxed);
                            early_crashes.fetch_add(
                                outcome.stats.crashes_after_early_send,
                                Ordering::Relaxed,
                            );
                            if args.verbose || args.seeds.end - args.seeds.start == 1 {
                                println!(
                                    "seed {seed}: ok, {} voters, trace {:016x}, {:?}",
                                    outcome.cluster_size, outcome.trace_hash, outcome.stats
                                );
                            }
                        }
                        Err(failure) => {
                            println!("{failure}");
                            if let Ok(mut f) = failures.lock() {
                                f.push(failure.to_string());
                            }
                            if !args.keep_going {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    let done = seeds_run.load(Ordering::Relaxed);
                    if done.is_multiple_of(1000) {
                        let secs = started.elapsed().as_secs_f64();
                        println!("  ... {done} seeds, {:.1} seeds/s", done as f64 / secs);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let n = seeds_run.load(Ordering::Relaxed);
    let violations = failures.lock().map(|f| f.len()).unwrap_or(0);
    println!(
        "sim: {n} seeds run, {} ticks, {violations} violations, {} crashes between early sends and sync, {:.1}s, {:.2} seeds/s, {:.0} ticks/s",
        ticks.load(Ordering::Relaxed),
        early_crashes.load(Ordering::Relaxed),
        secs,
        n as f64 / secs,
        ticks.load(Ordering::Relaxed) as f64 / secs
    );
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
