//! Strict LZ4 frame decoding of one in-memory segment.
//!
//! `lz4_flex`'s `FrameDecoder` is lenient: input that ends at a block boundary (no EndMark, no
//! content checksum) reads as a clean end, and bytes after the first frame are never looked
//! at. So the frame structure is walked first, and any truncation, missing EndMark or checksum,
//! or trailing bytes that are not a complete frame are an error; only then does the decoder
//! run, frame by frame, checking the header, block and content checksums.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::ops::Range;

use lz4_flex::frame::{Error as FrameFault, FrameDecoder};
use twox_hash::XxHash32;

const FRAME_MAGIC: u32 = 0x184D_2204;
const SKIPPABLE_MAGIC: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;

const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_INDEPENDENT_BLOCKS: u8 = 0b0010_0000;
const FLG_BLOCK_CHECKSUMS: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_DICT_ID: u8 = 0b0000_0001;
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;
const FLG_RESERVED: u8 = 0b0000_0010;
const BD_RESERVED: u8 = 0b1000_1111;
/// The first output buffer for a block is this many times its compressed size (WAL pages
/// compress about 2-3×), rounded up to a power of two, and at least `MIN_BLOCK_BUFFER`.
const BLOCK_RATIO_GUESS: usize = 4;
const MIN_BLOCK_BUFFER: usize = 64 << 10;

/// Why a segment is not a valid LZ4 frame sequence, and the byte position where it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// Byte position in the compressed segment.
    pub position: u64,
    /// What is wrong.
    pub what: String,
}

impl FrameError {
    fn new(position: usize, what: impl Into<String>) -> FrameError {
        FrameError {
            position: position as u64,
            what: what.into(),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.position)
    }
}

/// A decoding failure: the input is corrupt, or the output refused the bytes.
#[derive(Debug)]
pub enum DecodeError {
    /// The segment is not a valid LZ4 frame sequence.
    Corrupt(FrameError),
    /// Writing decoded bytes failed.
    Write(io::Error),
}

fn u32_at(data: &[u8], pos: usize, what: &str) -> Result<u32, FrameError> {
    data.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| FrameError::new(pos, format!("truncated {what}")))
}

/// Walks the frame structure of `data` and returns the byte ranges of its LZ4 frames
/// (skippable frames are left out). At least one LZ4 frame is required.
pub fn frames(data: &[u8]) -> Result<Vec<Range<usize>>, FrameError> {
    if data.is_empty() {
        return Err(FrameError::new(0, "empty segment, want an LZ4 frame"));
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let magic = u32_at(data, pos, "frame magic")?;
        if SKIPPABLE_MAGIC.contains(&magic) {
            let len = u32_at(data, pos + 4, "skippable frame size")? as usize;
            pos += 8;
            if data.len() - pos < len {
                return Err(FrameError::new(pos, "truncated skippable frame"));
            }
            pos += len;
            continue;
        }
        if magic != FRAME_MAGIC {
            return Err(FrameError::new(
                pos,
                format!("bad frame magic {magic:#010x}"),
            ));
        }
        pos += 4;
        let (flg, bd) = match data.get(pos..pos + 2) {
            Some(&[flg, bd]) => (flg, bd),
            _ => return Err(FrameError::new(pos, "truncated frame descriptor")),
        };
        if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
            return Err(FrameError::new(pos, "unsupported frame version"));
        }
        if flg & FLG_DICT_ID != 0 {
            return Err(FrameError::new(pos, "unsupported dictionary id"));
        }
        let block_max: usize = match (bd >> 4) & 0b111 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            code => {
                return Err(FrameError::new(
                    pos + 1,
                    format!("unsupported block size code {code}"),
                ));
            }
        };
        let descriptor_len = 2 + if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 } + 1;
        if data.len() - pos < descriptor_len {
            return Err(FrameError::new(pos, "truncated frame descriptor"));
        }
        pos += descriptor_len;
        let block_checksum_len = if flg & FLG_BLOCK_CHECKSUMS != 0 { 4 } else { 0 };
        loop {
            let word = u32_at(data, pos, "block size (missing EndMark)")?;
            if word == 0 {
                pos += 4;
                break;
            }
            let len = (word & !BLOCK_UNCOMPRESSED) as usize;
            if len > block_max {
                return Err(FrameError::new(
                    pos,
                    format!("block of {len} bytes exceeds the frame's maximum of {block_max}"),
                ));
            }
            pos += 4;
            if data.len() - pos < len + block_checksum_len {
                return Err(FrameError::new(pos, "truncated block"));
            }
            pos += len + block_checksum_len;
        }
        if flg & FLG_CONTENT_CHECKSUM != 0 {
            if data.len() - pos < 4 {
                return Err(FrameError::new(pos, "truncated content checksum"));
            }
            pos += 4;
        }
        frames.push(start..pos);
    }
    if frames.is_empty() {
        return Err(FrameError::new(data.len(), "no LZ4 frame in segment"));
    }
    Ok(frames)
}

