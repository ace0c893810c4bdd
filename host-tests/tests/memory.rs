//! Bounded guest memory: whatever the total size downloaded, the component's linear memory
//! stays within `parallelism × largest compressed segment + 16 MiB`.

mod common;

use std::io::Write;
use std::sync::Arc;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use walrestore_host::MemReplica;

const MIB: u64 = 1 << 20;

/// Incompressible bytes (xorshift), so that compressed segments are as large as raw ones.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An LZ4 frame as Litestream writes it (independent 4 MiB blocks, content checksum), or with
/// linked blocks, which need the decoder's largest buffers.
fn lz4(data: &[u8], linked: bool) -> Vec<u8> {
    let mut info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .content_checksum(true);
    if linked {
        info = info.block_mode(BlockMode::Linked);
    }
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Downloads `indexes × segments` segments of `segment_len` noise bytes each at
/// `parallelism` (streamed in `chunk`-byte pieces, or the replica's default), checks every
/// file, and checks the guest's peak memory against the bound.
async fn check_bound(
    indexes: u64,
    segments: u64,
    segment_len: usize,
    parallelism: u32,
    linked: bool,
    chunk: Option<usize>,
) {
    let replica = MemReplica::new();
    if let Some(chunk) = chunk {
        replica.set_chunk_size(chunk);
    }
    let mut expected = Vec::new();
    let mut largest = 0u64;
    let mut total = 0u64;
    for index in 0..indexes {
        let mut wal = Vec::new();
        for s in 0..segments {
            let raw = noise(index * 1000 + s, segment_len);
            let frame = lz4(&raw, linked);
            largest = largest.max(frame.len() as u64);
            total += frame.len() as u64;
            replica.insert(common::GEN0, index, wal.len() as u64, frame);
            wal.extend_from_slice(&raw);
        }
        expected.push(wal);
    }
    let bound = u64::from(parallelism) * largest + 16 * MIB;
    assert!(
        total > 2 * bound,
        "the download ({total} B) must dwarf the bound ({bound} B) for the check to mean anything"
    );

    let out = tempfile::tempdir().unwrap();
    let options = common::options(common::GEN0, 0, indexes - 1, parallelism);
    let mut download = common::start(Arc::new(replica.clone()), out.path(), &options).await;
    for (index, wal) in expected.iter().enumerate() {
        let file = download
            .next()
            .await
            .expect("download")
            .expect("a file per index");
        assert_eq!(file.index, index as u64);
        let got = std::fs::read(&file.path).unwrap();
        assert!(got == *wal, "index {index}: content differs");
        // Free the disk as we go; the download may be large.
        std::fs::remove_file(&file.path).unwrap();
    }
    assert_eq!(download.next().await.unwrap(), None);
    download.close().await.unwrap();

    let peak = download.peak_guest_memory_bytes();
    assert!(peak > 0, "the store limiter saw no memory");
    assert!(
        peak <= bound,
        "guest memory peaked at {peak} B, above parallelism {parallelism} × largest segment \
         {largest} B + 16 MiB = {bound} B"
    );
    assert!(replica.stats().max_outstanding <= u64::from(parallelism));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_segments_stay_within_the_bound() {
    // 16 × 4 MiB at parallelism 2: 64 MiB through a 24 MiB bound.
    check_bound(16, 1, 4 << 20, 2, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_segments_per_index_stay_within_the_bound() {
    // 4 indexes × 16 segments × 1 MiB at parallelism 8.
    check_bound(4, 16, 1 << 20, 8, false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_blocks_stay_within_the_bound() {
    check_bound(12, 1, 6 << 20, 1, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_segment_chunks_stay_within_the_bound() {
    // A host may hand a segment over in one piece (an in-memory store, a buffered body): the
    // guest must not hold it twice.
    check_bound(12, 1, 6 << 20, 1, true, Some(usize::MAX)).await;
    check_bound(16, 1, 4 << 20, 2, false, Some(usize::MAX)).await;
}
