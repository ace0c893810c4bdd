//! The download state machine end to end, over a scripted replica and an in-memory output.
//!
//! Arbitrary options (range, parallelism, the WAL check, maximum size, attempts, backoff), a
//! few WAL indexes around the range, each cut into segments; each segment has a script of
//! attempts (unavailable, not found, other, a stream that breaks after some bytes, delivered)
//! and a final fate (fine, corrupt LZ4, listed one byte late, or failing). The listing comes
//! in pages of arbitrary sizes and may fail, transiently (it is then started again from where
//! `take_relist` says) or not. Events are interleaved arbitrarily: listing pages, listing end
//! or failure, fetch starts, fetch results in any order, `step`, `begin`, `close`. Then, unless
//! closed, everything outstanding is delivered until the download ends or fails.
//!
//! Checks: no panic; never more fetches in the window than the parallelism; fresh fetches are
//! requested once each in listing order (start 0, no delay), retries only after a transient
//! failure while attempts remain, resuming exactly after the bytes broken streams delivered,
//! with a bounded backoff; a relisting starts at the last index taken; files come back in
//! index order from `min`, each exactly the concatenation of its segments' data; the outcome is
//! the one the script implies (every file then `End` when all is good; a listing error as soon
//! as the listing shows it; otherwise the first bad index's error, and only files before it);
//! an error is returned again by every later `step`, and by `close`; the download never waits
//! with nothing outstanding; the stats count every fetch, retry and resumed byte; after
//! `close`, only returned files remain in the output.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use walrestore::core::download::{Download, FetchFailure, FetchRequest, Step};
use walrestore::core::error::{Error, ErrorKind, ReplicaFailure};
use walrestore::core::plan::{Options, SegmentInfo};
use walrestore::core::sink::wal_file_name;
use walrestore_fuzz::{MemOutput, PlanModel, WalSpec, reference_check};

const GEN: &str = "00000000000000ff";

#[derive(Arbitrary, Debug)]
enum Content {
    Wal(WalSpec, Option<(u16, u8)>),
    Bytes(Vec<u8>),
}

/// One attempt at a segment.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
enum Try {
    Unavailable,
    NotFound,
    Other,
    /// The stream breaks after this many more bytes (or at the end of the segment).
    Break(u16),
    Deliver,
}

#[derive(Arbitrary, Debug)]
struct SegSpec {
    len: u16,
    /// 0..=199: fine; then corrupt LZ4, listed one byte late, or failing every attempt.
    fate: u8,
    block_size: u8,
    linked: bool,
    checksums: bool,
    /// The first attempts; the later ones follow the fate.
    tries: Vec<Try>,
}

#[derive(Arbitrary, Debug)]
struct IndexSpec {
    content: Content,
    /// No segment: the index is not listed.
    segments: Vec<SegSpec>,
}

#[derive(Arbitrary, Debug)]
enum Event {
    Page,
    End,
    ListFail {
        transient: bool,
    },
    NextFetch,
    /// Deliver the result of the n-th outstanding fetch.
    Result(u8),
    Step,
    Begin,
    Close,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: Option<u64>,
    span: u8,
    parallelism: u8,
    verify_wal: bool,
    max_wal_size: Option<u16>,
    max_attempts: u8,
    retry_delay_ms: u32,
    jitter: u64,
    indexes: Vec<IndexSpec>,
    page_sizes: Vec<u8>,
    events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Fine,
    Corrupt,
    Late,
    Fail(u8),
}

fn fate(n: u8) -> Fate {
    match n {
        0..=199 => Fate::Fine,
        200..=214 => Fate::Corrupt,
        215..=229 => Fate::Late,
        n => Fate::Fail(n % 4),
    }
}

fn lz4(data: &[u8], s: &SegSpec) -> Vec<u8> {
    let info = FrameInfo::new()
        .block_size(match s.block_size % 4 {
            0 => BlockSize::Max64KB,
            1 => BlockSize::Max256KB,
            2 => BlockSize::Max1MB,
            _ => BlockSize::Max4MB,
        })
        .block_mode(if s.linked {
            BlockMode::Linked
        } else {
            BlockMode::Independent
        })
        .block_checksums(s.checksums)
        .content_checksum(s.checksums);
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
    encoder.write_all(data).expect("encode");
    encoder.finish().expect("encode")
}

