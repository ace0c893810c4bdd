//! Litestream replicas made from a real SQLite database.
//!
//! SQLite runs in WAL mode with automatic checkpoints off. After every transaction (or group
//! of transactions) the bytes SQLite appended to the `-wal` file become one segment, cut at a
//! transaction boundary as Litestream cuts them; `PRAGMA wal_checkpoint(TRUNCATE)` then starts
//! the next WAL index, whose WAL SQLite writes again from offset 0 with a fresh header.
//!
//! Shared by the integration tests and by `examples/make_sample_replica.rs`, so it uses only
//! rusqlite, lz4_flex and lz4 (C liblz4), never the host library.

#![allow(dead_code)] // each includer uses a different part

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// Magic numbers of a SQLite WAL header (big-endian and little-endian frame checksums).
pub const WAL_MAGIC: [u32; 2] = [0x377f_0682, 0x377f_0683];
/// Size of the WAL file header.
pub const WAL_HEADER_SIZE: usize = 32;
/// Size of a WAL frame header (before each page).
pub const WAL_FRAME_HEADER_SIZE: usize = 24;

/// One WAL index as SQLite wrote it.
#[derive(Clone, Debug)]
pub struct GeneratedIndex {
    /// The WAL index.
    pub index: u64,
    /// The complete WAL file of this index: what a download must produce.
    pub wal: Vec<u8>,
    /// Its segments, `(offset, uncompressed bytes)`, cut at transaction boundaries; their
    /// concatenation is `wal`.
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// What to make SQLite write.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Database page size (512..=65536, a power of two).
    pub page_size: u32,
    /// WAL index of the first WAL file.
    pub first_index: u64,
    /// Segments per WAL index, one entry per index.
    pub segments_per_index: Vec<usize>,
    /// Transactions per segment (several transactions may share a segment).
    pub transactions_per_segment: usize,
    /// Upper bound for the size of a row's blob; the mix also holds small rows.
    pub max_blob: usize,
    /// Seed of the deterministic pseudo-random content.
    pub seed: u64,
}

impl Spec {
    /// Page size 4096, one transaction per segment, blobs up to 6 KiB.
    pub fn new(segments_per_index: Vec<usize>, seed: u64) -> Spec {
        Spec {
            page_size: 4096,
            first_index: 0,
            segments_per_index,
            transactions_per_segment: 1,
            max_blob: 6 * 1024,
            seed,
        }
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same database.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// Bytes that are partly random and partly repetitive, so LZ4 has work to do either way.
    pub fn blob(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let words: [&[u8]; 6] = [
            b"litestream ",
            b"wal ",
            b"segment ",
            b"sqlite ",
            b"page ",
            b"frame ",
        ];
        while out.len() < len {
            if self.next_u64().is_multiple_of(3) {
                out.extend_from_slice(&self.next_u64().to_le_bytes());
            } else {
                out.extend_from_slice(words[(self.next_u64() % 6) as usize]);
            }
        }
        out.truncate(len);
        out
    }
}

/// Runs SQLite as `spec` says and returns the WAL indexes it wrote, in order.
pub fn generate(spec: &Spec) -> Vec<GeneratedIndex> {
    assert!(spec.transactions_per_segment >= 1);
    let dir = tempfile::tempdir().expect("temp dir for the SQLite database");
    let db_path = dir.path().join("db");
    let wal_path = PathBuf::from(format!("{}-wal", db_path.display()));
    let conn = Connection::open(&db_path).expect("open SQLite database");
    // The page size must be set before the database file is created (i.e. before WAL mode).
    conn.execute_batch(&format!("PRAGMA page_size = {};", spec.page_size))
        .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "SQLite did not switch to WAL mode");
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = NORMAL;")
        .unwrap();
    let page_size: u32 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, spec.page_size, "SQLite ignored the page size");

    let mut rng = SplitMix::new(spec.seed);
    let mut rows: u64 = 0;
    let mut out = Vec::new();
    for (i, &segment_count) in spec.segments_per_index.iter().enumerate() {
        assert!(segment_count >= 1, "an index needs at least one segment");
        let index = spec.first_index + i as u64;
        let mut wal = Vec::new();
        let mut segments = Vec::new();
        for _ in 0..segment_count {
            for _ in 0..spec.transactions_per_segment {
                transaction(
                    &conn,
                    &mut rng,
                    &mut rows,
                    spec.max_blob,
                    out.is_empty() && wal.is_empty(),
                );
            }
            let now = read_wal(&wal_path, spec.page_size);
            assert!(
                now.len() > wal.len(),
                "a committed transaction appended nothing to the WAL"
            );
            assert_eq!(
                &now[..wal.len()],
                &wal[..],
                "SQLite rewrote committed WAL bytes of index {index}"
            );
            segments.push((wal.len() as u64, now[wal.len()..].to_vec()));
            wal = now;
        }
        assert_eq!(verify_wal(&wal), spec.page_size);
        out.push(GeneratedIndex {
            index,
            wal,
            segments,
        });

        // Start the next index: everything into the database, WAL back to empty.
        let (busy, _log, _done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0, "checkpoint was blocked");
        assert!(
            read_wal(&wal_path, spec.page_size).is_empty(),
            "the WAL holds live frames after checkpoint(TRUNCATE)"
        );
    }
    drop(conn);
    out
}

