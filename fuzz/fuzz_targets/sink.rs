//! The WAL sink: one WAL file assembled from arbitrary segments (slices of a valid WAL built
//! here or of arbitrary bytes, LZ4-encoded with any frame setting, possibly corrupted, or
//! raw bytes), at right or wrong offsets, with arbitrary next offsets, maximum sizes, the WAL
//! check on or off, and an output that may refuse writes, over an in-memory output.
//!
//! Checks: no panic; an append succeeds exactly when the offset is right, the segment
//! decodes, its bytes fit under the next offset and the maximum size, and (when checked) the
//! file stays a valid WAL prefix; then the file grows by exactly the decoded bytes; a failed
//! append leaves the file a prefix of the decoded bytes; the file never grows past the
//! maximum size (nor a segment past the next offset); every error names the sink's index and
//! the right offset and kind; `finish` succeeds exactly when the reference checker accepts
//! the file (when checked), and a file that fails is removed.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use std::io::Write;
use walrestore::core::error::ErrorKind;
use walrestore::core::lz4::Decoder;
use walrestore::core::sink::{Checks, WalSink, temp_file_name, wal_file_name};
use walrestore::core::wal::WalChecker;
use walrestore_fuzz::{MemOutput, WalSpec, reference_check};

const GEN: &str = "0123456789abcdef";