/// One listed segment: its listing entry, the bytes a fetch delivers, its attempt script
/// (attempts past it follow `fate`) and fate.
struct Listed {
    info: SegmentInfo,
    bytes: Vec<u8>,
    tries: Vec<Try>,
    fate: Fate,
}

impl Listed {
    /// What attempt `k` (0-based) does.
    fn attempt(&self, k: usize) -> Try {
        match self.tries.get(k) {
            Some(t) => *t,
            None => match self.fate {
                Fate::Fine | Fate::Corrupt | Fate::Late => Try::Deliver,
                Fate::Fail(0) => Try::NotFound,
                Fate::Fail(1) => Try::Unavailable,
                Fate::Fail(2) => Try::Other,
                Fate::Fail(_) => Try::Break(0),
            },
        }
    }

    /// Whether the segment's bytes arrive within `max_attempts`.
    fn arrives(&self, max_attempts: u32) -> bool {
        for k in 0..max_attempts as usize {
            match self.attempt(k) {
                Try::Deliver => return true,
                Try::Unavailable | Try::Break(_) => {}
                Try::NotFound | Try::Other => return false,
            }
        }
        false
    }
}

fn transient(t: Try) -> bool {
    matches!(t, Try::Unavailable | Try::Break(_))
}

struct Run {
    download: Download<MemOutput>,
    output: MemOutput,
    options: Options,
    listed: Vec<Listed>,
    /// Listing pages still to deliver (positions in `listed`).
    pages: Vec<std::ops::Range<usize>>,
    page_sizes: Vec<u8>,
    ended: bool,
    /// What the plan has taken, as the listing delivered it.
    model: PlanModel,
    listing_attempts: u32,
    /// Fetches handed out and not answered yet.
    pending: Vec<FetchRequest>,
    /// Fresh fetches handed out; per sequence number, attempts handed out and bytes received
    /// from broken streams; the sequence numbers a retry is due for.
    fresh: u64,
    attempts: BTreeMap<u64, usize>,
    received: BTreeMap<u64, u64>,
    retry_due: BTreeSet<u64>,
    requests: u64,
    retries: u64,
    resumed: u64,
    /// Contents of min..=max, and whether each index is good.
    contents: Vec<Vec<u8>>,
    good: Vec<bool>,
    /// The error the listing stopped the download with.
    listing_error: Option<Error>,
    returned: Vec<String>,
    error: Option<Error>,
    end: bool,
}

impl Run {
    fn check_window(&self) {
        assert!(
            self.download.in_window() <= self.options.parallelism as usize,
            "{} in the window",
            self.download.in_window()
        );
    }

    fn listed_of(&self, seq: u64) -> &Listed {
        let info = self.model.accepted[seq as usize];
        self.listed
            .iter()
            .find(|l| l.info == info)
            .expect("a listed segment")
    }

    fn request(&mut self, f: FetchRequest) {
        self.requests += 1;
        assert!(
            (f.seq as usize) < self.model.accepted.len(),
            "a fetch of a segment not taken: {f:?}"
        );
        let info = self.model.accepted[f.seq as usize];
        assert_eq!(
            (f.index, f.offset, f.size),
            (info.index, info.offset, info.size)
        );
        assert!(
            self.pending.iter().all(|p| p.seq != f.seq),
            "two fetches of one segment at once"
        );
        let attempts = self.attempts.entry(f.seq).or_default();
        if self.retry_due.remove(&f.seq) {
            assert!(*attempts >= 1);
            assert_eq!(f.start, self.received.get(&f.seq).copied().unwrap_or(0));
            let bound = self.options.retry_delay_ms.max(10_000);
            assert!(f.delay_ms <= bound, "a backoff of {} ms", f.delay_ms);
        } else {
            assert_eq!(*attempts, 0, "an unasked retry of {f:?}");
            assert_eq!(f.seq, self.fresh, "fresh fetches in sequence order");
            assert_eq!((f.start, f.delay_ms), (0, 0));
            self.fresh += 1;
        }
        *attempts += 1;
        assert!(
            *attempts <= self.options.max_attempts as usize,
            "too many attempts"
        );
        self.pending.push(f);
    }

