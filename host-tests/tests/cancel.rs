//! Cancellation: closing (or dropping) a download while fetches are in flight returns at
//! once, releases every fetch, and leaves only the files already returned.

mod common;

use std::sync::Arc;
use std::time::Duration;

use walrestore_host::{Fault, MemReplica};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

const GENERATION: &str = "00000000000000ca";
const INDEXES: u64 = 24;
const SEGMENTS: u64 = 4;

/// `INDEXES` indexes of `SEGMENTS` segments each; returns the replica and the WAL of index 0.
fn replica() -> (MemReplica, Vec<u8>) {
    let mem = MemReplica::new();
    let mut rng = SplitMix::new(7);
    let mut first = Vec::new();
    for index in 0..INDEXES {
        let mut offset = 0;
        for _ in 0..SEGMENTS {
            let raw = rng.blob(20_000);
            mem.insert(
                GENERATION,
                index,
                offset,
                FrameStyle::LITESTREAM.compress(&raw),
            );
            offset += raw.len() as u64;
            if index == 0 {
                first.extend(raw);
            }
        }
    }
    (mem, first)
}

/// Index 0 arrives quickly; every later fetch is slow (latency, or a slow stream).
fn slow(mem: &MemReplica, stream: bool) {
    mem.set_chunk_size(1024);
    for index in 1..INDEXES {
        for segment in 0..SEGMENTS {
            let offset = segment * 20_000;
            let fault = if stream {
                Fault::SlowStream(Duration::from_millis(200))
            } else {
                Fault::Delay(Duration::from_secs(30))
            };
            mem.set_fault(index, offset, fault);
        }
    }
}

/// Waits (up to 2 s, a liveness bound) until `out` holds no `*.tmp` file.
async fn wait_no_tmp(out: &std::path::Path) -> Vec<String> {
    let tmp = || -> Vec<String> {
        entries(out)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    for _ in 0..200 {
        if tmp().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tmp()
}

async fn take_one_then(stream: bool, close: bool) {
    let ctx = format!(
        "slow {}, {}",
        if stream { "streams" } else { "fetches" },
        if close { "close" } else { "drop" }
    );
    let (mem, first) = replica();
    slow(&mem, stream);
    let out = tempfile::tempdir().unwrap();
    let mut d = start(
        Arc::new(mem.clone()),
        out.path(),
        &options(GENERATION, 0, INDEXES - 1, 8),
    )
    .await;
    let file = d.next().await.unwrap().expect("the first file");
    assert_file(&file, out.path(), "wal", 0, &first, &ctx);
    // Fetches of later indexes are in flight now (or about to be).
    assert!(mem.stats().fetches > SEGMENTS, "{ctx}: {:?}", mem.stats());
    if close {
        // The 30 s fetches must be cancelled, not awaited: a liveness bound of 10 s.
        let closed = tokio::time::timeout(Duration::from_secs(10), d.close()).await;
        assert_eq!(
            closed.expect("close hangs on slow fetches"),
            Ok(()),
            "{ctx}"
        );
        assert_eq!(d.count().await, Ok(1), "{ctx}: count");
    } else {
        drop(d);
    }
    let stats = wait_released(&mem).await;
    assert_eq!(
        stats.outstanding, 0,
        "{ctx}: fetches left outstanding: {stats:?}"
    );
    assert!(stats.max_outstanding <= 8, "{ctx}: {stats:?}");
    assert_eq!(
        wait_no_tmp(out.path()).await,
        Vec::<String>::new(),
        "{ctx}: unfinished files left"
    );
    assert_only_returned(out.path(), &[file], &ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_slow_fetches() {
    take_one_then(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_slow_streams() {
    take_one_then(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_slow_fetches() {
    take_one_then(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_slow_streams() {
    take_one_then(true, false).await;
}
