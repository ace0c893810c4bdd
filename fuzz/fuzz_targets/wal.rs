//! The streaming SQLite WAL checker, in two modes:
//!
//! - arbitrary bytes, fed whole and in arbitrary pieces (split points from the input);
//! - a valid WAL built here (header and frames with correct cumulative checksums, random or
//!   compressible pages, either byte order), which must pass however it is split, then
//!   mutated by the input (bit flips, field edits, truncation, appended, dropped or repeated
//!   frames, optionally with every checksum made to match again so that deeper checks are
//!   reached) and checked again.
//!
//! Checks: no panic; the verdict of `finish` is the same however the bytes are split, and is
//! the verdict of an independent whole-file reference checker (fault frame, offset and text);
//! `update` fails exactly once the fault is certain (a header fault at byte 32, a salt or page
//! number fault at the end of that frame header, a checksum fault at the end of that frame),
//! always with the same fault afterwards.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use walrestore_fuzz::{
    FRAME_HEADER, WAL_HEADER, WalSpec, be32, check_in_pieces, put32, rechecksum,
};

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
    /// A header field (word 0..8: magic, version, page size, checkpoint, salts, checksum).
    Header {
        word: u8,
        value: u32,
    },
    /// A frame header field (word 0..6: page number, commit size, salts, checksum).
    Frame {
        frame: u8,
        word: u8,
        value: u32,
    },
    Truncate {
        len: u32,
    },
    Append(Vec<u8>),
    DropFrame(u8),
    RepeatFrame(u8),
    /// Make every checksum match again, in this byte order.
    Rechecksum {
        big_endian: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        bytes: Vec<u8>,
        cuts: Vec<u16>,
    },
    Built {
        spec: WalSpec,
        mutations: Vec<Mutation>,
        cuts: Vec<u32>,
    },
}

/// Frame `frame` (modulo the number of whole frames), by the built WAL's page size even if the
/// header was edited since.
fn frame_range(wal: &[u8], spec: &WalSpec, frame: u8) -> Option<std::ops::Range<usize>> {
    let size = FRAME_HEADER + spec.page_size();
    let frames = wal.len().checked_sub(WAL_HEADER)? / size;
    if frames == 0 {
        return None;
    }
    let start = WAL_HEADER + usize::from(frame) % frames * size;
    Some(start..start + size)
}

fn mutate(wal: &mut Vec<u8>, spec: &WalSpec, m: &Mutation) {
    let pos = |at: u32, len: usize| at as usize % len;
    match m {
        Mutation::Flip { at, bit } => {
            if !wal.is_empty() {
                let i = pos(*at, wal.len());
                wal[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::Set { at, value } => {
            if !wal.is_empty() {
                let i = pos(*at, wal.len());
                wal[i] = *value;
            }
        }
        Mutation::Header { word, value } => {
            let at = usize::from(word % 8) * 4;
            if wal.len() >= at + 4 {
                put32(wal, at, *value);
            }
        }
        Mutation::Frame { frame, word, value } => {
            if let Some(r) = frame_range(wal, spec, *frame) {
                put32(wal, r.start + usize::from(word % 6) * 4, *value);
            }
        }
        Mutation::Truncate { len } => wal.truncate(pos(*len, wal.len() + 1)),
        Mutation::Append(bytes) => wal.extend_from_slice(bytes),
        Mutation::DropFrame(frame) => {
            if let Some(r) = frame_range(wal, spec, *frame) {
                wal.drain(r);
            }
        }
        Mutation::RepeatFrame(frame) => {
            if let Some(r) = frame_range(wal, spec, *frame) {
                let copy = wal[r.clone()].to_vec();
                wal.splice(r.end..r.end, copy);
            }
        }
        Mutation::Rechecksum { big_endian } => rechecksum(wal, *big_endian),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { bytes, cuts } => {
            let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c)).collect();
            let whole = check_in_pieces(&bytes, &[]);
            assert_eq!(check_in_pieces(&bytes, &cuts), whole);
        }
        Input::Built {
            spec,
            mutations,
            cuts,
        } => {
            let mut wal = spec.build(8);
            let cuts: Vec<usize> = cuts.iter().map(|&c| c as usize).collect();
            if let Err(fault) = check_in_pieces(&wal, &cuts) {
                panic!("a valid WAL fails: {fault:?}");
            }
            if mutations.is_empty() {
                return;
            }
            for m in mutations.iter().take(8) {
                mutate(&mut wal, &spec, m);
            }
            let whole = check_in_pieces(&wal, &[]);
            assert_eq!(check_in_pieces(&wal, &cuts), whole);
            // Sanity of the reference on what the mutations left: a file that passes is a
            // header and whole frames.
            if whole.is_ok() {
                let size = FRAME_HEADER + be32(&wal, 8) as usize;
                assert_eq!((wal.len() - WAL_HEADER) % size, 0);
            }
        }
    }
});