/// One transaction: inserts, updates and deletes of rows of varied sizes.
fn transaction(
    conn: &Connection,
    rng: &mut SplitMix,
    rows: &mut u64,
    max_blob: usize,
    first: bool,
) {
    let tx = conn.unchecked_transaction().unwrap();
    if first {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
            .unwrap();
    }
    let inserts = rng.range(1, 4);
    for _ in 0..inserts {
        *rows += 1;
        // Mostly small rows, some spanning overflow pages.
        let len = if rng.next_u64().is_multiple_of(4) {
            rng.range(1, max_blob as u64) as usize
        } else {
            rng.range(1, 300.min(max_blob as u64)) as usize
        };
        let text = format!("row {} of {}", *rows, rng.next_u64());
        tx.execute(
            "INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)",
            params![*rows as i64, text, rng.blob(len)],
        )
        .unwrap();
    }
    if *rows > 4 && rng.next_u64().is_multiple_of(2) {
        let id = rng.range(1, *rows) as i64;
        let len = rng.range(1, 200) as usize;
        tx.execute(
            "UPDATE t SET v = ?1 WHERE id = ?2",
            params![rng.blob(len), id],
        )
        .unwrap();
    }
    if *rows > 8 && rng.next_u64().is_multiple_of(5) {
        let id = rng.range(1, *rows) as i64;
        tx.execute("DELETE FROM t WHERE id = ?1", params![id])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// The live part of the WAL file: the header and the frames that carry the header's salts.
/// After a checkpoint that did not truncate, SQLite overwrites the file from offset 0 and
/// stale frames (with older salts) may follow; they are not part of this index's WAL.
fn read_wal(path: &Path, page_size: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).unwrap();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return bytes,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
    if bytes.len() < WAL_HEADER_SIZE {
        assert!(bytes.is_empty(), "partial WAL header");
        return bytes;
    }
    let salts = &bytes[16..24];
    let frame = WAL_FRAME_HEADER_SIZE + page_size as usize;
    let mut end = WAL_HEADER_SIZE;
    while end + frame <= bytes.len() && &bytes[end + 8..end + 16] == salts {
        end += frame;
    }
    bytes.truncate(end);
    bytes
}

/// Checks that `wal` is a SQLite WAL of whole frames for `page_size`; panics if not.
pub fn check_wal(wal: &[u8], page_size: u32) {
    assert!(wal.len() >= WAL_HEADER_SIZE, "WAL shorter than its header");
    let magic = u32::from_be_bytes(wal[0..4].try_into().unwrap());
    assert!(WAL_MAGIC.contains(&magic), "bad WAL magic {magic:#x}");
    let header_page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap());
    assert_eq!(header_page_size, page_size, "WAL header page size");
    let frame = WAL_FRAME_HEADER_SIZE + page_size as usize;
    assert_eq!(
        (wal.len() - WAL_HEADER_SIZE) % frame,
        0,
        "WAL is not whole frames"
    );
}