/// The reader under the frame decoder: one frame's bytes of the current segment, swapped in
/// for each frame so that the decoder's buffers are reused across frames and segments.
#[derive(Debug, Default)]
struct FrameBytes {
    data: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Read for FrameBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes segments into a writer, reusing the decoder's block buffers (at most about 12 MiB,
/// for linked 4 MiB blocks).
///
/// Frames of independent blocks (what Litestream and lz4_flex write) are decoded here block by
/// block into one reused buffer: `FrameDecoder` clears its buffer at every frame and zeroes a
/// whole maximum-size block (4 MiB) again before the first block, which cost more than the
/// decoding itself for small segments. Uncompressed blocks are written straight from the
/// input. Frames of linked blocks go through `FrameDecoder`.
pub struct Decoder {
    /// The independent-block path's output buffer (grown to the largest block size seen).
    block: Vec<u8>,
    inner: FrameDecoder<FrameBytes>,
    /// The FLG independence bit and BD byte of the last frame decoded: the decoder sizes its
    /// buffers for one block size and mode, so it is only reused for frames that match.
    layout: Option<(u8, u8)>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder with empty buffers.
    pub fn new() -> Decoder {
        Decoder {
            block: Vec::new(),
            inner: FrameDecoder::new(FrameBytes::default()),
            layout: None,
        }
    }

    /// Checks and decodes the whole segment `data` into `out`, and returns how many bytes it
    /// wrote. `data` is dropped when this returns.
    pub fn decode<W: Write + ?Sized>(
        &mut self,
        data: Vec<u8>,
        out: &mut W,
    ) -> Result<u64, DecodeError> {
        let frames = frames(&data).map_err(DecodeError::Corrupt)?;
        let mut data = data;
        let mut total = 0u64;
        for frame in frames {
            let (flg, bd) = (data[frame.start + 4], data[frame.start + 5]);
            if flg & FLG_INDEPENDENT_BLOCKS != 0 {
                total += self.decode_independent(&data, frame, out)?;
                continue;
            }
            let layout = (flg & FLG_INDEPENDENT_BLOCKS, bd);
            if self.layout != Some(layout) {
                self.inner = FrameDecoder::new(FrameBytes::default());
                self.layout = Some(layout);
            }
            self.inner.get_mut().data = std::mem::take(&mut data);
            let result = self.decode_frame(frame, out);
            data = std::mem::take(&mut self.inner.get_mut().data);
            match result {
                Ok(n) => total += n,
                Err(e) => {
                    // The decoder may be stuck part way through a frame.
                    self.inner = FrameDecoder::new(FrameBytes::default());
                    self.layout = None;
                    return Err(e);
                }
            }
        }
        Ok(total)
    }

