//! Fault soak, bounded in time: a replica of 2000 segments with random latencies, slow
//! streams, small chunks and small listing pages goes through the component (plain and
//! sharded) byte for byte, also with 5% of the fetches failing, 2% of the streams breaking
//! and listings interrupted (retried, resumed); then, several times, one permanent fault at a
//! random segment gives
//! the right error at the right index after every earlier file, no file under a final name
//! for it or beyond, no temporary file, and no replica work left running after close.
//!
//! The seed is fixed so that a failure repeats; `SOAK_SEED=<n>` explores others.

mod common;

use std::sync::Arc;
use std::time::Duration;

use walrestore_host::{ErrorKind, Fault, MemReplica, ReplicaError, TransientFaults};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

const GENERATION: &str = "000000000000050a";
const INDEXES: u64 = 250;
const SEGMENTS: u64 = 8;

struct Soak {
    mem: MemReplica,
    wals: Vec<Vec<u8>>,
    /// `(index, offset, compressed)` of every segment.
    segments: Vec<(u64, u64, Vec<u8>)>,
}

fn seed() -> u64 {
    std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x50a4)
}

/// The replica, with random latencies (0-2 ms) on a third of the fetches and slow streams on
/// a few.
fn soak(seed: u64) -> Soak {
    let mut rng = SplitMix::new(seed);
    let mem = MemReplica::new();
    mem.set_page_size(97);
    mem.set_chunk_size(1500);
    let mut wals = Vec::new();
    let mut segments = Vec::new();
    for index in 0..INDEXES {
        let mut wal = Vec::new();
        for _ in 0..SEGMENTS {
            let len = rng.range(1000, 8000) as usize;
            let raw = rng.blob(len);
            let frame = FrameStyle::LITESTREAM.compress(&raw);
            let offset = wal.len() as u64;
            mem.insert(GENERATION, index, offset, frame.clone());
            match rng.range(0, 30) {
                0..=9 => {
                    let delay = Duration::from_micros(rng.range(0, 2000));
                    mem.set_fault(index, offset, Fault::Delay(delay));
                }
                10 => {
                    let delay = Duration::from_micros(rng.range(10, 200));
                    mem.set_fault(index, offset, Fault::SlowStream(delay));
                }
                _ => {}
            }
            segments.push((index, offset, frame));
            wal.extend(raw);
        }
        wals.push(wal);
    }
    Soak {
        mem,
        wals,
        segments,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_segments_arrive_byte_for_byte() {
    let s = soak(seed());
    for (parallelism, shards) in [(16, 1), (64, 1), (16, 2)] {
        let ctx = format!("seed {} parallelism {parallelism} shards {shards}", seed());
        s.mem.reset_stats();
        let out = tempfile::tempdir().unwrap();
        let o = options(GENERATION, 0, INDEXES - 1, parallelism);
        let mut d = runtime()
            .start_sharded(Arc::new(s.mem.clone()), out.path(), &o, shards)
            .await
            .unwrap();
        let mut files = Vec::new();
        while let Some(file) = d.next().await.unwrap_or_else(|e| panic!("{ctx}: {e}")) {
            files.push(file);
        }
        assert_eq!(files.len() as u64, INDEXES, "{ctx}");
        for (file, (index, wal)) in files.iter().zip(s.wals.iter().enumerate()) {
            assert_file(file, out.path(), "wal", index as u64, wal, &ctx);
        }
        assert_eq!(d.close().await, Ok(()), "{ctx}");
        assert_only_returned(out.path(), &files, &ctx);
        let stats = wait_released(&s.mem).await;
        assert_eq!(stats.outstanding, 0, "{ctx}: replica work left running");
        assert!(
            stats.max_outstanding <= u64::from(parallelism),
            "{ctx}: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_fault_anywhere_fails_at_its_index_and_leaves_nothing_behind() {
    let mut rng = SplitMix::new(seed() ^ 0xfa17);
    for round in 0..8 {
        let s = soak(seed().wrapping_add(round));
        let (index, offset, frame) =
            s.segments[rng.range(0, s.segments.len() as u64 - 1) as usize].clone();
        let kind = rng.range(0, 4);
        let expect = match kind {
            0 => {
                let e = ReplicaError::Unavailable("soak: store unavailable".into());
                s.mem.set_fault(index, offset, Fault::FetchError(e));
                (ErrorKind::ReplicaUnavailable, "read WAL segment: soak")
            }
            1 => {
                let e = ReplicaError::NotFound("soak: deleted by retention".into());
                s.mem.set_fault(index, offset, Fault::FetchError(e));
                (ErrorKind::ReplicaNotFound, "read WAL segment: soak")
            }
            2 => {
                let after = rng.range(0, frame.len() as u64 - 1) as usize;
                let message = "soak: connection reset".to_string();
                s.mem
                    .set_fault(index, offset, Fault::MidStream { after, message });
                (ErrorKind::ReplicaOther, "copy WAL segment: soak")
            }
            3 => {
                let mut bad = frame.clone();
                let at = rng.range(0, bad.len() as u64 - 1) as usize;
                let flip = 1 + rng.range(0, 254) as u8;
                bad[at] ^= flip;
                s.mem.insert(GENERATION, index, offset, bad);
                (ErrorKind::Corrupt, "corrupt WAL segment: ")
            }
            _ => {
                let mut bad = frame.clone();
                bad.truncate(rng.range(0, bad.len() as u64 - 1) as usize);
                s.mem.insert(GENERATION, index, offset, bad);
                (ErrorKind::Corrupt, "corrupt WAL segment: ")
            }
        };
        let parallelism = [4, 16, 64][rng.range(0, 2) as usize];
        let shards = 1 + rng.range(0, 1) as u32;
        let ctx = format!(
            "seed {} round {round}: fault {kind} at index {index:#x} offset {offset:#x}, \
             parallelism {parallelism}, shards {shards}",
            seed()
        );
        let out = tempfile::tempdir().unwrap();
        let o = options(GENERATION, 0, INDEXES - 1, parallelism);
        let mut d = runtime()
            .start_sharded(Arc::new(s.mem.clone()), out.path(), &o, shards)
            .await
            .unwrap();
        let mut files = Vec::new();
        let err = loop {
            match d.next().await {
                Ok(Some(file)) => files.push(file),
                Ok(None) => panic!("{ctx}: the download must fail"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind, expect.0, "{ctx}: {err:?}");
        assert!(err.message.starts_with(expect.1), "{ctx}: {err:?}");
        assert_eq!(
            (err.index, err.offset),
            (Some(index), Some(offset)),
            "{ctx}"
        );
        assert_eq!(files.len() as u64, index, "{ctx}: every earlier file");
        for (file, wal) in files.iter().zip(&s.wals) {
            assert_file(file, out.path(), "wal", file.index, wal, &ctx);
        }
        assert_only_returned(out.path(), &files, &ctx);
        assert_eq!(d.close().await, Err(err), "{ctx}");
        assert_only_returned(out.path(), &files, &ctx);
        drop(d);
        let stats = wait_released(&s.mem).await;
        assert_eq!(stats.outstanding, 0, "{ctx}: replica work left running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_to_the_same_bytes() {
    let s = soak(seed());
    s.mem.set_transient_faults(Some(TransientFaults {
        fail_permille: 50,
        cut_permille: 20,
        seed: seed(),
    }));
    s.mem.set_listing_breaks(5, 2);
    for (parallelism, shards) in [(16, 1), (16, 2)] {
        let ctx = format!("seed {} parallelism {parallelism} shards {shards}", seed());
        s.mem.reset_stats();
        let out = tempfile::tempdir().unwrap();
        let mut o = options(GENERATION, 0, INDEXES - 1, parallelism);
        // Enough attempts that 5% failures never exhaust them (5 in a row: 1 in 3 million).
        o.max_attempts = 8;
        let mut d = runtime()
            .start_sharded(Arc::new(s.mem.clone()), out.path(), &o, shards)
            .await
            .unwrap();
        let mut files = Vec::new();
        while let Some(file) = d.next().await.unwrap_or_else(|e| panic!("{ctx}: {e}")) {
            files.push(file);
        }
        assert_eq!(files.len() as u64, INDEXES, "{ctx}");
        for (file, (index, wal)) in files.iter().zip(s.wals.iter().enumerate()) {
            assert_file(file, out.path(), "wal", index as u64, wal, &ctx);
        }
        let stats = d.stats().await.unwrap();
        assert_eq!(d.close().await, Ok(()), "{ctx}");
        assert_only_returned(out.path(), &files, &ctx);
        let replica = wait_released(&s.mem).await;
        assert_eq!(replica.outstanding, 0, "{ctx}: replica work left running");
        assert!(replica.max_outstanding <= u64::from(parallelism), "{ctx}");
        // About 7% of 2000 fetches failed and were retried; streams resumed.
        assert!(stats.retries >= 50, "{ctx}: {stats:?}");
        assert!(stats.resumed_bytes > 0, "{ctx}: {stats:?}");
        assert_eq!(stats.fetches, replica.fetches, "{ctx}: {stats:?}");
    }
}
