//! Retries: a fetch that fails with `unavailable`, or whose stream breaks, is tried again after
//! a backoff (a broken stream from the byte where it stopped), as is a listing that fails with
//! `unavailable`; other errors are not retried, and attempts run out.

mod common;

use std::sync::{Arc, Mutex};

use walrestore_host::{
    DownloadStats, ErrorKind, Fault, LoggingReplica, MemReplica, Replica, ReplicaError,
};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

/// Four indexes of one 30 KiB segment each; returns the replica and the WALs.
fn replica() -> (MemReplica, Vec<Vec<u8>>) {
    let mem = MemReplica::new();
    mem.set_chunk_size(4096);
    let mut rng = SplitMix::new(3);
    let mut wals = Vec::new();
    for index in 0..4 {
        let raw = rng.blob(30_000);
        mem.insert(GEN0, index, 0, FrameStyle::LITESTREAM.compress(&raw));
        wals.push(raw);
    }
    (mem, wals)
}

/// Downloads everything through a `LoggingReplica`; returns the files' contents, the error,
/// the stats and the log.
async fn run(
    mem: &MemReplica,
    max_attempts: u32,
) -> (
    Vec<Vec<u8>>,
    Option<walrestore_host::DownloadError>,
    DownloadStats,
    Vec<String>,
) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let logged: Arc<dyn Replica> = Arc::new(LoggingReplica::new(
        Arc::new(mem.clone()),
        Arc::new(move |line| sink.lock().unwrap().push(line)),
    ));
    let out = tempfile::tempdir().unwrap();
    let mut o = options(GEN0, 0, 3, 2);
    o.max_attempts = max_attempts;
    let mut d = start(logged, out.path(), &o).await;
    let (files, err) = drain(&mut d).await;
    let stats = d.stats().await.unwrap();
    let _ = d.close().await;
    assert_only_returned(out.path(), &files, "after the download");
    let contents = files
        .iter()
        .map(|f| std::fs::read(&f.path).unwrap())
        .collect();
    let log = lines.lock().unwrap().clone();
    (contents, err, stats, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_fetches_are_retried() {
    let (mem, wals) = replica();
    mem.set_fault(1, 0, Fault::UnavailableTimes(2));
    let (files, err, stats, log) = run(&mem, 5).await;
    assert_eq!(err, None);
    assert_eq!(files, wals);
    assert_eq!(stats.retries, 2, "{stats:?}");
    assert_eq!(stats.fetches, 6, "{stats:?}");
    assert_eq!(mem.stats().fetches, 6);
    let retries: Vec<&String> = log.iter().filter(|l| l.starts_with("retry:")).collect();
    assert_eq!(retries.len(), 2, "{log:?}");
    assert!(retries[1].ends_with("from byte 0 (attempt 3)"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_where_it_stopped() {
    let (mem, wals) = replica();
    mem.set_fault(
        2,
        0,
        Fault::CutTimes {
            times: 2,
            after: 10_000,
        },
    );
    let (files, err, stats, log) = run(&mem, 5).await;
    assert_eq!(err, None);
    assert_eq!(files, wals, "byte for byte after two resumes");
    assert_eq!(stats.retries, 2, "{stats:?}");
    // The first attempt broke after 10000 bytes; the second resumed there and broke at once
    // (the cut is at byte 10000 of the segment); the third resumed there too.
    assert_eq!(stats.resumed_bytes, 10_000, "{stats:?}");
    let retries: Vec<&String> = log.iter().filter(|l| l.starts_with("retry:")).collect();
    assert_eq!(retries.len(), 2, "{log:?}");
    assert!(
        retries.iter().all(|l| l.contains("from byte 10000")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_are_not_retried_and_attempts_run_out() {
    let (mem, _) = replica();
    mem.set_fault(
        1,
        0,
        Fault::FetchError(ReplicaError::NotFound("deleted by retention".into())),
    );
    let (files, err, stats, _) = run(&mem, 5).await;
    let err = err.unwrap();
    assert_eq!((err.kind, err.index), (ErrorKind::ReplicaNotFound, Some(1)));
    assert_eq!((files.len(), stats.retries), (1, 0));

    let (mem, _) = replica();
    mem.set_fault(
        2,
        0,
        Fault::FetchError(ReplicaError::Unavailable("down for good".into())),
    );
    let (files, err, stats, _) = run(&mem, 3).await;
    let err = err.unwrap();
    assert_eq!(
        (err.kind, err.index),
        (ErrorKind::ReplicaUnavailable, Some(2))
    );
    assert!(
        err.message.starts_with("read WAL segment: down for good"),
        "{err:?}"
    );
    assert_eq!((files.len(), stats.retries), (2, 2));

    // One attempt is Litestream's behaviour: the first failure is the error.
    let (mem, _) = replica();
    mem.set_fault(1, 0, Fault::UnavailableTimes(1));
    let (files, err, stats, _) = run(&mem, 1).await;
    assert_eq!(err.unwrap().kind, ErrorKind::ReplicaUnavailable);
    assert_eq!((files.len(), stats.retries), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_listing_is_started_again() {
    let (mem, wals) = replica();
    mem.set_page_size(1);
    mem.set_listing_breaks(2, 2);
    let (files, err, stats, log) = run(&mem, 5).await;
    assert_eq!(err, None);
    assert_eq!(files, wals);
    assert_eq!(stats.retries, 2, "{stats:?}");
    assert_eq!(mem.stats().listings, 3);
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("retry: listing"))
            .count(),
        2,
        "{log:?}"
    );
    assert_eq!(stats.fetches, 4, "no segment fetched twice: {stats:?}");
}
