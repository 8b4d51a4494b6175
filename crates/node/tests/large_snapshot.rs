//! A member that missed a large write load catches up by a snapshot image of tens of MB, and
//! keeps answering its clients (Maintenance.Status, serializable reads) and its health checks
//! while it installs the image: the image is written into a state generation of its own with
//! no lock that a reader waits on, and switched to in a moment.
//!
//! This is what a pod that lost its volume lives through when it rejoins a loaded cluster.
//! Before, the image was one sled batch written under the state machine's lock: minutes on
//! a large store, with client threads stuck behind it and the pod's probes failing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, wait_until};
use etcd_client::{Client, GetOptions};

/// Values of 4 KiB: 6,000 of them make an image of about 24 MB.
const VALUE: usize = 4096;
const KEYS: usize = 6000;
/// The longest a Status may take while the image is installed.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

async fn client(ep: &str) -> Client {
    Client::connect([ep], None).await.expect("connect")
}

/// Puts, retrying while the cluster answers UNAVAILABLE ("leader changed", "no leader"): on a
/// loaded two-core machine an election can happen during this load, and an etcd client retries
/// those. Any other error fails the test. Returns how many attempts were retried.
async fn put_retrying(cl: &mut Client, key: String, value: Vec<u8>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut retried = 0;
    loop {
        match cl.put(key.clone(), value.clone(), None).await {
            Ok(_) => return retried,
            Err(etcd_client::Error::GRpcStatus(s))
                if s.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                retried += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("put {key}: {e:?}"),
        }
    }
}

#[test]
fn a_member_far_behind_installs_a_large_image_and_keeps_answering() {
    let mut c = Cluster::start(3, &["--snapshot-threshold", "100"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let lagging = (leader + 1) % 3;
    c.members[lagging].kill9();
    let writers: Vec<String> = (0..3)
        .filter(|i| *i != lagging)
        .map(|i| c.members[i].endpoint())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16 {
            let eps = writers.clone();
            tasks.spawn(async move {
                let mut cl = Client::connect(eps, None).await.expect("connect");
                for i in (w..KEYS).step_by(16) {
                    let value: Vec<u8> = (0..VALUE).map(|j| ((i + j) % 251) as u8).collect();
                    put_retrying(&mut cl, format!("big/{i:05}"), value).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer");
        }
    });

    // Writes go on while it catches up, fast enough that the leader compacts its log many
    // times over during one install: the entries after the image must still be there when
    // the member is done with it, or it needs another image, and another.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let eps = writers.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let writers = (0..8).map(|w| {
                    let eps = eps.clone();
                    let stop = stop.clone();
                    async move {
                        let mut cl = Client::connect(eps, None).await.expect("connect");
                        let (mut n, mut retried) = (0u64, 0u64);
                        while !stop.load(Ordering::Relaxed) {
                            retried +=
                                put_retrying(&mut cl, format!("during/{w}/{n:08}"), b"x".to_vec())
                                    .await;
                            n += 1;
                        }
                        (n, retried)
                    }
                });
                futures::future::join_all(writers)
                    .await
                    .into_iter()
                    .fold((0, 0), |(n, r), (wn, wr)| (n + wn, r + wr))
            })
        })
    };
    c.members[lagging].start();
    let ep = c.members[lagging].endpoint();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answered = false;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the member did not catch up within 120 s"
        );
        let probe = Instant::now();
        let status = rt.block_on(async {
            tokio::time::timeout(ANSWER_WITHIN * 5, async {
                let mut cl = client(&ep).await;
                cl.status().await
            })
            .await
        });
        let took = probe.elapsed();
        match status {
            Ok(Ok(_)) => answered = true,
            // Before the process serves its first answer, the port may refuse.
            _ if !answered => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            other => panic!("Status failed after {took:?} while catching up: {other:?}"),
        }
        slowest = slowest.max(took);
        let health = c.members[lagging]
            .http_get("/healthz")
            .map(|(code, _)| code);
        assert_eq!(health, Some(200), "/healthz while catching up");
        let count = rt.block_on(async {
            client(&ep)
                .await
                .get(
                    "big/",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_count_only()
                            .with_serializable(),
                    ),
                )
                .await
                .map(|r| r.count())
        });
        if count.ok() == Some(KEYS as i64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (during, retried) = load.join().expect("load");
    eprintln!(
        "caught up in {:?} while {during} more writes went in ({retried} retried after \
         UNAVAILABLE); the slowest Status took {slowest:?}",
        started.elapsed()
    );
    assert!(
        slowest < ANSWER_WITHIN,
        "a Status took {slowest:?} while the image was installed"
    );
    // It installed an image: the log it missed was compacted away. (The counter moves once
    // the log store has recorded the image too, a moment after the state serves it.)
    wait_until(Duration::from_secs(10), "the snapshot counter", || {
        let snaps = c.members[lagging].metric("flotilla_snapshots_total")?;
        (snaps >= 1.0).then_some(())
    });
    // Few images: not one after another because the log after each was gone.
    let snaps = c.members[lagging]
        .metric("flotilla_snapshots_total")
        .expect("snapshot counter");
    assert!(snaps <= 2.0, "{snaps} images installed to catch up once");
    // And it serves as a full member: a write through it reaches everyone.
    let eps = c.endpoints();
    common::etcdctl_ok(&ep, &["put", "after-catch-up", "yes"]);
    wait_until(
        Duration::from_secs(10),
        "every member has the write",
        || (common::count_prefix(&eps, "after-catch-up", true) == Some(1)).then_some(()),
    );
}