    fn step(&mut self) -> Option<Step> {
        let mut started = Vec::new();
        let result = self.download.step(&mut |f| started.push(f));
        for f in started {
            self.request(f);
        }
        self.check_window();
        let min = self.options.min_index;
        match result {
            Ok(step) => {
                assert!(self.error.is_none(), "step succeeds after an error");
                match &step {
                    Step::File(f) => {
                        assert!(!self.end);
                        assert!(self.model.complete, "a file before the listing is complete");
                        assert!(self.listing_error.is_none());
                        let i = (f.index - min) as usize;
                        assert_eq!(i, self.returned.len(), "files in index order");
                        assert!(self.good[i], "a bad index was returned: {}", f.index);
                        assert_eq!(f.name, wal_file_name("wal", f.index));
                        assert_eq!(f.size, self.contents[i].len() as u64);
                        let files = self.output.files.borrow();
                        assert!(
                            files.get(&f.name) == Some(&self.contents[i]),
                            "file content"
                        );
                        drop(files);
                        self.returned.push(f.name.clone());
                    }
                    Step::End => {
                        let n = self.options.max_index - min + 1;
                        assert_eq!(self.returned.len() as u64, n, "end before the last file");
                        assert_eq!(self.download.count(), n);
                        self.end = true;
                    }
                    Step::Wait => assert!(!self.end, "wait after the end"),
                }
                Some(step)
            }
            Err(e) => {
                assert!(self.download.is_stopped());
                match &self.error {
                    Some(first) => assert_eq!(&e, first, "a different error"),
                    None => {
                        match &self.listing_error {
                            Some(listing) => assert_eq!(&e, listing),
                            None => {
                                let i = e.index.expect("a data error names its index") - min;
                                let first_bad = self.good.iter().position(|g| !g);
                                assert_eq!(Some(i as usize), first_bad, "{e:?}");
                                assert!(self.returned.len() <= i as usize);
                            }
                        }
                        self.error = Some(e);
                    }
                }
                None
            }
        }
    }

    fn deliver(&mut self, n: usize) {
        if self.pending.is_empty() {
            return;
        }
        let f = self.pending.remove(n % self.pending.len());
        let k = self.attempts[&f.seq] - 1;
        let listed = self.listed_of(f.seq);
        let attempt = listed.attempt(k);
        let start = (f.start as usize).min(listed.bytes.len());
        let bytes = listed.bytes[start..].to_vec();
        let retry = transient(attempt)
            && k + 1 < self.options.max_attempts as usize
            && !self.download.is_stopped();
        match attempt {
            Try::Deliver => self.download.fetch_done(f.seq, bytes),
            Try::Unavailable => self.download.fetch_failed(
                f.seq,
                &FetchFailure::Replica(ReplicaFailure::Unavailable("busy".into())),
            ),
            Try::NotFound => self.download.fetch_failed(
                f.seq,
                &FetchFailure::Replica(ReplicaFailure::NotFound("gone".into())),
            ),
            Try::Other => self.download.fetch_failed(
                f.seq,
                &FetchFailure::Replica(ReplicaFailure::Other("other".into())),
            ),
            Try::Break(n) => {
                let received = bytes[..usize::from(n).min(bytes.len())].to_vec();
                if retry {
                    *self.received.entry(f.seq).or_default() += received.len() as u64;
                    self.resumed += received.len() as u64;
                }
                self.download
                    .fetch_broken(f.seq, &FetchFailure::Stream("reset".into()), received);
            }
        }
        if retry {
            self.retries += 1;
            self.retry_due.insert(f.seq);
        }
        self.check_window();
    }

    /// After a listing event: the download stopped if and only if the model says so.
    fn listing_result(&mut self, result: Result<(), Error>) {
        match result {
            Ok(()) => {
                assert!(!self.download.is_stopped());
                assert_eq!(self.download.wants_listing(), !self.model.complete);
            }
            Err(e) => {
                assert!(
                    self.download.is_stopped(),
                    "the listing error {e:?} was missed"
                );
                self.listing_error = Some(e);
            }
        }
    }

    fn page(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        let range = self.pages.remove(0);
        let page: Vec<SegmentInfo> = self.listed[range].iter().map(|l| l.info).collect();
        let wanted = self.download.wants_listing();
        self.download.listing_page(&page);
        if wanted {
            let result = self.model.page(&page);
            self.listing_result(result);
        }
    }

