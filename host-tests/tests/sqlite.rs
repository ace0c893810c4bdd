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
        &wal_options(GENERATION, min, max, parallelism),
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

/// WALs that SQLite wrote, damaged behind valid LZ4 frames: the component refuses each at its
/// index's turn with a `corrupt` error naming the frame and the byte where it starts, after
/// every earlier file and with nothing under the damaged file's name. With the check off, the
/// same bytes are restored as they are (Litestream's behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_wals_are_refused_naming_the_frame() {
    use walrestore_host::ErrorKind;

    let (_, indexes) = &datasets()[1]; // page 1024: frames of 24 + 1024 bytes
    let frame = 24 + 1024;
    let target = 1; // the second index
    let ix = &indexes[target];
    assert!(ix.wal.len() > 32 + 4 * frame, "index long enough to damage");
    let last_frame = (ix.wal.len() - 32) / frame - 1;
    let at = move |n: usize| 32 + n * frame; // where frame n (0-based) starts
    let open_frame = (0..last_frame)
        .rev()
        .find(|&n| ix.wal[at(n) + 4..at(n) + 8] == [0; 4])
        .expect("a transaction of several frames");

    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage, usize, &str)> = vec![
        (
            "flipped page byte",
            Box::new(move |w| w[at(2) + 24 + 500] ^= 0x01),
            2,
            "checksum mismatch",
        ),
        (
            "wrong salt",
            Box::new(move |w| w[at(3) + 9] ^= 0x80),
            3,
            "salt mismatch",
        ),
        (
            "truncated last frame",
            Box::new(move |w| w.truncate(at(last_frame) + 100)),
            last_frame,
            "truncated",
        ),
        (
            "missing commit",
            // Cut after the last frame that does not commit its transaction.
            Box::new(move |w| w.truncate(at(open_frame + 1))),
            open_frame,
            "without a commit frame",
        ),
    ];
    for (name, damage, bad_frame, text) in cases {
        let mut damaged = indexes.to_vec();
        let mut wal = ix.wal.clone();
        damage(&mut wal);
        // Re-cut at the same offsets (the last segment takes what is left).
        let offsets: Vec<u64> = ix.segments.iter().map(|(o, _)| *o).collect();
        let mut segments = Vec::new();
        for (i, &o) in offsets.iter().enumerate() {
            let end = offsets
                .get(i + 1)
                .map_or(wal.len(), |&n| n as usize)
                .min(wal.len());
            if (o as usize) < end {
                segments.push((o, wal[o as usize..end].to_vec()));
            }
        }
        damaged[target].wal = wal.clone();
        damaged[target].segments = segments;
        let mem = mem_replica(GENERATION, &damaged, &FrameStyle::LITESTREAM);
        let (min, max) = (indexes[0].index, indexes[indexes.len() - 1].index);

        let out = tempfile::tempdir().unwrap();
        let mut d = start(
            Arc::new(mem.clone()),
            out.path(),
            &wal_options(GENERATION, min, max, 4),
        )
        .await;
        let (files, err) = drain(&mut d).await;
        let err = err.unwrap_or_else(|| panic!("{name}: must be refused"));
        assert_eq!(err.kind, ErrorKind::Corrupt, "{name}: {err:?}");
        assert_eq!(err.index, Some(ix.index), "{name}: {err:?}");
        assert_eq!(err.offset, Some(at(bad_frame) as u64), "{name}: {err:?}");
        assert!(
            err.message.starts_with("corrupt WAL file: wal "),
            "{name}: {err:?}"
        );
        assert!(
            err.message.contains(&format!("frame {}", bad_frame + 1)),
            "{name}: {err:?}"
        );
        assert!(err.message.contains(text), "{name}: {err:?}");
        assert!(err.message.ends_with(&format!(
            "(generation={GENERATION} index={:016x})",
            ix.index
        )));
        assert_eq!(files.len(), target, "{name}: the files before it");
        assert_no_final_file(out.path(), "wal", ix.index, name);
        assert_eq!(d.close().await, Err(err), "{name}");
        assert_only_returned(out.path(), &files, name);

        // With the check off the damaged bytes come back as they are.
        let out = tempfile::tempdir().unwrap();
        let mut d = start(
            Arc::new(mem.clone()),
            out.path(),
            &options(GENERATION, min, max, 4),
        )
        .await;
        let (files, err) = drain(&mut d).await;
        assert_eq!(err, None, "{name}: check off");
        assert_file(&files[target], out.path(), "wal", ix.index, &wal, name);
    }
}