    /// Decodes one frame of independent blocks whose structure [`frames`] has checked, with
    /// the checks `FrameDecoder` makes: reserved bits, header checksum, block checksums,
    /// block decoding, content size and content checksum.
    fn decode_independent<W: Write + ?Sized>(
        &mut self,
        data: &[u8],
        frame: Range<usize>,
        out: &mut W,
    ) -> Result<u64, DecodeError> {
        let start = frame.start;
        let corrupt = |pos: usize, e: FrameFault| {
            DecodeError::Corrupt(FrameError::new(
                pos,
                format!("{e} in the frame at byte {start}"),
            ))
        };
        let mut pos = start + 4;
        let (flg, bd) = (data[pos], data[pos + 1]);
        if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
            return Err(corrupt(pos, FrameFault::ReservedBitsSet));
        }
        let block_max: usize = 1 << (8 + 2 * usize::from((bd >> 4) & 0b111));
        let content_size = if flg & FLG_CONTENT_SIZE != 0 {
            let b: [u8; 8] = data[pos + 2..pos + 10].try_into().expect("8 bytes");
            Some(u64::from_le_bytes(b))
        } else {
            None
        };
        let descriptor_end = pos + 2 + if content_size.is_some() { 8 } else { 0 };
        let header_checksum = (XxHash32::oneshot(0, &data[pos..descriptor_end]) >> 8) as u8;
        if header_checksum != data[descriptor_end] {
            return Err(corrupt(descriptor_end, FrameFault::HeaderChecksumError));
        }
        pos = descriptor_end + 1;
        let block_checksums = flg & FLG_BLOCK_CHECKSUMS != 0;
        let mut content = (flg & FLG_CONTENT_CHECKSUM != 0).then(|| XxHash32::with_seed(0));
        let mut written = 0u64;
        loop {
            let word = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
            pos += 4;
            if word == 0 {
                break;
            }
            let len = (word & !BLOCK_UNCOMPRESSED) as usize;
            let raw = &data[pos..pos + len];
            pos += len;
            if block_checksums {
                let want = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
                if XxHash32::oneshot(0, raw) != want {
                    return Err(corrupt(pos, FrameFault::BlockChecksumError));
                }
                pos += 4;
            }
            let block = if word & BLOCK_UNCOMPRESSED != 0 {
                raw
            } else {
                let n = self
                    .decompress_block(raw, block_max)
                    .map_err(|e| corrupt(pos, FrameFault::DecompressionError(e)))?;
                &self.block[..n]
            };
            if let Some(hasher) = &mut content {
                std::hash::Hasher::write(hasher, block);
            }
            out.write_all(block).map_err(DecodeError::Write)?;
            written += block.len() as u64;
        }
        if let Some(expected) = content_size
            && expected != written
        {
            let actual = written;
            return Err(corrupt(
                pos,
                FrameFault::ContentLengthError { expected, actual },
            ));
        }
        if let Some(hasher) = content {
            let want = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
            if std::hash::Hasher::finish(&hasher) as u32 != want {
                return Err(corrupt(pos, FrameFault::ContentChecksumError));
            }
        }
        Ok(written)
    }

    /// Decompresses one block of at most `block_max` bytes into `self.block`. The buffer
    /// starts at a guess from the compressed size and doubles (up to `block_max`) when a block
    /// does not fit, so small segments never make it zero a whole 4 MiB maximum-size block:
    /// in a fresh instance that was a thousand page faults before the first byte out. It
    /// keeps its size, so the retries happen only while it grows to the largest block seen.
    fn decompress_block(
        &mut self,
        raw: &[u8],
        block_max: usize,
    ) -> Result<usize, lz4_flex::block::DecompressError> {
        let guess = raw
            .len()
            .saturating_mul(BLOCK_RATIO_GUESS)
            .max(MIN_BLOCK_BUFFER)
            .next_power_of_two();
        let mut len = self.block.len().max(guess).min(block_max);
        loop {
            if self.block.len() < len {
                // Zeroed once; later blocks overwrite what they use.
                self.block.resize(len, 0);
            }
            match lz4_flex::block::decompress_into(raw, &mut self.block[..len]) {
                Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if len < block_max => {
                    len = len.saturating_mul(2).min(block_max);
                }
                result => return result,
            }
        }
    }

