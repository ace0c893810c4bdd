//! The strict LZ4 frame decoder: several segments per case through one reused `Decoder`, each
//! either arbitrary bytes or built from frames lz4_flex encodes (every frame setting, linked
//! and independent blocks, content sizes, checksums, skippable frames), then mutated.
//!
//! Checks: no panic; the returned count equals the bytes written; the reused decoder gives
//! the same result (count, bytes, error) as a fresh one for every segment, also after a
//! write error (an output that refuses bytes part way); an unmutated encoding decodes to its
//! content; when both `Decoder` and lz4_flex's `FrameDecoder` (one frame at a time) accept a
//! segment, their outputs are equal; allocations stay bounded (run with `-malloc_limit_mb`).

#![no_main]

use std::io::{self, Read, Write};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
use twox_hash::XxHash32;
use walrestore::core::lz4::{DecodeError, Decoder, frames};

#[derive(Arbitrary, Debug)]
struct Info {
    /// 0..=3: 64 KiB, 256 KiB, 1 MiB, 4 MiB.
    block_size: u8,
    linked: bool,
    block_checksums: bool,
    content_checksum: bool,
    content_size: bool,
    /// Added (wrapping) to the true content size in the header (whose checksum is then
    /// made to match).
    content_size_error: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Content {
    bytes: Vec<u8>,
    /// The bytes are repeated this many times (up to a bound), to make multi-block frames.
    repeat: u16,
}

impl Content {
    fn expand(&self) -> Vec<u8> {
        const MAX: usize = 1 << 18;
        let mut data = Vec::new();
        if self.bytes.is_empty() {
            data.resize((usize::from(self.repeat) * 64).min(MAX), 0);
            return data;
        }
        for _ in 0..=self.repeat {
            if data.len() + self.bytes.len() > MAX {
                break;
            }
            data.extend_from_slice(&self.bytes);
        }
        data
    }
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Raw(Vec<u8>),
    Frame(Info, Content),
    Skippable(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip {
        at: u32,
        bit: u8,
    },
    Set {
        at: u32,
        value: u8,
    },
    /// Overwrites 4 bytes (a block size word, a magic) little-endian.
    Word {
        at: u32,
        value: u32,
    },
    Truncate {
        len: u32,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    Remove {
        at: u32,
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Segment {
    pieces: Vec<Piece>,
    mutations: Vec<Mutation>,
    /// The output refuses bytes after this many (writes part of the buffer it refuses).
    write_budget: Option<u32>,
}

/// The segment's bytes, and what it decodes to if it is a valid encoding (known only for
/// unmutated segments of valid frames and skippable frames).
fn build(segment: &Segment) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut data = Vec::new();
    let mut content = Vec::new();
    let mut valid = segment.mutations.is_empty();
    let mut frames = 0;
    for piece in &segment.pieces {
        match piece {
            Piece::Raw(bytes) => {
                data.extend_from_slice(bytes);
                valid &= bytes.is_empty();
            }
            Piece::Skippable(n, bytes) => {
                data.extend_from_slice(&(0x184D_2A50u32 + u32::from(n % 16)).to_le_bytes());
                data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                data.extend_from_slice(bytes);
            }
            Piece::Frame(info, c) => {
                let bytes = c.expand();
                let block_size = match info.block_size % 4 {
                    0 => BlockSize::Max64KB,
                    1 => BlockSize::Max256KB,
                    2 => BlockSize::Max1MB,
                    _ => BlockSize::Max4MB,
                };
                let size_error = u64::from(info.content_size_error.unwrap_or(0));
                let content_size = bytes.len() as u64;
                let frame_info = FrameInfo::new()
                    .block_size(block_size)
                    .block_mode(if info.linked {
                        BlockMode::Linked
                    } else {
                        BlockMode::Independent
                    })
                    .block_checksums(info.block_checksums)
                    .content_checksum(info.content_checksum)
                    .content_size(info.content_size.then_some(content_size));
                let mut encoder = FrameEncoder::with_frame_info(frame_info, Vec::new());
                encoder.write_all(&bytes).expect("encode");
                let start = data.len();
                data.extend(encoder.finish().expect("encode"));
                if info.content_size && size_error != 0 {
                    // The descriptor: FLG, BD, content size; then its checksum byte.
                    let wrong = content_size.wrapping_add(size_error);
                    data[start + 6..start + 14].copy_from_slice(&wrong.to_le_bytes());
                    data[start + 14] =
                        (XxHash32::oneshot(0, &data[start + 4..start + 14]) >> 8) as u8;
                }
                valid &= !info.content_size || size_error == 0;
                content.extend_from_slice(&bytes);
                frames += 1;
            }
        }
    }
    for m in &segment.mutations {
        let at = |at: u32, len: usize| if len == 0 { 0 } else { at as usize % len };
        match m {
            Mutation::Flip { at: i, bit } => {
                if !data.is_empty() {
                    let i = at(*i, data.len());
                    data[i] ^= 1 << (bit % 8);
                }
            }
            Mutation::Set { at: i, value } => {
                if !data.is_empty() {
                    let i = at(*i, data.len());
                    data[i] = *value;
                }
            }
            Mutation::Word { at: i, value } => {
                if data.len() >= 4 {
                    let i = at(*i, data.len() - 3);
                    data[i..i + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            Mutation::Truncate { len } => data.truncate(at(*len, data.len() + 1)),
            Mutation::Insert { at: i, bytes } => {
                let i = at(*i, data.len() + 1);
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove { at: i, len } => {
                let i = at(*i, data.len() + 1);
                let end = (i + usize::from(*len)).min(data.len());
                data.drain(i..end);
            }
        }
    }
    (data, (valid && frames > 0).then_some(content))
}

/// An output that takes `budget` bytes, then refuses; it takes part of a buffer that
/// straddles the budget.
struct Limited {
    out: Vec<u8>,
    budget: Option<usize>,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.budget {
            Some(left) if left == 0 && !buf.is_empty() => {
                return Err(io::Error::other("output full"));
            }
            Some(left) => buf.len().min(left),
            None => buf.len(),
        };
        if let Some(left) = &mut self.budget {
            *left -= n;
        }
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok(Vec<u8>),
    Corrupt(u64, String),
    Write,
}

fn run(decoder: &mut Decoder, data: &[u8], budget: Option<usize>) -> Outcome {
    let mut out = Limited {
        out: Vec::new(),
        budget,
    };
    match decoder.decode(data.to_vec(), &mut out) {
        Ok(n) => {
            assert_eq!(
                n,
                out.out.len() as u64,
                "count differs from the bytes written"
            );
            if let Some(budget) = budget {
                assert!(out.out.len() <= budget);
            }
            Outcome::Ok(out.out)
        }
        Err(DecodeError::Corrupt(e)) => {
            assert!(e.position <= data.len() as u64, "{e} past the end");
            Outcome::Corrupt(e.position, e.what)
        }
        Err(DecodeError::Write(_)) => {
            assert!(
                budget.is_some(),
                "write error from an output that never fails"
            );
            Outcome::Write
        }
    }
}

fuzz_target!(|segments: Vec<Segment>| {
    let mut reused = Decoder::new();
    for segment in segments.iter().take(8) {
        let (data, content) = build(segment);
        let budget = segment.write_budget.map(|b| b as usize);
        let fresh = run(&mut Decoder::new(), &data, None);
        let got = run(&mut reused, &data, budget);
        match (&fresh, &got) {
            // The output refuses the bytes past its budget (if there are any).
            (Outcome::Ok(all), Outcome::Write) => assert!(all.len() > budget.unwrap_or(0)),
            (Outcome::Ok(all), Outcome::Ok(out)) => {
                assert!(
                    budget.is_none_or(|b| all.len() <= b),
                    "output past the budget"
                );
                assert!(out == all, "reused decoder output differs");
            }
            // A refused write may come before the corruption shows.
            (Outcome::Corrupt(..), Outcome::Write) => {}
            _ => assert_eq!(got, fresh, "reused decoder differs from a fresh one"),
        }
        if let Some(content) = &content {
            match &fresh {
                Outcome::Ok(out) => assert!(out == content, "round trip differs"),
                other => panic!("a valid encoding was refused: {other:?}"),
            }
        }
        // lz4_flex's reader stops at the end of the first frame: it is given one frame at a
        // time (skippable frames left out, as `frames` finds them).
        if let Outcome::Ok(out) = &fresh {
            let mut theirs = Vec::new();
            let accepted = frames(&data)
                .expect("the walk accepts what decodes")
                .into_iter()
                .all(|frame| {
                    FrameDecoder::new(&data[frame])
                        .read_to_end(&mut theirs)
                        .is_ok()
                });
            if accepted {
                assert!(&theirs == out, "lz4_flex decodes something else");
            }
        }
    }
});