/// Checks a WAL as SQLite would when it recovers it: header magic, page size, whole frames,
/// the header checksum and the cumulative checksum and salts of every frame. Returns the page
/// size.
pub fn verify_wal(wal: &[u8]) -> u32 {
    assert!(wal.len() >= WAL_HEADER_SIZE, "WAL shorter than its header");
    let be = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
    let magic = be(&wal[0..4]);
    assert!(WAL_MAGIC.contains(&magic), "bad WAL magic {magic:#x}");
    let page_size = be(&wal[8..12]);
    assert!(
        (512..=65536).contains(&page_size) && page_size.is_power_of_two(),
        "bad WAL page size {page_size}"
    );
    check_wal(wal, page_size);
    // The low bit of the magic says in which byte order the checksummed words are read.
    let big_endian = magic & 1 == 1;
    let word = |b: &[u8]| {
        let b: [u8; 4] = b[..4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let checksum = |mut s: (u32, u32), data: &[u8]| {
        for pair in data.chunks_exact(8) {
            s.0 = s.0.wrapping_add(word(&pair[0..4])).wrapping_add(s.1);
            s.1 = s.1.wrapping_add(word(&pair[4..8])).wrapping_add(s.0);
        }
        s
    };
    let mut s = checksum((0, 0), &wal[0..24]);
    assert_eq!(
        s,
        (be(&wal[24..28]), be(&wal[28..32])),
        "WAL header checksum"
    );
    let frame = WAL_FRAME_HEADER_SIZE + page_size as usize;
    for (i, f) in wal[WAL_HEADER_SIZE..].chunks_exact(frame).enumerate() {
        assert_eq!(&f[8..16], &wal[16..24], "salts of WAL frame {i}");
        s = checksum(s, &f[0..8]);
        s = checksum(s, &f[WAL_FRAME_HEADER_SIZE..]);
        assert_eq!(
            s,
            (be(&f[16..20]), be(&f[20..24])),
            "checksum of WAL frame {i}"
        );
    }
    page_size
}

/// LZ4 block size of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    K64,
    K256,
    M1,
    M4,
}

/// Which LZ4 frame encoder writes a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// lz4_flex (pure Rust), the encoder the host crate uses.
    Flex,
    /// The C reference library through the `lz4` crate, at this compression level
    /// (0 = fast, 9+ = high compression).
    Liblz4 { level: u32 },
}

/// How a segment is written as an LZ4 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStyle {
    pub encoder: Encoder,
    pub block: Block,
    /// Linked blocks (a block may refer to the previous one) instead of independent ones.
    pub linked: bool,
    pub block_checksums: bool,
    pub content_checksum: bool,
    /// Write the uncompressed size into the frame header.
    pub content_size: bool,
}

impl FrameStyle {
    /// Litestream's writer (pierrec/lz4 v4 defaults): independent 4 MiB blocks, content
    /// checksum, no block checksums, no content size.
    pub const LITESTREAM: FrameStyle = FrameStyle {
        encoder: Encoder::Flex,
        block: Block::M4,
        linked: false,
        block_checksums: false,
        content_checksum: true,
        content_size: false,
    };

    /// Every variant the tests exercise, with a name for messages.
    pub fn variants() -> Vec<(&'static str, FrameStyle)> {
        let base = FrameStyle::LITESTREAM;
        let c = FrameStyle {
            encoder: Encoder::Liblz4 { level: 0 },
            ..base
        };
        vec![
            ("litestream", base),
            (
                "flex-64k",
                FrameStyle {
                    block: Block::K64,
                    ..base
                },
            ),
            (
                "flex-256k",
                FrameStyle {
                    block: Block::K256,
                    ..base
                },
            ),
            (
                "flex-1m",
                FrameStyle {
                    block: Block::M1,
                    ..base
                },
            ),
            (
                "flex-64k-linked",
                FrameStyle {
                    block: Block::K64,
                    linked: true,
                    ..base
                },
            ),
            (
                "flex-block-checksums",
                FrameStyle {
                    block: Block::K64,
                    block_checksums: true,
                    ..base
                },
            ),
            (
                "flex-content-size",
                FrameStyle {
                    content_size: true,
                    ..base
                },
            ),
            (
                "flex-no-content-checksum",
                FrameStyle {
                    content_checksum: false,
                    ..base
                },
            ),
            (
                "flex-everything",
                FrameStyle {
                    block: Block::K64,
                    linked: true,
                    block_checksums: true,
                    content_size: true,
                    ..base
                },
            ),
            ("liblz4-4m", c),
            (
                "liblz4-64k-linked",
                FrameStyle {
                    block: Block::K64,
                    linked: true,
                    ..c
                },
            ),
            (
                "liblz4-256k-block-checksums-hc",
                FrameStyle {
                    encoder: Encoder::Liblz4 { level: 9 },
                    block: Block::K256,
                    block_checksums: true,
                    ..c
                },
            ),
            (
                "liblz4-1m-content-size-no-checksum",
                FrameStyle {
                    block: Block::M1,
                    content_size: true,
                    content_checksum: false,
                    ..c
                },
            ),
        ]
    }