    fn decode_frame<W: Write + ?Sized>(
        &mut self,
        frame: Range<usize>,
        out: &mut W,
    ) -> Result<u64, DecodeError> {
        let start = frame.start;
        let reader = self.inner.get_mut();
        reader.pos = frame.start;
        reader.end = frame.end;
        let mut written = 0u64;
        loop {
            let block = match self.inner.fill_buf() {
                Ok(block) => block,
                Err(e) => {
                    let what = format!("{e} in the frame at byte {start}");
                    return Err(DecodeError::Corrupt(FrameError::new(
                        self.inner.get_ref().pos,
                        what,
                    )));
                }
            };
            if block.is_empty() {
                // An empty block reads as empty too; the frame ends where its bytes end (the
                // walk checked that they end with the EndMark and checksum).
                if self.inner.get_ref().pos == frame.end {
                    return Ok(written);
                }
                continue;
            }
            let n = block.len();
            out.write_all(block).map_err(DecodeError::Write)?;
            self.inner.consume(n);
            written += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivially so.
        (0..len)
            .map(|i| ((i * 7 + i / 13) % 251) as u8 ^ ((i >> 10) as u8))
            .collect()
    }

    fn encode(info: FrameInfo, data: &[u8]) -> Vec<u8> {
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        for chunk in data.chunks(100_000) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    fn decode(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        let n = Decoder::new().decode(data.to_vec(), &mut out)?;
        assert_eq!(n, out.len() as u64);
        Ok(out)
    }

    fn corrupt(data: &[u8]) -> FrameError {
        match decode(data) {
            Err(DecodeError::Corrupt(e)) => e,
            other => panic!("want corrupt, got {:?}", other.map(|v| v.len())),
        }
    }

    fn all_infos(content_len: u64) -> Vec<FrameInfo> {
        let mut infos = Vec::new();
        for block_size in [
            BlockSize::Max64KB,
            BlockSize::Max256KB,
            BlockSize::Max1MB,
            BlockSize::Max4MB,
        ] {
            for block_mode in [BlockMode::Independent, BlockMode::Linked] {
                for block_checksums in [false, true] {
                    for content_checksum in [false, true] {
                        for content_size in [None, Some(content_len)] {
                            infos.push(
                                FrameInfo::new()
                                    .block_size(block_size)
                                    .block_mode(block_mode)
                                    .block_checksums(block_checksums)
                                    .content_checksum(content_checksum)
                                    .content_size(content_size),
                            );
                        }
                    }
                }
            }
        }
        infos
    }

    #[test]
    fn every_frame_setting_round_trips() {
        let data = sample(9 << 20 | 12345);
        let mut decoder = Decoder::new();
        for info in all_infos(data.len() as u64) {
            let desc = format!("{info:?}");
            let encoded = encode(info, &data);
            let mut out = Vec::new();
            // One decoder for all: its buffers are reused across frame settings.
            let n = decoder
                .decode(encoded, &mut out)
                .unwrap_or_else(|e| panic!("{desc}: {e:?}"));
            assert_eq!(n, data.len() as u64, "{desc}");
            assert!(out == data, "{desc}: output differs");
        }
    }

    #[test]
    fn block_buffer_grows_only_as_far_as_blocks_need() {
        let mut decoder = Decoder::new();
        let info = FrameInfo::new()
            .block_size(BlockSize::Max4MB)
            .content_checksum(true);
        // A small segment: the buffer is sized from it, not from the frame's 4 MiB maximum.
        let small = sample(40_000);
        let mut out = Vec::new();
        decoder
            .decode(encode(info.clone(), &small), &mut out)
            .unwrap();
        assert!(out == small);
        assert!(decoder.block.len() <= 256 << 10, "{}", decoder.block.len());
        // Blocks far more compressible than the guess: decoded after the buffer doubles.
        let mut zeros = vec![0u8; (4 << 20) + 1000];
        zeros[3 << 20] = 1;
        let mut out = Vec::new();
        decoder.decode(encode(info, &zeros), &mut out).unwrap();
        assert!(out == zeros);
        assert_eq!(decoder.block.len(), 4 << 20);
        // A block larger than the frame's maximum is still refused once the buffer is big.
        let info64 = FrameInfo::new().block_size(BlockSize::Max64KB);
        let mut oversized = encode(info64, &vec![0u8; 1000]);
        let big = lz4_flex::block::compress(&vec![0u8; 70_000]);
        let header_end = 7;
        oversized.truncate(header_end);
        oversized.extend_from_slice(&(big.len() as u32).to_le_bytes());
        oversized.extend_from_slice(&big);
        oversized.extend_from_slice(&0u32.to_le_bytes());
        match decoder.decode(oversized, &mut Vec::new()) {
            Err(DecodeError::Corrupt(e)) => assert!(e.to_string().contains("ecompress"), "{e}"),
            other => panic!("want corrupt, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn empty_content_frame_is_valid() {
        for info in all_infos(0) {
            assert_eq!(decode(&encode(info, &[])).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn concatenated_and_skippable_frames() {
        let a = sample(70_000);
        let b = sample(1000);
        let mut data = encode(FrameInfo::new(), &a);
        data.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        data.extend_from_slice(&3u32.to_le_bytes());
        data.extend_from_slice(b"xyz");
        data.extend(encode(FrameInfo::new().content_checksum(true), &b));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert!(decode(&data).unwrap() == want);
    }

    #[test]
    fn empty_blocks_do_not_end_the_frame() {
        let data = sample(200_000);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .content_checksum(true);
        let encoded = encode(info, &data);
        // An empty uncompressed block right after the descriptor and one before the EndMark.
        let mut edited = encoded[..7].to_vec();
        edited.extend_from_slice(&BLOCK_UNCOMPRESSED.to_le_bytes());
        edited.extend_from_slice(&encoded[7..encoded.len() - 8]);
        edited.extend_from_slice(&BLOCK_UNCOMPRESSED.to_le_bytes());
        edited.extend_from_slice(&encoded[encoded.len() - 8..]);
        assert!(decode(&edited).unwrap() == data);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = sample(140_000);
        for info in [
            FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .content_checksum(true),
            FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_checksums(true)
                .content_size(Some(140_000)),
            FrameInfo::new().block_size(BlockSize::Max64KB),
            FrameInfo::new()
                .block_size(BlockSize::Max4MB)
                .block_mode(BlockMode::Linked),
        ] {
            let encoded = encode(info, &data);
            for len in 0..encoded.len() {
                // The walk alone must reject it; decoding is checked on a sample of cuts.
                let e = frames(&encoded[..len]).unwrap_err();
                assert!(e.position <= len as u64, "cut at {len}: {e}");
                if len % 101 == 0 || len + 16 > encoded.len() {
                    corrupt(&encoded[..len]);
                }
            }
            assert!(decode(&encoded).unwrap() == data);
        }
    }

    #[test]
    fn flipped_bytes_in_checksummed_frames_are_errors() {
        let data = sample(3000);
        let info = FrameInfo::new()
            .block_checksums(true)
            .content_checksum(true);
        let encoded = encode(info, &data);
        for i in 0..encoded.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = encoded.clone();
                bad[i] ^= bit;
                assert!(decode(&bad).is_err(), "flip {bit:#x} at {i} was accepted");
            }
        }
        // Content checksum alone still catches a flipped literal.
        let encoded = encode(FrameInfo::new().content_checksum(true), &data);
        let mut bad = encoded.clone();
        let last_block_byte = encoded.len() - 9;
        bad[last_block_byte] ^= 0x01;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn trailing_bytes_are_errors() {
        let encoded = encode(FrameInfo::new(), &sample(5000));
        for tail in [
            &[0u8][..],
            &[0, 0, 0, 0],
            &[0x04, 0x22, 0x4d, 0x18],
            b"garbage!",
        ] {
            let mut data = encoded.clone();
            data.extend_from_slice(tail);
            let e = corrupt(&data);
            assert!(e.position >= encoded.len() as u64, "{tail:?}: {e}");
        }
        // A further frame that is cut short.
        let mut data = encoded.clone();
        let second = encode(FrameInfo::new(), &sample(5000));
        data.extend_from_slice(&second[..second.len() - 1]);
        corrupt(&data);
    }

    #[test]
    fn empty_and_frameless_segments_are_errors() {
        assert_eq!(corrupt(&[]).position, 0);
        let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
        skippable.extend_from_slice(&0u32.to_le_bytes());
        corrupt(&skippable);
        // The legacy frame format is not accepted.
        corrupt(&[0x02, 0x21, 0x4c, 0x18, 0, 0, 0, 0]);
    }

    #[test]
    fn dictionary_and_bad_descriptors_are_errors() {
        let mut encoded = encode(FrameInfo::new(), &sample(100));
        encoded[4] |= FLG_DICT_ID;
        assert!(corrupt(&encoded).what.contains("dictionary"));
        let mut encoded = encode(FrameInfo::new(), &sample(100));
        encoded[6] ^= 0x01; // header checksum
        corrupt(&encoded);
        let mut encoded = encode(FrameInfo::new(), &sample(100));
        encoded[5] = 0x30; // block size code 3
        corrupt(&encoded);
    }

    #[test]
    fn write_errors_are_not_corruption() {
        struct Refuse;
        impl Write for Refuse {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "permission denied",
                ))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let encoded = encode(FrameInfo::new(), &sample(100));
        let mut decoder = Decoder::new();
        assert!(matches!(
            decoder.decode(encoded.clone(), &mut Refuse),
            Err(DecodeError::Write(_))
        ));
        // The decoder recovers for the next segment.
        let mut out = Vec::new();
        assert_eq!(decoder.decode(encoded, &mut out).unwrap(), 100);
    }
}
