//! The workload generator: synthetic, WAL-like replicas in Litestream's directory layout.
//!
//! Each WAL file is a valid SQLite WAL: a 32-byte header and frames of a 24-byte frame header
//! and a 4 KiB page, with SQLite's salts and cumulative checksums, cut into segments at
//! transaction boundaries as Litestream cuts them (each segment is whole frames, the last a
//! commit frame; a segment is the fewest frames that reach the shape's segment size). Pages
//! look like SQLite b-tree pages: a mostly-zero header area, then 64-byte records of which
//! about a third are random bytes and the rest repeat row templates, which LZ4 compresses about
//! 2.5×. Segments are LZ4 frames as Litestream writes them: independent 4 MiB blocks with a
//! content checksum.

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use std::io::Write;
use std::path::Path;

/// The generation every generated replica uses.
pub const GENERATION: &str = "b3c4d5e6f7a80912";

/// WAL page size of the synthetic frames.
const PAGE_SIZE: usize = 4096;

/// Row templates per WAL file, and the share of records that are random bytes instead.
const TEMPLATES: usize = 16;
const RANDOM_PERCENT: u64 = 32;

/// What to generate: `indexes` WAL files of `segments` segments of `segment_bytes`
/// (decompressed) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub indexes: u64,
    pub segments: u64,
    pub segment_bytes: usize,
}

impl Shape {
    /// The workloads by name: `w1` (200 × 1 × 64 KiB), `w2` (8 × 100 × 16 KiB),
    /// `w3` (16 × 1 × 16 MiB), and `tiny` (4 × 3 × 8 KiB, for tests).
    pub fn named(name: &str) -> Option<Shape> {
        let (indexes, segments, segment_bytes) = match name.to_ascii_lowercase().as_str() {
            "w1" | "w5" => (200, 1, 64 << 10),
            "w2" => (8, 100, 16 << 10),
            "w3" => (16, 1, 16 << 20),
            "tiny" => (4, 3, 8 << 10),
            _ => return None,
        };
        Some(Shape {
            indexes,
            segments,
            segment_bytes,
        })
    }
}

/// A small, fast, deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SQLite's WAL checksum (`walChecksumBytes`) of `data` (a multiple of 8 bytes) continuing
/// from `(s1, s2)`, with the little-endian words of magic 0x377f0682.
fn wal_checksum(data: &[u8], (mut s1, mut s2): (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let x0 = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
        let x1 = u32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

/// The decompressed segments of WAL file `index`: each at least `segment_bytes` long (the
/// first holds the WAL header), `segments` of them.
pub fn wal_segments(seed: u64, index: u64, segments: usize, segment_bytes: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x1000_0000_01B3));
    let mut out = Vec::with_capacity(segment_bytes + PAGE_SIZE + 56);
    // WAL header: magic, version, page size, checkpoint sequence, salts, checksum.
    out.extend_from_slice(&0x377f_0682u32.to_be_bytes());
    out.extend_from_slice(&3_007_000u32.to_be_bytes());
    out.extend_from_slice(&(PAGE_SIZE as u32).to_be_bytes());
    out.extend_from_slice(&(index as u32).to_be_bytes());
    let mut salts = [0u8; 8];
    rng.fill(&mut salts);
    out.extend_from_slice(&salts);
    let mut checksum = wal_checksum(&out, (0, 0));
    out.extend_from_slice(&checksum.0.to_be_bytes());
    out.extend_from_slice(&checksum.1.to_be_bytes());
    // A few "row" templates, text-like, that records repeat, as table rows share structure.
    const WORDS: [&str; 8] = [
        "alpha ",
        "status=ok ",
        "2026-11-24 ",
        "user_id ",
        "NULL ",
        "payload ",
        "0000 ",
        "x ",
    ];
    let mut templates = Vec::with_capacity(64 * TEMPLATES);
    while templates.len() < 64 * TEMPLATES {
        templates.extend_from_slice(WORDS[(rng.next() % 8) as usize].as_bytes());
    }
    let mut result = Vec::with_capacity(segments);
    let mut frame = 0u32;
    while result.len() < segments {
        frame += 1;
        // Every segment ends on a commit frame, and so a transaction every few frames too.
        let commit = out.len() + 24 + PAGE_SIZE >= segment_bytes || frame.is_multiple_of(8);
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&(frame % 97 + 2).to_be_bytes()); // page number
        if commit {
            header[4..8].copy_from_slice(&100u32.to_be_bytes()); // database size in pages
        }
        header[8..16].copy_from_slice(&salts);
        // Page: b-tree header and cell pointers (mostly zero), then 64-byte records.
        let mut page = vec![0u8; PAGE_SIZE];
        page[0] = 0x0d;
        for (i, cell) in page[8..128].chunks_mut(2).enumerate() {
            cell.copy_from_slice(&((PAGE_SIZE - 64 * (i + 1)) as u16).to_be_bytes());
        }
        for record in page[256..].chunks_mut(64) {
            if rng.next() % 100 < RANDOM_PERCENT {
                rng.fill(record);
            } else {
                let t = (rng.next() % TEMPLATES as u64) as usize * 64;
                record.copy_from_slice(&templates[t..t + record.len()]);
            }
        }
        checksum = wal_checksum(&page, wal_checksum(&header[..8], checksum));
        header[16..20].copy_from_slice(&checksum.0.to_be_bytes());
        header[20..24].copy_from_slice(&checksum.1.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&page);
        if out.len() >= segment_bytes {
            result.push(std::mem::take(&mut out));
        }
    }
    result
}

