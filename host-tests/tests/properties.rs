//! Properties over random replica shapes, delays, parallelisms, ranges and shard counts
//! (`start_sharded`: 1 is the plain download), through the real component: files come back in order with exactly the concatenated segments, the number of
//! fetches outstanding never exceeds the parallelism, and a single fault anywhere yields the
//! right error at the right index after every earlier file, with nothing left behind.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use walrestore_host::{DownloadError, ErrorKind, Fault, MemReplica, ReplicaError};

use common::sqlite_replica::{FrameStyle, SplitMix};
use common::*;

const GENERATION: &str = "0123456789abcdef";

/// One tokio runtime for every case of this binary.
fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// 48 cases by default (a few seconds); `PROPTEST_CASES` runs more when hunting bugs.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

/// A random replica and a download of part of it.
#[derive(Clone, Debug)]
struct Shape {
    first_index: u64,
    /// Uncompressed size of every segment, per index.
    sizes: Vec<Vec<usize>>,
    parallelism: u32,
    /// Positions (into `sizes`) of the first and last index to download.
    lo: usize,
    hi: usize,
    list_page: usize,
    chunk: usize,
    prefix: &'static str,
    seed: u64,
    /// Component instances the download is split over (`start_sharded`).
    shards: u32,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        0u64..5000,
        prop::collection::vec(prop::collection::vec(1usize..3000, 1..8), 1..20),
        1u32..=16,
        (any::<Index>(), any::<Index>()),
        1usize..40,
        1usize..5000,
        prop::sample::select(vec!["wal", "restore", "x.y"]),
        any::<u64>(),
        1u32..=4,
    )
        .prop_map(
            |(first_index, sizes, parallelism, (a, b), list_page, chunk, prefix, seed, shards)| {
                let (a, b) = (a.index(sizes.len()), b.index(sizes.len()));
                Shape {
                    first_index,
                    parallelism,
                    lo: a.min(b),
                    hi: a.max(b),
                    sizes,
                    list_page,
                    chunk,
                    prefix,
                    seed,
                    shards,
                }
            },
        )
}

/// A replica built from a shape: the expected WAL of every index and each segment's
/// `(offset, frame)`.
struct Built {
    mem: MemReplica,
    wals: Vec<Vec<u8>>,
    segments: Vec<Vec<(u64, Vec<u8>)>>,
}

impl Shape {
    fn index(&self, pos: usize) -> u64 {
        self.first_index + pos as u64
    }

    fn build(&self) -> Built {
        let mut rng = SplitMix::new(self.seed);
        let mut wals = Vec::new();
        let mut segments = Vec::new();
        for sizes in &self.sizes {
            let mut wal = Vec::new();
            let mut segs = Vec::new();
            for &size in sizes {
                let raw = rng.blob(size);
                segs.push((wal.len() as u64, FrameStyle::LITESTREAM.compress(&raw)));
                wal.extend(raw);
            }
            wals.push(wal);
            segments.push(segs);
        }
        let mem = MemReplica::new();
        mem.set_page_size(self.list_page);
        mem.set_chunk_size(self.chunk);
        Built {
            mem,
            wals,
            segments,
        }
    }

    /// Inserts the segments (except those `skip` says) and random small delays.
    fn fill(&self, built: &Built, skip: impl Fn(usize, u64) -> bool) {
        let mut rng = SplitMix::new(self.seed ^ 0xde1a);
        for (pos, segs) in built.segments.iter().enumerate() {
            for (offset, frame) in segs {
                if skip(pos, *offset) {
                    continue;
                }
                built
                    .mem
                    .insert(GENERATION, self.index(pos), *offset, frame.clone());
                if rng.next_u64().is_multiple_of(2) {
                    let delay = Duration::from_micros(rng.range(0, 3000));
                    built
                        .mem
                        .set_fault(self.index(pos), *offset, Fault::Delay(delay));
                }
            }
        }
    }
}