    fn end_listing(&mut self) {
        self.ended = true;
        let wanted = self.download.wants_listing();
        self.download.listing_end();
        if wanted {
            let result = self.model.finish();
            self.listing_result(result);
        }
    }

    fn list_fail(&mut self, is_transient: bool) {
        let failure = if is_transient {
            ReplicaFailure::Unavailable("listing busy".into())
        } else {
            ReplicaFailure::Other("listing broke".into())
        };
        let wanted = self.download.wants_listing();
        self.download.listing_failed(&failure);
        let relist = self.download.take_relist();
        if !wanted {
            assert_eq!(relist, None);
            return;
        }
        if is_transient && self.listing_attempts < self.options.max_attempts {
            self.listing_attempts += 1;
            self.retries += 1;
            let (from, delay) = relist.expect("a transient listing failure is retried");
            assert_eq!(from, self.model.relist_from());
            assert!(delay <= self.options.retry_delay_ms.max(10_000));
            assert!(!self.download.is_stopped());
            // The store lists again from `from`.
            let first = self.listed.iter().position(|l| l.info.index >= from);
            self.pages = paginate(
                first.unwrap_or(self.listed.len()),
                self.listed.len(),
                &self.page_sizes,
            );
            self.ended = false;
        } else {
            assert_eq!(relist, None);
            self.listing_result(Err(Error::listing(GEN, &failure)));
            self.pages.clear();
            self.ended = true;
        }
    }

    fn next_fetches(&mut self) {
        while let Some(f) = self.download.next_fetch() {
            self.request(f);
            self.check_window();
        }
    }
}

fn paginate(from: usize, to: usize, sizes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut pages = Vec::new();
    let mut at = from;
    for size in sizes.iter().take(16) {
        let end = (at + usize::from(size % 8)).min(to);
        pages.push(at..end);
        at = end;
    }
    pages.push(at..to);
    pages
}

