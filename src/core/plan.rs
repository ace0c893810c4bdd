//! What to download: the validated options, and the segment positions the listing delivers,
//! checked for order and for gaps between indexes, handed out for fetching as soon as listed.

use std::collections::VecDeque;

use super::error::Error;

/// The downloader's options; mirrors the WIT `options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Generation to read, 16 lowercase hex digits.
    pub generation: String,
    /// First WAL index to download (inclusive).
    pub min_index: u64,
    /// Last WAL index to download (inclusive).
    pub max_index: u64,
    /// Output files are named `<prefix>-<index, 16 hex>-wal`.
    pub prefix: String,
    /// Most segments in the window at once.
    pub parallelism: u32,
    /// Check each WAL file's header, frames and checksums before handing it out.
    pub verify_wal: bool,
    /// Largest WAL file accepted, in bytes.
    pub max_wal_size: u64,
    /// Attempts at a fetch or listing that fails with a transient error (unavailable, or a
    /// stream that breaks), the first included.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts, in milliseconds.
    pub retry_delay_ms: u32,
}

impl Options {
    /// Checks the options in Litestream's order: range, parallelism, then (not Litestream's)
    /// the maximum WAL size, generation and prefix.
    pub fn validate(&self) -> Result<(), Error> {
        if self.min_index > self.max_index {
            return Err(Error::range_inverted());
        }
        if self.parallelism == 0 {
            return Err(Error::parallelism_zero());
        }
        if self.max_wal_size == 0 {
            return Err(Error::max_wal_size_zero());
        }
        if self.max_attempts == 0 {
            return Err(Error::max_attempts_zero());
        }
        let generation = self.generation.as_bytes();
        if generation.len() != 16
            || !generation
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::invalid_generation(&self.generation));
        }
        let prefix = self.prefix.as_str();
        if prefix.is_empty()
            || prefix == "."
            || prefix == ".."
            || prefix.contains(['/', '\\', '\0'])
        {
            return Err(Error::invalid_prefix(prefix));
        }
        Ok(())
    }
}

/// One WAL segment as listed: its position and its compressed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// WAL index.
    pub index: u64,
    /// Offset of the segment's decompressed bytes in its WAL file.
    pub offset: u64,
    /// Compressed size as the store reports it.
    pub size: u64,
}

/// The listed segments of `min..=max`, numbered in global (index, offset) order by a sequence
/// number starting at 0.
#[derive(Debug)]
pub struct Plan {
    generation: String,
    min_index: u64,
    max_index: u64,
    /// Listed segments not yet released; `segments[0]` has sequence number `first_seq`.
    segments: VecDeque<SegmentInfo>,
    first_seq: u64,
    /// Sequence number of the next segment to hand out for fetching.
    next_fetch: u64,
    /// The last accepted position, for the order and gap checks.
    last: Option<(u64, u64)>,
    /// The listing ended, or passed `max_index`: no more segments will be accepted.
    complete: bool,
    /// A listing started again after a failure delivers again what was already taken: up to
    /// this position, segments are skipped, not checked for order.
    replay_through: Option<(u64, u64)>,
}

impl Plan {
    /// An empty plan for validated `options`.
    pub fn new(options: &Options) -> Plan {
        Plan {
            generation: options.generation.clone(),
            min_index: options.min_index,
            max_index: options.max_index,
            segments: VecDeque::new(),
            first_seq: 0,
            next_fetch: 0,
            last: None,
            complete: false,
            replay_through: None,
        }
    }

    /// Where a listing started again after a failure must begin: the index of the last
    /// position taken (its earlier segments are then skipped), or `min_index`.
    pub fn relist_from(&mut self) -> u64 {
        self.replay_through = self.last;
        self.last.map_or(self.min_index, |(index, _)| index)
    }

    /// Takes one listing page. Segments before `min_index` are ignored; the first one after
    /// `max_index` completes the plan. A position that does not follow the previous one, or
    /// an index that skips one, is an error.
    pub fn ingest(&mut self, page: &[SegmentInfo]) -> Result<(), Error> {
        for info in page {
            if self.complete {
                return Ok(());
            }
            if info.index < self.min_index {
                continue;
            }
            if let Some(through) = self.replay_through {
                if (info.index, info.offset) <= through {
                    continue;
                }
                self.replay_through = None;
            }
            if let Some(last) = self.last
                && (info.index, info.offset) <= last
            {
                return Err(Error::listing_out_of_order(
                    &self.generation,
                    info.index,
                    info.offset,
                ));
            }
            if info.index > self.max_index {
                return self.finish();
            }
            let expected = match self.last {
                None => self.min_index,
                Some((index, _)) if index == info.index => index,
                // `index < max_index` here, so this does not overflow.
                Some((index, _)) => index + 1,
            };
            if info.index != expected {
                return Err(Error::wal_not_found(&self.generation, expected));
            }
            self.last = Some((info.index, info.offset));
            self.segments.push_back(*info);
        }
        Ok(())
    }

