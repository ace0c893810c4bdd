//! The listing plan: arbitrary options and arbitrary listing pages of (index, offset, size),
//! ingested page by page with fetches and releases in between, as the download drives it.
//!
//! Checks: `validate` accepts exactly the options it documents; `ingest`/`finish` never panic
//! and agree with a straightforward model of the listing rules (range filter, order, no
//! missing index, the first index past `max` completes, a listing started again after a
//! failure skips what was already taken); `relist_from` names the last index taken; the fetch
//! order is strictly increasing (index, offset), within `min..=max`, with no index skipped;
//! `get` returns exactly the listed, unreleased segments.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use walrestore::core::error::ErrorKind;
use walrestore::core::plan::{Options, Plan, SegmentInfo};
use walrestore_fuzz::PlanModel;

#[derive(Arbitrary, Debug)]
enum Text {
    /// A valid generation from these bits (16 lowercase hex digits).
    Hex(u64),
    /// Anything.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Index {
    /// `min_index - 2 + n` (wrapping): near the range, so that listings mostly make sense.
    Near(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct Seg {
    index: Index,
    offset: u16,
    raw_offset: Option<u64>,
    size: u64,
}

#[derive(Arbitrary, Debug)]
enum Event {
    Page(Vec<Seg>),
    /// Hand out up to this many segments for fetching.
    Fetch(u8),
    /// Release before the sequence number `next_fetch - n` (wrapping) or a raw one.
    Release(u8),
    ReleaseRaw(u64),
    Get(u64),
    End,
    /// The listing failed transiently and starts again (`relist_from`).
    Relist,
    /// A page of a listing started again: the last `n` segments taken, then more.
    Replay(u8, Vec<Seg>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    generation: Text,
    prefix: Text,
    min_index: Index,
    /// `max_index = min_index + span` (saturating) unless `raw_max` is given.
    span: u8,
    raw_max: Option<u64>,
    parallelism: u32,
    verify_wal: bool,
    max_wal_size: u64,
    max_attempts: u32,
    retry_delay_ms: u32,
    events: Vec<Event>,
}

fn text(t: &Text) -> String {
    match t {
        Text::Hex(bits) => format!("{bits:016x}"),
        Text::Raw(s) => s.clone(),
    }
}

/// The documented validation rules, in their order.
fn valid(o: &Options) -> Result<(), ErrorKind> {
    let invalid = Err(ErrorKind::InvalidArgument);
    if o.min_index > o.max_index || o.parallelism == 0 || o.max_wal_size == 0 || o.max_attempts == 0
    {
        return invalid;
    }
    let gen_ok = o.generation.len() == 16
        && o.generation
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    let p = &o.prefix;
    let prefix_ok = !p.is_empty()
        && p != "."
        && p != ".."
        && !p.contains('/')
        && !p.contains('\\')
        && !p.contains('\0');
    if !gen_ok || !prefix_ok {
        return invalid;
    }
    Ok(())
}

fuzz_target!(|input: Input| {
    let resolve = |i: &Index, min: u64| match i {
        Index::Near(n) => min.wrapping_sub(2).wrapping_add(u64::from(*n)),
        Index::Raw(x) => *x,
    };
    let min_index = resolve(&input.min_index, 2);
    let options = Options {
        generation: text(&input.generation),
        min_index,
        max_index: input
            .raw_max
            .unwrap_or(min_index.saturating_add(u64::from(input.span))),
        prefix: text(&input.prefix),
        parallelism: input.parallelism,
        verify_wal: input.verify_wal,
        max_wal_size: input.max_wal_size,
        max_attempts: input.max_attempts,
        retry_delay_ms: input.retry_delay_ms,
    };
    let validated = options.validate();
    assert_eq!(
        validated.as_ref().map(|_| ()).map_err(|e| e.kind),
        valid(&options),
        "{options:?}"
    );
    if validated.is_err() {
        // Plans are only made from validated options.
        return;
    }

    let mut plan = Plan::new(&options);
    let mut model = PlanModel::new(&options.generation, options.min_index, options.max_index);
    // The listing failed: the download stops listing.
    let mut failed = false;
    // Handed out for fetching, and released, so far (sequence numbers).
    let mut handed = 0u64;
    let mut released = 0u64;
    let mut last_handed: Option<SegmentInfo> = None;

    for event in &input.events {
        match event {
            Event::Page(segs) | Event::Replay(_, segs) => {
                if failed {
                    // The download stops at the first listing error.
                    continue;
                }
                let mut page: Vec<SegmentInfo> = Vec::new();
                if let Event::Replay(back, _) = event {
                    let n = model.accepted.len();
                    page.extend_from_slice(&model.accepted[n - usize::from(*back).min(n)..]);
                }
                page.extend(segs.iter().map(|s| SegmentInfo {
                    index: resolve(&s.index, min_index),
                    offset: s.raw_offset.unwrap_or(u64::from(s.offset)),
                    size: s.size,
                }));
                let got = plan.ingest(&page);
                let want = model.page(&page);
                assert_eq!(got, want, "page {page:?}");
                failed = got.is_err();
            }
            Event::Relist => {
                // Only while the listing is wanted.
                if !failed && !model.complete {
                    assert_eq!(plan.relist_from(), model.relist_from());
                }
            }
            Event::End => {
                if failed || model.complete {
                    continue;
                }
                let got = plan.finish();
                assert_eq!(got, model.finish());
                failed = got.is_err();
            }
            Event::Fetch(n) => {
                for _ in 0..*n {
                    let Some((seq, info)) = plan.next_to_fetch() else {
                        assert_eq!(handed, model.accepted.len() as u64, "fetch stopped early");
                        break;
                    };
                    assert_eq!(seq, handed, "sequence numbers are consecutive");
                    assert_eq!(info, model.accepted[seq as usize]);
                    assert!((options.min_index..=options.max_index).contains(&info.index));
                    match last_handed {
                        None => assert_eq!(info.index, options.min_index),
                        Some(last) => {
                            assert!((info.index, info.offset) > (last.index, last.offset));
                            assert!(info.index - last.index <= 1, "an index was skipped");
                        }
                    }
                    last_handed = Some(info);
                    handed += 1;
                }
            }
            Event::Release(back) => {
                let seq = handed.wrapping_sub(u64::from(*back));
                plan.release_before(seq);
                released = released.max(seq.min(handed));
            }
            Event::ReleaseRaw(seq) => {
                plan.release_before(*seq);
                released = released.max((*seq).min(handed));
            }
            Event::Get(n) => {
                let len = model.accepted.len() as u64 + 2;
                let seq = if *n >= u64::MAX - 16 { *n } else { n % len };
                check_get(&plan, &model, released, seq);
            }
        }
        assert_eq!(plan.is_complete(), model.complete);
        for seq in [
            released.wrapping_sub(1),
            released,
            handed.wrapping_sub(1),
            handed,
        ] {
            check_get(&plan, &model, released, seq);
        }
    }

    // A plan that completed without error covers every index of the range.
    if model.complete && !failed {
        let indexes: Vec<u64> = model.accepted.iter().map(|s| s.index).collect();
        assert_eq!(indexes.first(), Some(&options.min_index));
        assert_eq!(indexes.last(), Some(&options.max_index));
    }
});

fn check_get(plan: &Plan, model: &PlanModel, released: u64, seq: u64) {
    let want = if seq >= released && seq < model.accepted.len() as u64 {
        Some(model.accepted[seq as usize])
    } else {
        None
    };
    assert_eq!(
        plan.get(seq),
        want,
        "get({seq}), released before {released}"
    );
}