    /// `data` as one LZ4 frame in this style (checked to decode back to `data`).
    pub fn compress(&self, data: &[u8]) -> Vec<u8> {
        let frame = match self.encoder {
            Encoder::Flex => {
                use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
                let info = FrameInfo::new()
                    .block_size(match self.block {
                        Block::K64 => BlockSize::Max64KB,
                        Block::K256 => BlockSize::Max256KB,
                        Block::M1 => BlockSize::Max1MB,
                        Block::M4 => BlockSize::Max4MB,
                    })
                    .block_mode(if self.linked {
                        BlockMode::Linked
                    } else {
                        BlockMode::Independent
                    })
                    .block_checksums(self.block_checksums)
                    .content_checksum(self.content_checksum)
                    .content_size(self.content_size.then_some(data.len() as u64));
                let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
            Encoder::Liblz4 { level } => {
                use lz4::liblz4::BlockChecksum;
                use lz4::{BlockMode, BlockSize, ContentChecksum, EncoderBuilder};
                let mut builder = EncoderBuilder::new();
                builder
                    .block_size(match self.block {
                        Block::K64 => BlockSize::Max64KB,
                        Block::K256 => BlockSize::Max256KB,
                        Block::M1 => BlockSize::Max1MB,
                        Block::M4 => BlockSize::Max4MB,
                    })
                    .block_mode(if self.linked {
                        BlockMode::Linked
                    } else {
                        BlockMode::Independent
                    })
                    .block_checksum(if self.block_checksums {
                        BlockChecksum::BlockChecksumEnabled
                    } else {
                        BlockChecksum::NoBlockChecksum
                    })
                    .checksum(if self.content_checksum {
                        ContentChecksum::ChecksumEnabled
                    } else {
                        ContentChecksum::NoChecksum
                    })
                    .level(level);
                if self.content_size {
                    builder.content_size(data.len() as u64);
                }
                let mut enc = builder.build(Vec::new()).unwrap();
                enc.write_all(data).unwrap();
                let (frame, result) = enc.finish();
                result.unwrap();
                frame
            }
        };
        assert_eq!(
            decompress(&frame),
            data,
            "{self:?} does not round-trip through lz4_flex"
        );
        frame
    }
}

/// Decodes one LZ4 frame with lz4_flex.
pub fn decompress(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lz4_flex::frame::FrameDecoder::new(frame)
        .read_to_end(&mut out)
        .expect("valid LZ4 frame");
    out
}

/// Path of a segment in Litestream's replica layout under `root`.
pub fn segment_path(root: &Path, generation: &str, index: u64, offset: u64) -> PathBuf {
    root.join("generations")
        .join(generation)
        .join("wal")
        .join(format!("{index:016x}"))
        .join(format!("{offset:016x}.wal.lz4"))
}

/// Every segment of `indexes`, compressed in `style`: `(index, offset, frame)`.
pub fn compressed_segments(
    indexes: &[GeneratedIndex],
    style: &FrameStyle,
) -> Vec<(u64, u64, Vec<u8>)> {
    indexes
        .iter()
        .flat_map(|ix| {
            ix.segments
                .iter()
                .map(move |(offset, raw)| (ix.index, *offset, style.compress(raw)))
        })
        .collect()
}

/// Writes `indexes` as a replica directory (Litestream's file layout) under `root`.
pub fn write_dir_replica(
    root: &Path,
    generation: &str,
    indexes: &[GeneratedIndex],
    style: &FrameStyle,
) {
    for (index, offset, frame) in compressed_segments(indexes, style) {
        let path = segment_path(root, generation, index, offset);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, frame).unwrap();
    }
}
