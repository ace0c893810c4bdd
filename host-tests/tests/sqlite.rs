//! Replicas made from a real SQLite database, with many segments per WAL index, in every LZ4
//! frame style (two encoders), through both backends and several parallelisms: every
//! restored WAL file equals, byte for byte, the WAL that SQLite wrote.

mod common;

use std::sync::{Arc, OnceLock};

use walrestore_host::{DirReplica, Replica};

use common::sqlite_replica::{FrameStyle, GeneratedIndex, Spec, generate, verify_wal};
use common::*;

const GENERATION: &str = "00c0ffee00c0ffee";

/// Three databases, generated once per test binary.
fn datasets() -> &'static [(&'static str, Vec<GeneratedIndex>)] {
    static DATA: OnceLock<Vec<(&'static str, Vec<GeneratedIndex>)>> = OnceLock::new();
    DATA.get_or_init(|| {
        vec![
            (
                // Five indexes of 20–40 segments and one of 110, starting at index 0x10.
                "page 4096",
                generate(&Spec {
                    first_index: 0x10,
                    ..Spec::new(vec![24, 31, 40, 20, 28, 110], 1)
                }),
            ),
            (
                // Small pages, three transactions per segment.
                "page 1024",
                generate(&Spec {
                    page_size: 1024,
                    transactions_per_segment: 3,
                    ..Spec::new(vec![8, 12, 6], 2)
                }),
            ),
            (
                // 64 KiB pages and big rows: segments of several LZ4 blocks.
                "page 65536",
                generate(&Spec {
                    page_size: 65536,
                    max_blob: 200_000,
                    ..Spec::new(vec![3, 5], 3)
                }),
            ),
        ]
    })
}

/// Downloads `min..=max` from `replica` and compares every file with SQLite's WAL.
async fn restore_and_compare(
    replica: Arc<dyn Replica>,
    indexes: &[GeneratedIndex],
    min: u64,
    max: u64,
    parallelism: u32,
    ctx: &str,
) {
    let out = tempfile::tempdir().unwrap();
    let mut d = start(
        replica,
        out.path(),
        &options(GENERATION, min, max, parallelism),
    )
    .await;
    let (files, err) = drain(&mut d).await;
    assert_eq!(err, None, "{ctx}");
    let want: Vec<&GeneratedIndex> = indexes
        .iter()
        .filter(|ix| (min..=max).contains(&ix.index))
        .collect();
    assert_eq!(files.len(), want.len(), "{ctx}: number of files");
    for (file, ix) in files.iter().zip(&want) {
        assert_file(file, out.path(), "wal", ix.index, &ix.wal, ctx);
        verify_wal(&std::fs::read(&file.path).unwrap());
    }
    assert_eq!(d.count().await, Ok(want.len() as u64), "{ctx}: count");
    assert_eq!(d.close().await, Ok(()), "{ctx}: close");
    assert_only_returned(out.path(), &files, ctx);
}

/// Every frame style, through `DirReplica` and `MemReplica`, at a parallelism that rotates
/// through 1, 4 and 32 (and all three for Litestream's own style).
async fn all_styles(dataset: usize) {
    let (name, indexes) = &datasets()[dataset];
    let min = indexes.first().unwrap().index;
    let max = indexes.last().unwrap().index;
    for (i, (style_name, style)) in FrameStyle::variants().into_iter().enumerate() {
        let parallelisms: &[u32] = if style == FrameStyle::LITESTREAM {
            &[1, 4, 32]
        } else {
            [&[1u32][..], &[4], &[32]][i % 3]
        };
        let replica_dir = tempfile::tempdir().unwrap();
        common::sqlite_replica::write_dir_replica(replica_dir.path(), GENERATION, indexes, &style);
        let mem = mem_replica(GENERATION, indexes, &style);
        for &p in parallelisms {
            let ctx = format!("{name}, {style_name}, DirReplica, parallelism {p}");
            let dir = Arc::new(DirReplica::new(replica_dir.path()));
            restore_and_compare(dir, indexes, min, max, p, &ctx).await;

            let ctx = format!("{name}, {style_name}, MemReplica, parallelism {p}");
            mem.reset_stats();
            restore_and_compare(Arc::new(mem.clone()), indexes, min, max, p, &ctx).await;
            let stats = wait_released(&mem).await;
            assert_eq!(stats.outstanding, 0, "{ctx}: fetches left outstanding");
            assert!(
                stats.max_outstanding <= u64::from(p),
                "{ctx}: {} fetches outstanding at once",
                stats.max_outstanding
            );
            let segments: usize = indexes.iter().map(|ix| ix.segments.len()).sum();
            assert_eq!(
                stats.fetches, segments as u64,
                "{ctx}: one fetch per segment"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_4096_many_segments_every_style() {
    all_styles(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_1024_grouped_transactions_every_style() {
    all_styles(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_65536_multi_block_segments_every_style() {
    all_styles(2).await;
}

/// A sub-range in the middle, with small listing pages and small stream chunks, so that
/// listing pages and stream reads split segments and indexes at odd places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_range_small_pages_and_chunks() {
    let (_, indexes) = &datasets()[0];
    let mem = mem_replica(GENERATION, indexes, &FrameStyle::LITESTREAM);
    mem.set_page_size(7);
    mem.set_chunk_size(1000);
    for p in [1, 4, 32] {
        let ctx = format!("indexes 0x11..=0x14, pages of 7, chunks of 1000, parallelism {p}");
        restore_and_compare(Arc::new(mem.clone()), indexes, 0x11, 0x14, p, &ctx).await;
    }
    assert_eq!(wait_released(&mem).await.outstanding, 0);
}

/// The test data is what SQLite really writes: valid WALs (checksums and salts included),
/// cut into contiguous segments, and the shapes the tests above rely on.
#[test]
fn generated_data_has_the_intended_shape() {
    for (name, indexes) in datasets() {
        for (ix, next) in indexes.iter().zip(indexes.iter().skip(1)) {
            assert_eq!(next.index, ix.index + 1, "{name}: consecutive indexes");
        }
        for ix in indexes {
            verify_wal(&ix.wal);
            let mut offset = 0;
            for (segment_offset, bytes) in &ix.segments {
                assert_eq!(*segment_offset, offset, "{name}: index {}", ix.index);
                assert_eq!(
                    &ix.wal[offset as usize..][..bytes.len()],
                    &bytes[..],
                    "{name}: index {}",
                    ix.index
                );
                offset += bytes.len() as u64;
            }
            assert_eq!(offset, ix.wal.len() as u64, "{name}: index {}", ix.index);
        }
    }
    let (_, page_4096) = &datasets()[0];
    assert!(page_4096.iter().any(|ix| ix.segments.len() >= 100));
    let (_, page_65536) = &datasets()[2];
    let biggest = page_65536
        .iter()
        .flat_map(|ix| ix.segments.iter().map(|(_, s)| s.len()))
        .max()
        .unwrap();
    assert!(
        biggest > 256 * 1024,
        "a segment must span several 64 KiB LZ4 blocks"
    );
}