    /// The listing ended (or passed `max_index`): every index up to `max_index` must have been
    /// listed.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.complete = true;
        match self.last {
            None => Err(Error::wal_not_found(&self.generation, self.min_index)),
            Some((index, _)) if index < self.max_index => {
                Err(Error::wal_not_found(&self.generation, index + 1))
            }
            Some(_) => Ok(()),
        }
    }

    /// Whether the listing is over: no more segments will be planned.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Hands out the next listed segment that has not been handed out yet, with its sequence
    /// number.
    pub fn next_to_fetch(&mut self) -> Option<(u64, SegmentInfo)> {
        let info = self.get(self.next_fetch)?;
        let seq = self.next_fetch;
        self.next_fetch += 1;
        Some((seq, info))
    }

    /// The segment with sequence number `seq`, if it is listed and not released.
    pub fn get(&self, seq: u64) -> Option<SegmentInfo> {
        let i = seq.checked_sub(self.first_seq)?;
        self.segments.get(usize::try_from(i).ok()?).copied()
    }

    /// Forgets the segments before `seq` (they are written).
    pub fn release_before(&mut self, seq: u64) {
        while self.first_seq < seq && self.first_seq < self.next_fetch {
            if self.segments.pop_front().is_none() {
                break;
            }
            self.first_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorKind;

    fn options(min: u64, max: u64) -> Options {
        Options {
            generation: "0123456789abcdef".into(),
            min_index: min,
            max_index: max,
            prefix: "wal".into(),
            parallelism: 4,
            verify_wal: true,
            max_wal_size: 4 << 30,
            max_attempts: 1,
            retry_delay_ms: 0,
        }
    }

    #[test]
    fn a_relisting_skips_what_was_taken() {
        let mut plan = Plan::new(&options(0, 3));
        plan.ingest(&[seg(0, 0), seg(1, 0), seg(1, 10)]).unwrap();
        assert_eq!(plan.relist_from(), 1);
        // The new listing starts at index 1 again (and may hold older segments too).
        plan.ingest(&[seg(1, 0), seg(1, 10), seg(1, 20), seg(2, 0)])
            .unwrap();
        plan.ingest(&[seg(3, 0)]).unwrap();
        plan.finish().unwrap();
        assert_eq!(
            drain(&mut plan),
            vec![
                (0, 0, 0),
                (1, 1, 0),
                (2, 1, 10),
                (3, 1, 20),
                (4, 2, 0),
                (5, 3, 0)
            ]
        );
        // Past the replayed part, order is checked again.
        let mut plan = Plan::new(&options(0, 3));
        plan.ingest(&[seg(0, 0)]).unwrap();
        plan.relist_from();
        plan.ingest(&[seg(0, 0), seg(1, 0)]).unwrap();
        assert!(
            plan.ingest(&[seg(1, 0)]).is_err(),
            "a repeat after the replay"
        );
    }

    fn seg(index: u64, offset: u64) -> SegmentInfo {
        SegmentInfo {
            index,
            offset,
            size: 10,
        }
    }

    fn drain(plan: &mut Plan) -> Vec<(u64, u64, u64)> {
        std::iter::from_fn(|| plan.next_to_fetch().map(|(s, i)| (s, i.index, i.offset))).collect()
    }

    #[test]
    fn validation_order_and_messages() {
        let mut o = options(2, 1);
        o.parallelism = 0;
        assert_eq!(
            o.validate().unwrap_err().message,
            "minimum index cannot be larger than maximum index"
        );
        o.max_index = 2;
        assert_eq!(
            o.validate().unwrap_err().message,
            "parallelism must be at least one"
        );
        o.parallelism = 1;
        o.max_wal_size = 0;
        o.generation = "bad".into();
        assert_eq!(
            o.validate().unwrap_err().message,
            "maximum WAL size must be at least one byte"
        );
        o.max_wal_size = 1;
        for bad in [
            "",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcdeg",
        ] {
            o.generation = bad.into();
            let e = o.validate().unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert_eq!(
                e.message,
                format!("invalid generation {bad:?}: want 16 lowercase hex digits")
            );
        }
        o.generation = "0000000000000000".into();
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            o.prefix = bad.into();
            let e = o.validate().unwrap_err();
            assert!(
                e.message
                    .starts_with(&format!("invalid prefix {bad:?}: want a non-empty")),
                "{}",
                e.message
            );
        }
        for good in ["wal", "..a", "x.y"] {
            o.prefix = good.into();
            assert_eq!(o.validate(), Ok(()));
        }
    }

    #[test]
    fn range_filter_and_fetch_order() {
        let mut plan = Plan::new(&options(1, 2));
        plan.ingest(&[seg(0, 0), seg(0, 5), seg(1, 0)]).unwrap();
        // Segments are handed out as soon as they are listed.
        assert_eq!(drain(&mut plan), vec![(0, 1, 0)]);
        assert!(!plan.is_complete());
        plan.ingest(&[]).unwrap();
        plan.ingest(&[seg(1, 7), seg(2, 0), seg(3, 0), seg(4, 0)])
            .unwrap();
        assert!(plan.is_complete());
        assert_eq!(drain(&mut plan), vec![(1, 1, 7), (2, 2, 0)]);
        // Pages after the plan is complete are ignored.
        plan.ingest(&[seg(9, 0)]).unwrap();
        assert_eq!(plan.next_to_fetch(), None);
    }

    #[test]
    fn listing_end_completes() {
        let mut plan = Plan::new(&options(0, 1));
        plan.ingest(&[seg(0, 0), seg(1, 0)]).unwrap();
        assert!(!plan.is_complete());
        plan.finish().unwrap();
        assert!(plan.is_complete());
    }

    #[test]
    fn gaps_are_wal_not_found() {
        let cases: &[(&[SegmentInfo], u64)] = &[
            (&[], 0),                     // empty listing
            (&[seg(1, 0), seg(2, 0)], 0), // missing initial
            (&[seg(0, 0), seg(2, 0)], 1), // missing middle
            (&[seg(0, 0), seg(1, 0)], 2), // missing ending
            (&[seg(3, 0)], 0),            // only past max
        ];
        for (page, missing) in cases {
            let mut plan = Plan::new(&options(0, 2));
            let e = plan.ingest(page).and_then(|()| plan.finish()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::WalNotFound, "{page:?}");
            assert_eq!(e.index, Some(*missing), "{page:?}");
            assert_eq!(
                e.message,
                format!("wal not found: generation=0123456789abcdef index={missing:016x}")
            );
        }
    }

    #[test]
    fn out_of_order_listing_is_an_error() {
        for page in [
            &[seg(0, 0), seg(1, 0), seg(0, 5)][..],
            &[seg(0, 4), seg(0, 4)],
            &[seg(0, 4), seg(0, 2)],
        ] {
            let mut plan = Plan::new(&options(0, 2));
            let e = plan.ingest(page).unwrap_err();
            assert_eq!(e.kind, ErrorKind::ReplicaOther);
            assert!(
                e.message
                    .starts_with("wal segments: listing out of order at index="),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn offsets_are_not_prechecked() {
        // A hole in the offsets is the sink's error, at that index's turn.
        let mut plan = Plan::new(&options(0, 0));
        plan.ingest(&[seg(0, 0), seg(0, 0x3068)]).unwrap();
        plan.finish().unwrap();
        assert_eq!(drain(&mut plan).len(), 2);
    }

    #[test]
    fn max_index_u64_max() {
        let mut plan = Plan::new(&options(u64::MAX - 1, u64::MAX));
        plan.ingest(&[seg(u64::MAX - 1, 0), seg(u64::MAX, 0)])
            .unwrap();
        plan.finish().unwrap();
        assert_eq!(drain(&mut plan).len(), 2);
    }

    #[test]
    fn release_forgets_written_segments() {
        let mut plan = Plan::new(&options(0, 0));
        plan.ingest(&[seg(0, 0), seg(0, 1), seg(0, 2)]).unwrap();
        drain(&mut plan);
        plan.release_before(2);
        assert_eq!(plan.get(1), None);
        assert_eq!(plan.get(2), Some(seg(0, 2)));
    }
}