/// LZ4-compresses `data` as Litestream does: a frame of independent 4 MiB blocks with a
/// content checksum.
pub fn lz4_frame(data: &[u8]) -> Vec<u8> {
    let info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2));
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// What `generate` wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Generated {
    pub segments: u64,
    pub decompressed_bytes: u64,
    pub compressed_bytes: u64,
}

/// Writes a replica of `shape` under `root` (`generations/<GENERATION>/wal/<index>/<offset>
/// .wal.lz4`, indexes from 0), replacing any generated before.
pub fn generate(shape: Shape, root: &Path, seed: u64) -> std::io::Result<Generated> {
    let generation_dir = root.join("generations").join(GENERATION);
    if generation_dir.exists() {
        std::fs::remove_dir_all(&generation_dir)?;
    }
    let mut totals = Generated::default();
    for index in 0..shape.indexes {
        let segments = wal_segments(seed, index, shape.segments as usize, shape.segment_bytes);
        let dir = generation_dir.join("wal").join(format!("{index:016x}"));
        std::fs::create_dir_all(&dir)?;
        let mut offset = 0u64;
        for segment in &segments {
            let compressed = lz4_frame(segment);
            std::fs::write(dir.join(format!("{offset:016x}.wal.lz4")), &compressed)?;
            offset += segment.len() as u64;
            totals.segments += 1;
            totals.decompressed_bytes += segment.len() as u64;
            totals.compressed_bytes += compressed.len() as u64;
        }
    }
    std::fs::write(root.join(STAMP), stamp(shape, seed))?;
    Ok(totals)
}

/// The file in a generated replica's root that records what generated it.
const STAMP: &str = "walrestore-generated";

fn stamp(shape: Shape, seed: u64) -> String {
    // The version changes whenever the generated bytes would.
    format!("generator 2, {shape:?}, seed {seed}\n")
}

/// Whether `root` holds a replica `generate(shape, root, seed)` wrote with this generator.
pub fn is_generated(shape: Shape, root: &Path, seed: u64) -> bool {
    std::fs::read_to_string(root.join(STAMP)).is_ok_and(|s| s == stamp(shape, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_compress_about_two_and_a_half_times() {
        for len in [16 << 10, 64 << 10, 1 << 20] {
            let segments = wal_segments(1, 0, 2, len);
            for segment in &segments {
                assert!(segment.len() >= len && segment.len() < len + 4200);
                let ratio = segment.len() as f64 / lz4_frame(segment).len() as f64;
                assert!((2.0..3.0).contains(&ratio), "{len} bytes: ratio {ratio}");
            }
            assert_eq!(wal_segments(1, 0, 2, len), segments, "deterministic");
        }
    }

    #[test]
    fn segments_are_whole_frames_of_a_valid_wal() {
        let segments = wal_segments(3, 7, 3, 10_000);
        let wal = segments.concat();
        assert_eq!(
            u32::from_be_bytes(wal[..4].try_into().unwrap()),
            0x377f_0682
        );
        let mut sum = wal_checksum(&wal[..24], (0, 0));
        assert_eq!(
            wal[24..32],
            [sum.0.to_be_bytes(), sum.1.to_be_bytes()].concat()
        );
        let mut ends = Vec::new();
        let mut pos = 32;
        while pos < wal.len() {
            let frame = &wal[pos..pos + 24 + PAGE_SIZE];
            assert_eq!(frame[8..16], wal[16..24], "salts at {pos}");
            sum = wal_checksum(&frame[24..], wal_checksum(&frame[..8], sum));
            assert_eq!(
                frame[16..24],
                [sum.0.to_be_bytes(), sum.1.to_be_bytes()].concat()
            );
            pos += 24 + PAGE_SIZE;
            ends.push((pos, frame[4..8] != [0; 4]));
        }
        assert_eq!(pos, wal.len(), "whole frames");
        // Each segment ends on a commit frame.
        let mut end = 0;
        for segment in &segments {
            end += segment.len();
            assert!(ends.contains(&(end, true)), "segment ending at {end}");
        }
    }
}
