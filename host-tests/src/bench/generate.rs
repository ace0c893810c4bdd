//! The workload generator: synthetic, WAL-like replicas in Litestream's directory layout.
//!
//! Each WAL file is a 32-byte WAL header followed by frames (a 24-byte frame header and a
//! 4 KiB page), cut into segments of a fixed size. Pages look like SQLite b-tree pages: a
//! mostly-zero header area, then 64-byte records of which about 40% are random bytes and the
//! rest repeat earlier records, which LZ4 compresses about 2.5×. Segments are LZ4 frames as
//! Litestream writes them: independent 4 MiB blocks with a content checksum.

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

/// The decompressed bytes of WAL file `index`: `len` bytes of WAL header and frames.
pub fn wal_bytes(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x1000_0000_01B3));
    let mut out = Vec::with_capacity(len + PAGE_SIZE + 56);
    // WAL header: magic, version, page size, checkpoint sequence, salts, checksums.
    out.extend_from_slice(&0x377f_0682u32.to_be_bytes());
    out.extend_from_slice(&3_007_000u32.to_be_bytes());
    out.extend_from_slice(&(PAGE_SIZE as u32).to_be_bytes());
    out.extend_from_slice(&(index as u32).to_be_bytes());
    let mut salts = [0u8; 16];
    rng.fill(&mut salts);
    out.extend_from_slice(&salts);
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
    let mut frame = 0u32;
    while out.len() < len {
        frame += 1;
        out.extend_from_slice(&(frame % 97 + 2).to_be_bytes()); // page number
        out.extend_from_slice(&0u32.to_be_bytes()); // commit size
        out.extend_from_slice(&salts[..8]);
        let mut checksums = [0u8; 8];
        rng.fill(&mut checksums);
        out.extend_from_slice(&checksums);
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
        out.extend_from_slice(&page);
    }
    out.truncate(len);
    out
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
        let wal = wal_bytes(seed, index, shape.segment_bytes * shape.segments as usize);
        let dir = generation_dir.join("wal").join(format!("{index:016x}"));
        std::fs::create_dir_all(&dir)?;
        for (i, segment) in wal.chunks(shape.segment_bytes.max(1)).enumerate() {
            let offset = (i * shape.segment_bytes) as u64;
            let compressed = lz4_frame(segment);
            std::fs::write(dir.join(format!("{offset:016x}.wal.lz4")), &compressed)?;
            totals.segments += 1;
            totals.decompressed_bytes += segment.len() as u64;
            totals.compressed_bytes += compressed.len() as u64;
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_compress_about_two_and_a_half_times() {
        let wal = wal_bytes(1, 0, 1 << 20);
        assert_eq!(wal.len(), 1 << 20);
        for len in [16 << 10, 64 << 10, 1 << 20] {
            let ratio = len as f64 / lz4_frame(&wal[..len]).len() as f64;
            assert!((2.0..3.0).contains(&ratio), "{len} bytes: ratio {ratio}");
        }
        assert_eq!(wal_bytes(1, 0, 1000), wal[..1000], "deterministic");
    }
}
