//! The host's limits: a timeout stops a download waiting on its replica and one busy
//! decoding, a memory limit stops a guest that needs more; each ends with one clear `Limit`
//! error, no unfinished file, and no replica work left running.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use walrestore_host::{ErrorKind, MemReplica};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_a_download_waiting_on_its_replica() {
    let mem = MemReplica::new();
    mem.insert(GEN0, 0, 0, FrameStyle::LITESTREAM.compress(b"zero"));
    mem.insert(GEN0, 1, 0, FrameStyle::LITESTREAM.compress(b"one"));
    mem.set_fetch_latency(Duration::from_secs(30));
    let out = tempfile::tempdir().unwrap();
    let mut o = options(GEN0, 0, 1, 2);
    o.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
    let e = d
        .next()
        .await
        .expect_err("the replica never answers in time");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind, ErrorKind::Limit, "{e:?}");
    assert_eq!(
        e.message,
        "timed out: the download did not finish within 0.300 s"
    );
    // The unfinished file of index 0 (created while its fetch was out) is gone.
    assert_only_returned(out.path(), &[], "after the timeout");
    assert_eq!(d.next().await, Err(e.clone()), "the same error again");
    assert_eq!(d.close().await, Err(e));
    drop(d);
    assert_eq!(
        wait_released(&mem).await.outstanding,
        0,
        "fetches cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_a_guest_busy_decoding() {
    // 256 MiB of zeros in one segment: seconds of decoding and writing, not 50 ms.
    let mem = MemReplica::new();
    mem.insert(
        GEN0,
        0,
        0,
        FrameStyle::LITESTREAM.compress(&vec![0u8; 256 << 20]),
    );
    let out = tempfile::tempdir().unwrap();
    let mut o = options(GEN0, 0, 0, 1);
    o.timeout = Some(Duration::from_millis(50));
    let started = Instant::now();
    let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
    let e = d.next().await.expect_err("decoding 256 MiB takes longer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind, ErrorKind::Limit, "{e:?}");
    assert!(e.message.starts_with("timed out"), "{e:?}");
    assert_only_returned(out.path(), &[], "after the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_stops_a_guest_that_needs_more() {
    // One incompressible 8 MiB segment: the guest must hold it.
    let mut rng = SplitMix::new(5);
    let mem = MemReplica::new();
    mem.insert(
        GEN0,
        0,
        0,
        FrameStyle::LITESTREAM.compress(b"small first file"),
    );
    mem.insert(
        GEN0,
        1,
        0,
        FrameStyle::LITESTREAM.compress(&rng.blob(8 << 20)),
    );
    let out = tempfile::tempdir().unwrap();
    let mut o = options(GEN0, 0, 1, 1);
    o.max_memory = Some(4 << 20);
    let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
    let first = d.next().await.expect("index 0 fits").expect("a file");
    let e = d.next().await.expect_err("index 1 does not fit");
    assert_eq!(e.kind, ErrorKind::Limit, "{e:?}");
    assert!(
        e.message
            .starts_with("memory limit of 4194304 bytes reached: the component asked for "),
        "{e:?}"
    );
    assert!(d.peak_guest_memory_bytes() <= 4 << 20);
    assert_eq!(d.close().await, Err(e));
    assert_only_returned(out.path(), &[first], "after the memory limit");
    drop(d);
    assert_eq!(
        wait_released(&mem).await.outstanding,
        0,
        "fetches cancelled"
    );

    // Without the limit the same download completes.
    let out = tempfile::tempdir().unwrap();
    let mut d = start(Arc::new(mem.clone()), out.path(), &options(GEN0, 0, 1, 1)).await;
    let (files, err) = drain(&mut d).await;
    assert_eq!((files.len(), err), (2, None));
}