/// One fault injected into the segment or index chosen by `target` / `segment`.
#[derive(Clone, Debug)]
enum FaultCase {
    Fetch(u8),
    MidStream(Index),
    Truncate(Index),
    Flip(Index, u8),
    Trailing(Vec<u8>),
    RemoveSegment,
    RemoveIndex,
}

fn fault_case() -> impl Strategy<Value = FaultCase> {
    prop_oneof![
        (0u8..3).prop_map(FaultCase::Fetch),
        any::<Index>().prop_map(FaultCase::MidStream),
        any::<Index>().prop_map(FaultCase::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| FaultCase::Flip(i, x)),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(FaultCase::Trailing),
        Just(FaultCase::RemoveSegment),
        Just(FaultCase::RemoveIndex),
    ]
}

/// Downloads `shape`'s range and returns the files before the error and the error.
async fn run(
    shape: &Shape,
    built: &Built,
) -> (
    tempfile::TempDir,
    walrestore_host::ShardedDownload,
    Vec<walrestore_host::WalFile>,
    Option<DownloadError>,
) {
    let out = tempfile::tempdir().unwrap();
    let mut o = options(
        GENERATION,
        shape.index(shape.lo),
        shape.index(shape.hi),
        shape.parallelism,
    );
    o.prefix = shape.prefix.to_string();
    let mut d = runtime()
        .start_sharded(Arc::new(built.mem.clone()), out.path(), &o, shape.shards)
        .await
        .expect("start the component");
    let mut files = Vec::new();
    let err = loop {
        match d.next().await {
            Ok(Some(file)) => files.push(file),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    (out, d, files, err)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn files_in_order_equal_the_segments(shape in shape()) {
        tokio_rt().block_on(async {
            let built = shape.build();
            shape.fill(&built, |_, _| false);
            let (out, mut d, files, err) = run(&shape, &built).await;
            assert_eq!(err, None);
            assert_eq!(files.len(), shape.hi - shape.lo + 1);
            for (file, pos) in files.iter().zip(shape.lo..) {
                assert_file(file, out.path(), shape.prefix, shape.index(pos), &built.wals[pos], "");
            }
            assert_eq!(d.next().await, Ok(None), "none forever after the end");
            assert_eq!(d.count().await, Ok(files.len() as u64));
            assert_eq!(d.close().await, Ok(()));
            assert_only_returned(out.path(), &files, "after close");
            let stats = wait_released(&built.mem).await;
            assert_eq!(stats.outstanding, 0, "fetches left outstanding");
            assert!(
                stats.max_outstanding <= u64::from(shape.parallelism),
                "{} fetches outstanding at once, parallelism {}",
                stats.max_outstanding,
                shape.parallelism
            );
            let in_range: usize = shape.sizes[shape.lo..=shape.hi].iter().map(Vec::len).sum();
            assert_eq!(stats.fetches, in_range as u64, "one fetch per segment in range");
        });
    }

    #[test]
    fn one_fault_fails_at_its_index(
        shape in shape(),
        target in any::<Index>(),
        segment in any::<Index>(),
        case in fault_case(),
    ) {
        tokio_rt().block_on(async {
            let built = shape.build();
            let pos = shape.lo + target.index(shape.hi - shape.lo + 1);
            let index = shape.index(pos);
            let segs = &built.segments[pos];
            let j = segment.index(segs.len());
            let (offset, frame) = segs[j].clone();

            // What the fault turns into: (kind, text the message must contain, offset).
            let mut case = case;
            if matches!(case, FaultCase::RemoveSegment) && segs.len() < 3 {
                // Only a segment with one after it leaves a detectable gap.
                case = FaultCase::Fetch(2);
            }
            let expect: (ErrorKind, String, Option<u64>) = match &case {
                FaultCase::Fetch(k) => {
                    let msg = format!("marker {k}");
                    let (e, kind) = match k {
                        0 => (ReplicaError::NotFound(msg.clone()), ErrorKind::ReplicaNotFound),
                        1 => (ReplicaError::Unavailable(msg.clone()), ErrorKind::ReplicaUnavailable),
                        _ => (ReplicaError::Other(msg.clone()), ErrorKind::ReplicaOther),
                    };
                    shape.fill(&built, |_, _| false);
                    built.mem.set_fault(index, offset, Fault::FetchError(e));
                    (kind, format!("read WAL segment: {msg}"), Some(offset))
                }
                FaultCase::MidStream(at) => {
                    shape.fill(&built, |_, _| false);
                    let after = at.index(frame.len());
                    let message = "stream broke".to_string();
                    built.mem.set_fault(index, offset, Fault::MidStream { after, message });
                    (ErrorKind::ReplicaOther, "copy WAL segment: stream broke".into(), Some(offset))
                }
                FaultCase::Truncate(_) | FaultCase::Flip(..) | FaultCase::Trailing(_) => {
                    let mut bad = frame.clone();
                    match &case {
                        FaultCase::Truncate(at) => bad.truncate(at.index(frame.len())),
                        FaultCase::Flip(at, x) => bad[at.index(frame.len())] ^= x,
                        FaultCase::Trailing(garbage) => bad.extend(garbage),
                        _ => unreachable!(),
                    }
                    shape.fill(&built, |p, o| p == pos && o == offset);
                    built.mem.insert(GENERATION, index, offset, bad);
                    (ErrorKind::Corrupt, String::new(), Some(offset))
                }
                FaultCase::RemoveSegment => {
                    // Neither the first segment nor the last: one that has one after it.
                    let removed = segs[1 + j % (segs.len() - 2)].0;
                    shape.fill(&built, |p, o| p == pos && o == removed);
                    (
                        ErrorKind::MissingOffset,
                        format!(
                            "missing WAL offset: generation={GENERATION} index={index:016x} offset={removed:016x}"
                        ),
                        Some(removed),
                    )
                }
                FaultCase::RemoveIndex => {
                    shape.fill(&built, |p, _| p == pos);
                    (
                        ErrorKind::WalNotFound,
                        format!("wal not found: generation={GENERATION} index={index:016x}"),
                        None,
                    )
                }
            };
            let ctx = format!("{case:?} at index {index:#x} segment {j}");

            let (out, mut d, files, err) = run(&shape, &built).await;
            let err = err.unwrap_or_else(|| panic!("{ctx}: the download must fail"));
            assert_eq!(err.kind, expect.0, "{ctx}: {err:?}");
            assert!(err.message.contains(&expect.1), "{ctx}: {err:?}");
            assert!(!err.message.contains('\n'), "{ctx}: one line: {err:?}");
            assert_eq!(err.index, Some(index), "{ctx}: {err:?}");
            if expect.2.is_some() {
                assert_eq!(err.offset, expect.2, "{ctx}: {err:?}");
            }

            // A gap in the listing is reported before any file; any other failure at its
            // index's turn, after every earlier file.
            let returned = if expect.0 == ErrorKind::WalNotFound { 0 } else { pos - shape.lo };
            assert_eq!(files.len(), returned, "{ctx}: files before the error");
            for (file, p) in files.iter().zip(shape.lo..) {
                assert_file(file, out.path(), shape.prefix, shape.index(p), &built.wals[p], &ctx);
            }
            assert_no_final_file(out.path(), shape.prefix, index, &ctx);
            assert_eq!(d.next().await, Err(err.clone()), "{ctx}: next again");
            assert_eq!(d.count().await, Ok(returned as u64), "{ctx}: count");
            assert_eq!(d.close().await, Err(err), "{ctx}: close returns the error");
            assert_only_returned(out.path(), &files, &ctx);
            let stats = wait_released(&built.mem).await;
            assert_eq!(stats.outstanding, 0, "{ctx}: fetches left outstanding");
            assert!(stats.max_outstanding <= u64::from(shape.parallelism), "{ctx}: {stats:?}");
        });
    }
}
