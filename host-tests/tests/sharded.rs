//! `start_sharded`: the download split over several instances gives the plain download's
//! files, and the files shards complete ahead of their turn never outlive an error, a close or
//! a drop. (tests/properties.rs also runs every property with 1 to 4 shards.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use walrestore_host::{ErrorKind, Fault, MemReplica, ShardedDownload, WalFile};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

const GENERATION: &str = "0123456789abcdef";

/// Eight indexes of two segments each; returns the replica and each index's WAL.
fn replica() -> (MemReplica, Vec<Vec<u8>>) {
    replica_without(None)
}

/// `replica()`, with no segment of index `missing`.
fn replica_without(missing: Option<u64>) -> (MemReplica, Vec<Vec<u8>>) {
    let mem = MemReplica::new();
    let mut rng = SplitMix::new(7);
    let mut wals = Vec::new();
    for index in 0..8u64 {
        let mut wal = Vec::new();
        for size in [20_000, 9_000] {
            let raw = rng.blob(size);
            if Some(index) == missing {
                continue;
            }
            mem.insert(
                GENERATION,
                index,
                wal.len() as u64,
                FrameStyle::LITESTREAM.compress(&raw),
            );
            wal.extend(raw);
        }
        wals.push(wal);
    }
    (mem, wals)
}

async fn start(mem: &MemReplica, out: &std::path::Path, shards: u32) -> ShardedDownload {
    runtime()
        .start_sharded(
            Arc::new(mem.clone()),
            out,
            &options(GENERATION, 0, 7, 4),
            shards,
        )
        .await
        .expect("start the component")
}

async fn next_file(d: &mut ShardedDownload) -> WalFile {
    d.next().await.expect("a file").expect("not the end")
}

/// Waits until the shards have completed files ahead of the first (slow) index: the output
/// then holds final names that were not handed out yet.
async fn wait_for_files_ahead(out: &std::path::Path) {
    let ahead = final_name("wal", 7);
    for _ in 0..500 {
        if entries(out).contains(&ahead) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the second shard never completed index 7 ahead of its turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_files_equal_the_plain_download() {
    let (mem, wals) = replica();
    for shards in [1, 2, 3, 4] {
        let out = tempfile::tempdir().unwrap();
        let mut d = start(&mem, out.path(), shards).await;
        assert_eq!(d.shards(), shards as usize);
        for (index, wal) in wals.iter().enumerate() {
            let file = next_file(&mut d).await;
            assert_file(&file, out.path(), "wal", index as u64, wal, "sharded");
        }
        assert_eq!(d.next().await, Ok(None));
        assert_eq!(d.next().await, Ok(None), "none forever after the end");
        assert_eq!(d.count().await, Ok(8));
        assert_eq!(d.close().await, Ok(()));
        assert!(d.peak_guest_memory_bytes() > 0);
    }
    let stats = wait_released(&mem).await;
    assert!(stats.max_outstanding <= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_removes_the_files_completed_ahead() {
    let (mem, _) = replica();
    // Index 1 is slow and then corrupt; the second shard (4..=7) finishes meanwhile.
    mem.set_fault(1, 0, Fault::Delay(Duration::from_millis(300)));
    mem.insert(GENERATION, 1, 20_000, b"not an lz4 frame".to_vec());
    let out = tempfile::tempdir().unwrap();
    let mut d = start(&mem, out.path(), 2).await;
    let first = next_file(&mut d).await;
    assert_eq!(first.index, 0);
    wait_for_files_ahead(out.path()).await;
    let e = d.next().await.expect_err("index 1 is corrupt");
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e:?}");
    assert_eq!((e.index, e.offset), (Some(1), Some(20_000)), "{e:?}");
    assert_only_returned(out.path(), std::slice::from_ref(&first), "after the error");
    assert_eq!(d.next().await, Err(e.clone()), "the error again");
    assert_eq!(d.count().await, Ok(1));
    assert_eq!(d.close().await, Err(e));
    assert_only_returned(out.path(), &[first], "after close");
    assert_eq!(wait_released(&mem).await.outstanding, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_later_shard_comes_before_any_file() {
    let (mem, _) = replica_without(Some(6));
    let out = tempfile::tempdir().unwrap();
    let mut d = start(&mem, out.path(), 2).await;
    let e = d.next().await.expect_err("index 6 is missing");
    assert_eq!(e.kind, ErrorKind::WalNotFound, "{e:?}");
    assert_eq!(
        e.message,
        format!("wal not found: generation={GENERATION} index=0000000000000006")
    );
    assert_eq!(d.close().await, Err(e));
    assert_only_returned(out.path(), &[], "after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_remove_the_files_completed_ahead() {
    for drop_it in [false, true] {
        let (mem, _) = replica();
        mem.set_fault(1, 0, Fault::Delay(Duration::from_millis(300)));
        let out = tempfile::tempdir().unwrap();
        let mut d = start(&mem, out.path(), 2).await;
        let first = next_file(&mut d).await;
        wait_for_files_ahead(out.path()).await;
        if drop_it {
            drop(d);
            // The drop's cleanup runs on a task.
            for _ in 0..500 {
                if entries(out.path()).len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } else {
            assert_eq!(d.close().await, Ok(()));
            assert_eq!(d.next().await.map_err(|e| e.kind), Err(ErrorKind::Closed));
        }
        assert_only_returned(out.path(), std::slice::from_ref(&first), "closed early");
        assert_eq!(wait_released(&mem).await.outstanding, 0, "drop {drop_it}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_starts_before_the_first_next() {
    let (mem, _) = replica();
    let out = tempfile::tempdir().unwrap();
    let mut d = start(&mem, out.path(), 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mem.stats().fetches, 0, "fetched before the first next");
    assert_eq!(d.close().await, Ok(()));
    assert_only_returned(out.path(), &[], "closed before next");
}