fuzz_target!(|input: Input| {
    let min = input.base.map_or(1, |b| b.clamp(1, u64::MAX - 8));
    let max = min + u64::from(input.span % 4);
    let options = Options {
        generation: GEN.into(),
        min_index: min,
        max_index: max,
        prefix: "wal".into(),
        parallelism: u32::from(input.parallelism % 9),
        verify_wal: input.verify_wal,
        max_wal_size: input.max_wal_size.map_or(4 << 30, u64::from),
        max_attempts: u32::from(input.max_attempts % 5),
        retry_delay_ms: input.retry_delay_ms,
    };

    // The replica: indexes min-1 ..= max+1 at most.
    let mut listed = Vec::new();
    let mut contents = Vec::new();
    let mut good = Vec::new();
    for (n, spec) in input
        .indexes
        .iter()
        .take(input.span as usize % 4 + 3)
        .enumerate()
    {
        let index = min - 1 + n as u64;
        let content = match &spec.content {
            Content::Wal(wal, flip) => {
                let mut wal = wal.clone();
                wal.page_size_log %= 4;
                let mut bytes = wal.build(3);
                if let Some((at, bits)) = flip {
                    let i = usize::from(*at) % bytes.len();
                    bytes[i] ^= bits;
                }
                bytes
            }
            Content::Bytes(bytes) => bytes.clone(),
        };
        let mut index_good = !spec.segments.is_empty()
            && content.len() as u64 <= options.max_wal_size
            && (!options.verify_wal || reference_check(&content).is_ok());
        let mut offset = 0;
        let count = spec.segments.len().min(6);
        for (k, s) in spec.segments.iter().take(count).enumerate() {
            let rest = content.len() - offset;
            let len = if k + 1 == count {
                rest
            } else {
                usize::from(s.len).min(rest)
            };
            let data = &content[offset..offset + len];
            let fate = fate(s.fate);
            let mut bytes = lz4(data, s);
            if fate == Fate::Corrupt {
                // Always corrupt: the frame ends without its EndMark or checksum.
                bytes.pop();
            }
            let listed_segment = Listed {
                info: SegmentInfo {
                    index,
                    offset: offset as u64 + u64::from(fate == Fate::Late),
                    size: bytes.len() as u64,
                },
                bytes,
                tries: s.tries.iter().take(6).copied().collect(),
                fate,
            };
            index_good &= matches!(fate, Fate::Fine | Fate::Fail(_))
                && listed_segment.arrives(options.max_attempts);
            listed.push(listed_segment);
            offset += len;
        }
        if (min..=max).contains(&index) {
            contents.push(content);
            good.push(index_good);
        }
    }
    while contents.len() < (max - min + 1) as usize {
        contents.push(Vec::new());
        good.push(false);
    }
    let page_sizes: Vec<u8> = input.page_sizes.iter().take(16).copied().collect();
    let pages = paginate(0, listed.len(), &page_sizes);

    let output = MemOutput::default();
    let mut download = Download::new(options.clone(), output.clone());
    download.seed_jitter(input.jitter);
    let mut run = Run {
        download,
        output,
        options: options.clone(),
        listed,
        pages,
        page_sizes,
        ended: false,
        model: PlanModel::new(GEN, min, max),
        listing_attempts: 1,
        pending: Vec::new(),
        fresh: 0,
        attempts: BTreeMap::new(),
        received: BTreeMap::new(),
        retry_due: BTreeSet::new(),
        requests: 0,
        retries: 0,
        resumed: 0,
        contents,
        good,
        listing_error: None,
        returned: Vec::new(),
        error: None,
        end: false,
    };

    let valid = options.validate();
    match run.download.begin() {
        Ok(started) => assert!(started && valid.is_ok()),
        Err(e) => {
            assert_eq!(Err(&e), valid.as_ref());
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert_eq!(
                run.download.step(&mut |_| panic!("a fetch")),
                Err(e.clone())
            );
            assert_eq!(run.download.close(), Err(e));
            return;
        }
    }

    let mut closed = false;
    for event in input.events.iter().take(200) {
        match event {
            Event::Page => run.page(),
            Event::End => {
                if !run.pages.is_empty() {
                    run.page();
                } else if !run.ended {
                    run.end_listing();
                }
            }
            Event::ListFail { transient } => {
                if !run.ended {
                    run.list_fail(*transient);
                }
            }
            Event::NextFetch => run.next_fetches(),
            Event::Result(n) => run.deliver(usize::from(*n)),
            Event::Step => {
                run.step();
            }
            Event::Begin => {
                let again = run.download.begin();
                if !run.download.is_stopped() {
                    assert_eq!(again, Ok(false));
                }
            }
            Event::Close => {
                let result = run.download.close();
                if let Some(e) = &run.error {
                    assert_eq!(result.as_ref(), Err(e));
                }
                closed = true;
                break;
            }
        }
    }

    if !closed {
        // Deliver everything outstanding until the download ends or fails.
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "the download does not finish");
            match run.step() {
                None | Some(Step::End) => break,
                Some(Step::File(_)) => continue,
                Some(Step::Wait) => {}
            }
            run.next_fetches();
            if !run.pending.is_empty() {
                let n = run.pending.len() - 1;
                run.deliver(n);
            } else if !run.pages.is_empty() {
                run.page();
            } else if !run.ended {
                run.end_listing();
            } else {
                panic!("the download waits with nothing outstanding");
            }
        }
        // The outcome the script implies.
        if run.error.is_none() {
            assert!(run.end);
            assert!(run.good.iter().all(|g| *g), "a bad index passed");
        }
        let stats = run.download.stats();
        assert_eq!(stats.fetches, run.requests);
        assert_eq!(stats.retries, run.retries);
        assert_eq!(stats.resumed_bytes, run.resumed);
        // `close` reports the error `step` returned, or none after the end.
        let result = run.download.close();
        assert_eq!(result, run.error.clone().map_or(Ok(()), Err));
        assert_eq!(run.download.close(), result);
    }

    // Only the returned files remain.
    assert!(
        run.download
            .step(&mut |_| panic!("a fetch after close"))
            .is_err()
    );
    let names: BTreeSet<String> = run.output.files.borrow().keys().cloned().collect();
    let returned: BTreeSet<String> = run.returned.iter().cloned().collect();
    assert_eq!(names, returned, "files left in the output");
    drop(run.download);
    assert_eq!(run.output.files.borrow().len(), run.returned.len());
});