#[derive(Arbitrary, Debug)]
enum Source {
    Wal(WalSpec),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum MaxSize {
    Small(u16),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Encoding {
    Lz4 {
        block_size: u8,
        linked: bool,
        block_checksums: bool,
        content_checksum: bool,
    },
    Corrupted {
        at: u16,
        value: u8,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Offset {
    Right,
    Delta(i8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Next {
    None,
    /// Where this segment's decoded bytes end.
    Right,
    Delta(i16),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    /// How many bytes of the source it takes (the last takes the rest if `rest`).
    len: u16,
    rest: bool,
    encoding: Encoding,
    offset: Offset,
    next: Next,
}

#[derive(Arbitrary, Debug)]
struct Input {
    index: u64,
    max: MaxSize,
    verify_wal: bool,
    source: Source,
    segments: Vec<Segment>,
    write_budget: Option<u32>,
}

fn lz4(data: &[u8], block_size: u8, linked: bool, block_checksums: bool, content: bool) -> Vec<u8> {
    let info = FrameInfo::new()
        .block_size(match block_size % 4 {
            0 => BlockSize::Max64KB,
            1 => BlockSize::Max256KB,
            2 => BlockSize::Max1MB,
            _ => BlockSize::Max4MB,
        })
        .block_mode(if linked {
            BlockMode::Linked
        } else {
            BlockMode::Independent
        })
        .block_checksums(block_checksums)
        .content_checksum(content);
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
    encoder.write_all(data).expect("encode");
    encoder.finish().expect("encode")
}

fuzz_target!(|input: Input| {
    let source = match &input.source {
        Source::Wal(spec) => spec.build(6),
        Source::Bytes(bytes) => bytes.clone(),
    };
    let max_wal_size = match input.max {
        MaxSize::Small(n) => u64::from(n),
        MaxSize::Raw(n) => n,
    };
    let checks = Checks {
        max_wal_size,
        verify_wal: input.verify_wal,
    };
    let index = input.index;
    let name = wal_file_name("wal", index);
    let temp = temp_file_name(&name);
    let mut out = MemOutput::default();
    *out.write_budget.borrow_mut() = input.write_budget.map(|b| b as usize);
    let mut decoder = Decoder::new();
    let mut sink = WalSink::create(&mut out, GEN, "wal", index, checks).expect("create");
    let file = |out: &MemOutput| out.files.borrow().get(&temp).cloned();
    // What the file must hold.
    let mut model: Vec<u8> = Vec::new();
    let mut taken = 0;

    for seg in input.segments.iter().take(8) {
        let before = sink.written();
        assert_eq!(before, model.len() as u64);
        assert_eq!(file(&out).as_deref(), Some(&model[..]));
        assert!(
            before <= max_wal_size,
            "{before} bytes past the maximum {max_wal_size}"
        );

        let len = if seg.rest {
            source.len() - taken
        } else {
            usize::from(seg.len).min(source.len() - taken)
        };
        let slice = &source[taken..taken + len];
        taken += len;
        let data = match &seg.encoding {
            Encoding::Lz4 {
                block_size,
                linked,
                block_checksums,
                content_checksum,
            } => lz4(
                slice,
                *block_size,
                *linked,
                *block_checksums,
                *content_checksum,
            ),
            Encoding::Corrupted { at, value } => {
                let mut data = lz4(slice, 0, false, false, false);
                let i = usize::from(*at) % data.len();
                data[i] = *value;
                data
            }
            Encoding::Raw(bytes) => bytes.clone(),
        };
        // Everything the decoder writes for this segment, up to where it stops.
        let mut decoded = Vec::new();
        let decode_ok = Decoder::new().decode(data.clone(), &mut decoded).is_ok();

        let offset = match seg.offset {
            Offset::Right => before,
            Offset::Delta(d) => before.wrapping_add_signed(i64::from(d)),
            Offset::Raw(x) => x,
        };
        let end = offset.wrapping_add(decoded.len() as u64);
        let next = match seg.next {
            Next::None => None,
            Next::Right => Some(end),
            Next::Delta(d) => Some(end.wrapping_add_signed(i64::from(d))),
            Next::Raw(x) => Some(x),
        };
        let limit = next.map_or(max_wal_size, |n| n.min(max_wal_size));
        let room = limit.saturating_sub(before);
        let mut grown = model.clone();
        grown.extend_from_slice(&decoded);
        let wal_ok = !input.verify_wal || WalChecker::new().update(&grown).is_ok();
        let budget = *out.write_budget.borrow();
        let fits_output = budget.is_none_or(|b| decoded.len() <= b);

        let result = sink.append(&mut decoder, offset, data, next);
        let now = file(&out).expect("the file stays while it is written");
        assert!(sink.written() <= max_wal_size);
        if next.is_some_and(|n| n >= before) {
            assert!(sink.written() <= next.unwrap(), "past the next offset");
        }
        let expect_ok =
            offset == before && decode_ok && decoded.len() as u64 <= room && wal_ok && fits_output;
        match result {
            Ok(()) => {
                assert!(expect_ok, "append accepted a segment it should refuse");
                assert!(now == grown, "the file is not the decoded bytes");
                assert_eq!(sink.written(), grown.len() as u64);
                model = grown;
            }
            Err(e) => {
                assert!(!expect_ok, "append refused a good segment: {e:?}");
                assert_eq!(e.index, Some(index), "{e:?}");
                if e.kind == ErrorKind::Output {
                    // Some bytes of a refused write may have reached the file uncounted.
                    assert!(budget.is_some());
                    assert!(now.len() as u64 >= sink.written());
                    assert!(grown.starts_with(&now));
                } else {
                    assert_eq!(now.len() as u64, sink.written());
                    assert!(grown.starts_with(&now), "the file is not a prefix");
                }
                if offset != before {
                    assert_eq!(e.kind, ErrorKind::MissingOffset, "{e:?}");
                    assert_eq!(e.offset, Some(before));
                    assert!(now == model, "a refused offset wrote something");
                } else if e.message.starts_with("corrupt WAL file: ") {
                    assert!(input.verify_wal);
                    let fault = WalChecker::new()
                        .update(&grown)
                        .expect_err("a WAL fault the checker does not see");
                    assert_eq!(e.offset, Some(fault.offset), "{e:?}");
                } else if e.kind == ErrorKind::Corrupt {
                    assert_eq!(e.offset, Some(offset), "{e:?}");
                    assert!(
                        !decode_ok || decoded.len() as u64 > room,
                        "corrupt segment that decodes and fits: {e:?}"
                    );
                } else {
                    assert_eq!(e.kind, ErrorKind::Output, "{e:?}");
                }
                sink.discard(&mut out);
                assert!(out.files.borrow().is_empty(), "discard leaves a file");
                return;
            }
        }
    }

    let written = model.len() as u64;
    match sink.finish(&mut out) {
        Ok(done) => {
            if input.verify_wal {
                assert_eq!(reference_check(&model).map_err(|(f, _)| f), Ok(()));
            }
            assert_eq!(done.size, written);
            assert_eq!((done.index, &done.name, &done.temp), (index, &name, &temp));
            assert_eq!(file(&out).as_deref(), Some(&model[..]));
        }
        Err(e) => {
            assert!(input.verify_wal, "finish failed unchecked: {e:?}");
            let (fault, _) = reference_check(&model).expect_err("reference accepts the file");
            assert_eq!(e.kind, ErrorKind::Corrupt);
            assert_eq!((e.index, e.offset), (Some(index), Some(fault.offset)));
            assert!(e.message.contains(&fault.text), "{e:?} vs {fault:?}");
            assert!(out.files.borrow().is_empty(), "a failed file is kept");
        }
    }
});
