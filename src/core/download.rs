//! The downloader's state machine, driven by events: listing pages, fetch results, and calls to
//! [`Download::step`]. It decides which fetches to start, writes the head of the window in
//! order, and hands back complete WAL files strictly in index order. The glue only moves bytes
//! and resources between it and the host.

use std::collections::{BTreeMap, VecDeque};

use super::error::{Error, ReplicaFailure};
use super::lz4::Decoder;
use super::plan::{Options, Plan, SegmentInfo};
use super::sink::{Checks, CompletedFile, Output, WalSink};
use super::window::{Slot, Window};

/// A segment fetch to start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The segment's sequence number, to report its result with.
    pub seq: u64,
    /// WAL index.
    pub index: u64,
    /// Segment offset.
    pub offset: u64,
    /// Listed compressed size.
    pub size: u64,
    /// The first compressed byte to fetch: 0, or where a broken stream stopped.
    pub start: u64,
    /// Milliseconds to wait before starting the fetch: 0, or the backoff of a retry.
    pub delay_ms: u32,
}

/// Counters of a download.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Fetches started, retries included.
    pub fetches: u64,
    /// Fetches and listings started again after a transient failure.
    pub retries: u64,
    /// Compressed bytes kept from broken streams (not fetched again).
    pub resumed_bytes: u64,
}

/// The longest backoff between two attempts, whatever the base delay.
const MAX_RETRY_DELAY_MS: u64 = 10_000;

/// A segment whose fetch failed transiently at least once.
#[derive(Debug, Default)]
struct Retrying {
    /// Attempts started so far.
    attempts: u32,
    /// The bytes broken streams delivered so far: the next attempt starts after them.
    received: Vec<u8>,
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// The replica refused the fetch.
    Replica(ReplicaFailure),
    /// The stream broke part way through; the text describes why.
    Stream(String),
}

/// A complete WAL file under its final name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// Its WAL index.
    pub index: u64,
    /// Its name in the output directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What [`Download::step`] got to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The next WAL file, in index order.
    File(WalFile),
    /// Every file up to `max_index` has been returned.
    End,
    /// Waiting for a listing page or a fetch.
    Wait,
}

/// One download of `min_index..=max_index`.
pub struct Download<O: Output> {
    options: Options,
    output: O,
    plan: Option<Plan>,
    window: Window,
    decoder: Decoder,
    /// The file being written: the index of the head segment.
    sink: Option<WalSink<O::File>>,
    /// A complete file waiting to be returned (until the listing is complete).
    ready: Option<CompletedFile>,
    exhausted: bool,
    count: u64,
    /// The error `step` returns from now on.
    stored: Option<Error>,
    /// The first fetch error seen, reached by `step` or not.
    observed: Option<Error>,
    close_result: Option<Result<(), Error>>,
    /// Segments being retried, by sequence number.
    retrying: BTreeMap<u64, Retrying>,
    /// Retries to hand to the caller's `start` at the next `step`.
    retries_due: VecDeque<FetchRequest>,
    /// Listing attempts started so far, and a listing to start again `(min_index, delay)`.
    listing_attempts: u32,
    relist: Option<(u64, u32)>,
    stats: Stats,
    /// State of the backoff jitter's generator (SplitMix64).
    jitter: u64,
}

impl<O: Output> Download<O> {
    /// A download that has not started.
    pub fn new(options: Options, output: O) -> Download<O> {
        let window = Window::new(options.parallelism);
        Download {
            options,
            output,
            plan: None,
            window,
            decoder: Decoder::new(),
            sink: None,
            ready: None,
            exhausted: false,
            count: 0,
            stored: None,
            observed: None,
            close_result: None,
            retrying: BTreeMap::new(),
            retries_due: VecDeque::new(),
            listing_attempts: 1,
            relist: None,
            stats: Stats::default(),
            jitter: 0x5eed,
        }
    }

    /// Seeds the backoff jitter (the glue passes a random number; tests a fixed one).
    pub fn seed_jitter(&mut self, seed: u64) {
        self.jitter = seed;
    }

    /// The download's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The delay before attempt `attempt + 1` (`attempt` >= 1 done): the base delay doubled
    /// per attempt, at most `MAX_RETRY_DELAY_MS`, with "equal jitter" (between half and all of
    /// it), so that retries of many fetches spread out.
    fn backoff(&mut self, attempt: u32) -> u32 {
        let base = u64::from(self.options.retry_delay_ms);
        let full = base
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(MAX_RETRY_DELAY_MS.max(base));
        self.jitter = self.jitter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let half = full / 2;
        u32::try_from(half + z % (full - half + 1)).unwrap_or(u32::MAX)
    }

    /// A listing to start again after a transient failure: from which index, after how many
    /// milliseconds. Taken once.
    pub fn take_relist(&mut self) -> Option<(u64, u32)> {
        self.relist.take()
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Starts the download on the first call: validates the options. Returns whether this call
    /// started it (the caller then starts the listing at `min_index`).
    pub fn begin(&mut self) -> Result<bool, Error> {
        if let Some(e) = &self.stored {
            return Err(e.clone());
        }
        if self.plan.is_some() {
            return Ok(false);
        }
        if let Err(e) = self.options.validate() {
            self.fail(e.clone());
            return Err(e);
        }
        self.plan = Some(Plan::new(&self.options));
        Ok(true)
    }

    /// Whether the listing is still needed (false once it completed, passed `max_index`, or
    /// the download failed or was closed): the caller drops it when this turns false.
    pub fn wants_listing(&self) -> bool {
        self.stored.is_none() && self.plan.as_ref().is_some_and(|p| !p.is_complete())
    }

    /// Takes a listing page.
    pub fn listing_page(&mut self, page: &[SegmentInfo]) {
        if !self.wants_listing() {
            return;
        }
        if let Some(Err(e)) = self.plan.as_mut().map(|p| p.ingest(page)) {
            self.fail(e);
        }
    }

    /// The listing ended.
    pub fn listing_end(&mut self) {
        if !self.wants_listing() {
            return;
        }
        if let Some(Err(e)) = self.plan.as_mut().map(Plan::finish) {
            self.fail(e);
        }
    }

    /// The listing failed. A transient failure starts it again (see `take_relist`), from the
    /// last index it delivered, while attempts remain.
    pub fn listing_failed(&mut self, failure: &ReplicaFailure) {
        if !self.wants_listing() {
            return;
        }
        if failure.is_transient()
            && self.listing_attempts < self.options.max_attempts
            && let Some(plan) = self.plan.as_mut()
        {
            let from = plan.relist_from();
            self.listing_attempts += 1;
            self.stats.retries += 1;
            let delay = self.backoff(self.listing_attempts - 1);
            self.relist = Some((from, delay));
            return;
        }
        self.fail(Error::listing(&self.options.generation, failure));
    }

    /// The next fetch to start: a retry whose turn it is, or a new one if the window has
    /// room and a segment is listed.
    pub fn next_fetch(&mut self) -> Option<FetchRequest> {
        if self.stored.is_some() {
            return None;
        }
        next_fetch(
            &mut self.window,
            self.plan.as_mut()?,
            &mut self.retries_due,
            &mut self.stats,
        )
    }

    /// The fetch of `seq` delivered all its bytes (after those of broken streams, if any).
    pub fn fetch_done(&mut self, seq: u64, bytes: Vec<u8>) {
        let bytes = match self.retrying.remove(&seq) {
            Some(Retrying { mut received, .. }) if !received.is_empty() => {
                received.extend_from_slice(&bytes);
                received
            }
            _ => bytes,
        };
        self.window.complete(seq, bytes);
    }

    /// The fetch of `seq` failed. A transient failure is retried after a backoff while
    /// attempts remain; otherwise the error is returned at that segment's turn.
    pub fn fetch_failed(&mut self, seq: u64, failure: &FetchFailure) {
        self.fetch_broken(seq, failure, Vec::new());
    }

    /// Like `fetch_failed`, for a stream that broke after delivering `received` (the bytes
    /// after those it started from): a retry resumes after them.
    pub fn fetch_broken(&mut self, seq: u64, failure: &FetchFailure, received: Vec<u8>) {
        let Some(info) = self.plan.as_ref().and_then(|p| p.get(seq)) else {
            return;
        };
        let transient = match failure {
            FetchFailure::Replica(f) => f.is_transient(),
            FetchFailure::Stream(_) => true,
        };
        let retrying = self.retrying.entry(seq).or_default();
        retrying.attempts = retrying.attempts.max(1);
        if transient && retrying.attempts < self.options.max_attempts && self.stored.is_none() {
            retrying.attempts += 1;
            retrying.received.extend_from_slice(&received);
            let (attempt, start) = (retrying.attempts - 1, retrying.received.len() as u64);
            let delay_ms = self.backoff(attempt);
            self.stats.retries += 1;
            self.stats.resumed_bytes += received.len() as u64;
            self.retries_due.push_back(FetchRequest {
                seq,
                index: info.index,
                offset: info.offset,
                size: info.size,
                start,
                delay_ms,
            });
            return;
        }
        self.retrying.remove(&seq);
        let generation = &self.options.generation;
        let error = match failure {
            FetchFailure::Replica(f) => Error::read_segment(generation, info.index, info.offset, f),
            FetchFailure::Stream(what) => {
                Error::copy_segment(generation, info.index, info.offset, what)
            }
        };
        self.observed.get_or_insert_with(|| error.clone());
        self.window.fail(seq, error);
    }

    /// How many segments are in the window (fetching, or fetched and not written).
    pub fn in_window(&self) -> usize {
        self.window.len()
    }

    /// Whether the download failed or was closed: every resource can be dropped.
    pub fn is_stopped(&self) -> bool {
        self.stored.is_some()
    }

    /// Writes what it can and returns the next WAL file once it is complete and the listing is
    /// complete, or `End`, or `Wait` for more events. An error is returned at its index's turn,
    /// and again on every later call. Every fetch the window has room for is handed to `start`:
    /// at once after each segment written (before the file is published or returned, so that
    /// the next fetch's latency starts as early as possible), and before returning, so the
    /// window is full while the caller waits or takes its time with a file.
    pub fn step(&mut self, start: &mut dyn FnMut(FetchRequest)) -> Result<Step, Error> {
        if let Some(e) = &self.stored {
            return Err(e.clone());
        }
        if self.exhausted {
            return Ok(Step::End);
        }
        match self.advance(start) {
            Ok(step) => {
                while let Some(request) = self.next_fetch() {
                    start(request);
                }
                Ok(step)
            }
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    fn advance(&mut self, start: &mut dyn FnMut(FetchRequest)) -> Result<Step, Error> {
        let generation = self.options.generation.as_str();
        let Some(plan) = self.plan.as_mut() else {
            return Ok(Step::Wait);
        };
        loop {
            if let Some(ready) = &self.ready {
                // A gap anywhere in the range is reported before the first file.
                if !plan.is_complete() {
                    return Ok(Step::Wait);
                }
                ready.publish(&mut self.output, generation)?;
                let ready = self.ready.take().expect("ready file");
                self.count += 1;
                self.exhausted = ready.index == self.options.max_index;
                return Ok(Step::File(WalFile {
                    index: ready.index,
                    name: ready.name,
                    size: ready.size,
                }));
            }
            let seq = self.window.head_seq();
            let head = plan.get(seq);
            if let Some(sink) = &self.sink {
                let over = match head {
                    Some(info) => info.index != sink.index(),
                    None => plan.is_complete(),
                };
                if over {
                    let sink = self.sink.take().expect("open file");
                    self.ready = Some(sink.finish(&mut self.output)?);
                    continue;
                }
            }
            let Some(head) = head else {
                return Ok(if plan.is_complete() {
                    Step::End
                } else {
                    Step::Wait
                });
            };
            let sink = match &mut self.sink {
                Some(sink) => sink,
                none => none.insert(WalSink::create(
                    &mut self.output,
                    generation,
                    &self.options.prefix,
                    head.index,
                    Checks {
                        max_wal_size: self.options.max_wal_size,
                        verify_wal: self.options.verify_wal,
                    },
                )?),
            };
            sink.check_offset(head.offset)?;
            match self.window.head() {
                None | Some(Slot::Fetching) => return Ok(Step::Wait),
                Some(_) => {}
            }
            match self.window.take_head() {
                Some(Slot::Complete(bytes)) => {
                    // The head's slot is free once its bytes are taken: its successor's round
                    // trip starts before the decode and write, not after them. That adds no
                    // guest memory: the new fetch's bytes are read only after `append` has
                    // returned and dropped these.
                    while let Some(request) = next_fetch(
                        &mut self.window,
                        plan,
                        &mut self.retries_due,
                        &mut self.stats,
                    ) {
                        start(request);
                    }
                    // The segment may not decompress past where the next one starts.
                    let next_offset = plan
                        .get(seq + 1)
                        .filter(|next| next.index == head.index)
                        .map(|next| next.offset);
                    sink.append(&mut self.decoder, head.offset, bytes, next_offset)?;
                    plan.release_before(seq + 1);
                }
                Some(Slot::Failed(e)) => return Err(e),
                Some(Slot::Fetching) | None => unreachable!("head was checked"),
            }
        }
    }

    /// How many WAL files `step` has returned.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Stops the download: drops buffered data, removes unfinished output (returned files
    /// stay), and returns the first error that occurred, if any. Later calls to `step` fail
    /// with that error, or with `downloader closed`.
    pub fn close(&mut self) -> Result<(), Error> {
        if let Some(result) = &self.close_result {
            return result.clone();
        }
        self.cleanup();
        let result = match self.stored.clone().or_else(|| self.observed.clone()) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        self.stored = Some(result.clone().err().unwrap_or_else(Error::closed));
        self.close_result = Some(result.clone());
        result
    }

    fn fail(&mut self, error: Error) {
        self.observed.get_or_insert_with(|| error.clone());
        self.stored.get_or_insert(error);
        self.cleanup();
    }

    fn cleanup(&mut self) {
        self.window.clear();
        self.retrying.clear();
        self.retries_due.clear();
        self.relist = None;
        if let Some(sink) = self.sink.take() {
            sink.discard(&mut self.output);
        }
        if let Some(ready) = self.ready.take() {
            ready.discard(&mut self.output);
        }
    }
}

/// The next fetch to start: a retry that is due (its segment holds its place in the window),
/// or the next listed segment, taken into the window if it has room. Counts it.
fn next_fetch(
    window: &mut Window,
    plan: &mut Plan,
    retries_due: &mut VecDeque<FetchRequest>,
    stats: &mut Stats,
) -> Option<FetchRequest> {
    if let Some(retry) = retries_due.pop_front() {
        stats.fetches += 1;
        return Some(retry);
    }
    if !window.has_room() {
        return None;
    }
    let (seq, info) = plan.next_to_fetch()?;
    stats.fetches += 1;
    window.start(seq);
    Some(FetchRequest {
        start: 0,
        delay_ms: 0,
        seq,
        index: info.index,
        offset: info.offset,
        size: info.size,
    })
}

impl<O: Output> Drop for Download<O> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorKind;
    use crate::core::sink::tests::{MemOutput, lz4};
    use std::collections::HashMap;

    const GEN: &str = "0000000000000000";

    fn options(min: u64, max: u64, parallelism: u32) -> Options {
        Options {
            generation: GEN.into(),
            min_index: min,
            max_index: max,
            prefix: "wal".into(),
            parallelism,
            // The scripted segments are not WAL files; tests of the check turn it on.
            verify_wal: false,
            max_wal_size: 4 << 30,
            // One attempt, as Litestream; tests of retries set more.
            max_attempts: 1,
            retry_delay_ms: 10,
        }
    }

    /// A scripted replica: listing pages, and each segment's result.
    struct Replica {
        pages: Vec<Vec<SegmentInfo>>,
        list_error: Option<ReplicaFailure>,
        segments: HashMap<(u64, u64), Result<Vec<u8>, FetchFailure>>,
    }

    impl Replica {
        /// Index `i` has segments of the given plain contents, at contiguous offsets.
        fn new(indexes: &[(u64, &[&[u8]])], page_size: usize) -> Replica {
            let mut segments = HashMap::new();
            let mut listed = Vec::new();
            for (index, parts) in indexes {
                let mut offset = 0;
                for part in *parts {
                    let compressed = lz4(part);
                    listed.push(SegmentInfo {
                        index: *index,
                        offset,
                        size: compressed.len() as u64,
                    });
                    segments.insert((*index, offset), Ok(compressed));
                    offset += part.len() as u64;
                }
            }
            let pages = listed.chunks(page_size).map(<[_]>::to_vec).collect();
            Replica {
                pages,
                list_error: None,
                segments,
            }
        }
    }

    struct Run {
        download: Download<MemOutput>,
        output: MemOutput,
        replica: Replica,
        pages_delivered: usize,
        ended: bool,
        pending: Vec<FetchRequest>,
        max_window: usize,
    }

    impl Run {
        fn new(options: Options, replica: Replica) -> Run {
            let output = MemOutput::default();
            Run {
                download: Download::new(options, output.clone()),
                output,
                replica,
                pages_delivered: 0,
                ended: false,
                pending: Vec::new(),
                max_window: 0,
            }
        }

        /// One `next`: events are delivered one at a time, fetches completing newest first so
        /// that they finish out of order.
        fn next(&mut self) -> Result<Option<WalFile>, Error> {
            self.download.begin()?;
            loop {
                let pending = &mut self.pending;
                let step = self.download.step(&mut |f| pending.push(f))?;
                self.max_window = self.max_window.max(self.download.in_window());
                match step {
                    Step::File(f) => return Ok(Some(f)),
                    Step::End => return Ok(None),
                    Step::Wait => {}
                }
                while let Some(f) = self.download.next_fetch() {
                    self.pending.push(f);
                    self.max_window = self.max_window.max(self.download.in_window());
                }
                if let Some(f) = self.pending.pop() {
                    match self.replica.segments[&(f.index, f.offset)].clone() {
                        Ok(bytes) => self.download.fetch_done(f.seq, bytes),
                        Err(e) => self.download.fetch_failed(f.seq, &e),
                    }
                } else if self.pages_delivered < self.replica.pages.len() {
                    self.download
                        .listing_page(&self.replica.pages[self.pages_delivered]);
                    self.pages_delivered += 1;
                } else if let Some(e) = &self.replica.list_error {
                    self.download.listing_failed(e);
                } else if !self.ended {
                    self.ended = true;
                    self.download.listing_end();
                } else {
                    panic!("download waits with nothing outstanding");
                }
            }
        }

        fn names(&self) -> Vec<String> {
            self.output.files.borrow().keys().cloned().collect()
        }
    }

    fn three_indexes() -> Replica {
        Replica::new(
            &[
                (0, &[b"aaaa", b"bb", b"c"]),
                (1, &[b"dddddd"]),
                (2, &[b"ee", b"fff"]),
            ],
            2,
        )
    }

    #[test]
    fn files_come_back_in_order_within_the_window() {
        for parallelism in [1, 2, 3, 8, 1024] {
            let mut run = Run::new(options(0, 2, parallelism), three_indexes());
            let mut got = Vec::new();
            while let Some(f) = run.next().unwrap() {
                got.push(f);
            }
            assert_eq!(
                got,
                vec![
                    WalFile {
                        index: 0,
                        name: "wal-0000000000000000-wal".into(),
                        size: 7
                    },
                    WalFile {
                        index: 1,
                        name: "wal-0000000000000001-wal".into(),
                        size: 6
                    },
                    WalFile {
                        index: 2,
                        name: "wal-0000000000000002-wal".into(),
                        size: 5
                    },
                ]
            );
            assert_eq!(run.next(), Ok(None));
            assert_eq!(run.download.count(), 3);
            assert!(
                run.max_window <= parallelism as usize,
                "P={parallelism}: {}",
                run.max_window
            );
            let files = run.output.files.borrow().clone();
            assert_eq!(files["wal-0000000000000000-wal"], b"aaaabbc");
            assert_eq!(files["wal-0000000000000001-wal"], b"dddddd");
            assert_eq!(files["wal-0000000000000002-wal"], b"eefff");
            assert_eq!(files.len(), 3);
            assert_eq!(run.download.close(), Ok(()));
        }
    }

    #[test]
    fn fetches_overlap_the_listing() {
        let mut run = Run::new(options(0, 2, 8), three_indexes());
        run.download.begin().unwrap();
        run.download.listing_page(&run.replica.pages[0].clone());
        assert!(
            run.download.next_fetch().is_some(),
            "a listed segment is fetched at once"
        );
    }

    #[test]
    fn sub_ranges() {
        for (min, max, want) in [(1, 1, vec![1]), (0, 1, vec![0, 1]), (1, 2, vec![1, 2])] {
            let mut run = Run::new(options(min, max, 2), three_indexes());
            let mut got = Vec::new();
            while let Some(f) = run.next().unwrap() {
                got.push(f.index);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn gap_is_reported_before_any_file() {
        let mut replica = Replica::new(&[(0, &[b"a"]), (2, &[b"c"])], 1);
        replica.pages.insert(1, vec![]);
        let mut run = Run::new(options(0, 2, 4), replica);
        let e = run.next().unwrap_err();
        assert_eq!((e.kind, e.index), (ErrorKind::WalNotFound, Some(1)));
        assert_eq!(run.next().unwrap_err(), e);
        assert_eq!(run.download.count(), 0);
        assert!(run.names().is_empty(), "{:?}", run.names());
        assert_eq!(run.download.close(), Err(e));
    }

    #[test]
    fn empty_listing_is_wal_not_found_at_min() {
        let mut run = Run::new(options(5, 6, 4), Replica::new(&[], 1));
        let e = run.next().unwrap_err();
        assert_eq!(
            e.message,
            "wal not found: generation=0000000000000000 index=0000000000000005"
        );
        assert_eq!(run.download.close(), Err(e));
    }

    #[test]
    fn missing_offset_comes_at_its_turn() {
        let mut replica = three_indexes();
        // Index 1's only segment claims offset 3.
        let seg = replica.segments.remove(&(1, 0)).unwrap();
        replica.segments.insert((1, 3), seg);
        for page in &mut replica.pages {
            for s in page.iter_mut().filter(|s| s.index == 1) {
                s.offset = 3;
            }
        }
        let mut run = Run::new(options(0, 2, 8), replica);
        assert_eq!(run.next().unwrap().unwrap().index, 0);
        let e = run.next().unwrap_err();
        assert_eq!(
            e.message,
            "missing WAL offset: generation=0000000000000000 index=0000000000000001 offset=0000000000000000"
        );
        assert_eq!(run.next().unwrap_err(), e);
        assert_eq!(run.names(), ["wal-0000000000000000-wal"]);
        assert_eq!(run.download.close(), Err(e));
    }

    #[test]
    fn fetch_failure_comes_after_earlier_files() {
        for (failure, kind, text) in [
            (
                FetchFailure::Replica(ReplicaFailure::NotFound("marker".into())),
                ErrorKind::ReplicaNotFound,
                "read WAL segment: marker",
            ),
            (
                FetchFailure::Replica(ReplicaFailure::Unavailable("marker".into())),
                ErrorKind::ReplicaUnavailable,
                "read WAL segment: marker",
            ),
            (
                FetchFailure::Stream("marker".into()),
                ErrorKind::ReplicaOther,
                "copy WAL segment: marker",
            ),
        ] {
            let mut replica = three_indexes();
            replica.segments.insert((2, 2), Err(failure));
            let mut run = Run::new(options(0, 2, 8), replica);
            assert_eq!(run.next().unwrap().unwrap().index, 0);
            assert_eq!(run.next().unwrap().unwrap().index, 1);
            let e = run.next().unwrap_err();
            assert_eq!((e.kind, e.index, e.offset), (kind, Some(2), Some(2)));
            assert!(e.message.starts_with(text), "{}", e.message);
            // The unfinished file of index 2 is gone.
            assert_eq!(
                run.names(),
                ["wal-0000000000000000-wal", "wal-0000000000000001-wal"]
            );
            assert_eq!(run.download.close(), Err(e));
        }
    }

    #[test]
    fn close_reports_a_failure_not_reached_yet() {
        let mut replica = three_indexes();
        replica
            .segments
            .insert((2, 0), Err(FetchFailure::Stream("marker".into())));
        let mut run = Run::new(options(0, 2, 8), replica);
        assert_eq!(run.next().unwrap().unwrap().index, 0);
        // Fetches complete newest first, so index 2's failure is already seen.
        let e = run.download.close().unwrap_err();
        assert!(
            e.message.starts_with("copy WAL segment: marker"),
            "{}",
            e.message
        );
        assert_eq!(run.next().unwrap_err(), e);
    }

    #[test]
    fn listing_failure() {
        let mut replica = three_indexes();
        replica.pages.truncate(1);
        replica.list_error = Some(ReplicaFailure::Other("marker".into()));
        let mut run = Run::new(options(0, 2, 8), replica);
        let e = run.next().unwrap_err();
        assert_eq!(
            e.message,
            "wal segments: marker (generation=0000000000000000)"
        );
        assert!(run.names().is_empty());
    }

    #[test]
    fn close_early_keeps_returned_files_only() {
        let mut run = Run::new(options(0, 2, 8), three_indexes());
        assert_eq!(run.next().unwrap().unwrap().index, 0);
        assert_eq!(run.download.close(), Ok(()));
        assert_eq!(run.download.close(), Ok(()));
        assert_eq!(run.names(), ["wal-0000000000000000-wal"]);
        assert_eq!(run.next().unwrap_err().kind, ErrorKind::Closed);
    }

    #[test]
    fn close_before_next() {
        let mut run = Run::new(options(0, 2, 8), three_indexes());
        assert_eq!(run.download.close(), Ok(()));
        assert_eq!(run.next().unwrap_err().message, "downloader closed");
    }

    #[test]
    fn invalid_options_are_stored() {
        let mut run = Run::new(options(3, 2, 8), three_indexes());
        let e = run.next().unwrap_err();
        assert_eq!(
            e.message,
            "minimum index cannot be larger than maximum index"
        );
        assert_eq!(run.next().unwrap_err(), e);
        assert_eq!(run.download.close(), Err(e));
    }

    #[test]
    fn output_failure() {
        let mut run = Run::new(options(0, 2, 8), three_indexes());
        run.output
            .refuse
            .borrow_mut()
            .push("wal-0000000000000001-wal.tmp".into());
        assert_eq!(run.next().unwrap().unwrap().index, 0);
        let e = run.next().unwrap_err();
        assert_eq!((e.kind, e.index), (ErrorKind::Output, Some(1)));
        assert!(e.message.contains("permission denied"), "{}", e.message);
    }

    #[test]
    fn corrupt_segment() {
        let mut replica = three_indexes();
        let mut bad = lz4(b"dddddd");
        bad.truncate(bad.len() - 1);
        replica.segments.insert((1, 0), Ok(bad));
        let mut run = Run::new(options(0, 2, 1), replica);
        assert_eq!(run.next().unwrap().unwrap().index, 0);
        let e = run.next().unwrap_err();
        assert_eq!(
            (e.kind, e.index, e.offset),
            (ErrorKind::Corrupt, Some(1), Some(0))
        );
    }

    #[test]
    fn many_indexes_with_small_window() {
        let parts: Vec<Vec<u8>> = (0..1000).map(|i: u64| i.to_string().into_bytes()).collect();
        let indexes: Vec<(u64, Vec<&[u8]>)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, vec![p.as_slice()]))
            .collect();
        let indexes: Vec<(u64, &[&[u8]])> =
            indexes.iter().map(|(i, p)| (*i, p.as_slice())).collect();
        let mut run = Run::new(options(0, 999, 8), Replica::new(&indexes, 100));
        let mut n = 0;
        while let Some(f) = run.next().unwrap() {
            assert_eq!(f.index, n);
            n += 1;
            // Written data leaves the plan and the window.
            assert!(run.download.in_window() <= 8);
        }
        assert_eq!(n, 1000);
        assert!(run.max_window <= 8);
        assert_eq!(
            run.output.files.borrow()["wal-00000000000003e7-wal"],
            b"999"
        );
    }

    /// What the scripted store does on each attempt at a segment.
    #[derive(Clone, Debug)]
    enum Attempt {
        Fail(ReplicaFailure),
        /// The stream breaks after this many bytes of the segment.
        Break(usize),
        Deliver,
    }

    /// Downloads `min..=max` of `parts` (one segment per part, one index per part) with the
    /// scripted attempts (`Deliver` once the script runs out) and the listing failing
    /// transiently after `list_fail_after` pages, if given. Returns the files, the error,
    /// the requests made, and the stats.
    fn run_retries(
        parts: &[&[u8]],
        script: HashMap<u64, Vec<Attempt>>,
        list_fail_after: Option<usize>,
        max_attempts: u32,
    ) -> (
        BTreeMap<String, Vec<u8>>,
        Option<Error>,
        Vec<FetchRequest>,
        Stats,
    ) {
        let mut o = options(0, parts.len() as u64 - 1, 3);
        o.max_attempts = max_attempts;
        o.retry_delay_ms = 40;
        let output = MemOutput::default();
        let mut d = Download::new(o, output.clone());
        d.seed_jitter(7);
        let frames: Vec<Vec<u8>> = parts.iter().map(|p| lz4(p)).collect();
        let listed: Vec<SegmentInfo> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| SegmentInfo {
                index: i as u64,
                offset: 0,
                size: f.len() as u64,
            })
            .collect();
        let mut attempts: HashMap<u64, usize> = HashMap::new();
        let mut requests = Vec::new();
        let mut pending: VecDeque<FetchRequest> = VecDeque::new();
        // The listing: pages of one segment, starting at `from`.
        let mut from = 0usize;
        let mut list_failed = false;
        let mut error = None;
        d.begin().unwrap();
        loop {
            let step = match d.step(&mut |r| pending.push_back(r)) {
                Ok(step) => step,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            match step {
                Step::File(_) => continue,
                Step::End => break,
                Step::Wait => {}
            }
            if let Some((index, _delay)) = d.take_relist() {
                from = index as usize;
                continue;
            }
            if let Some(r) = pending.pop_front() {
                requests.push(r);
                let n = attempts.entry(r.index).or_default();
                let attempt = script
                    .get(&r.index)
                    .and_then(|s| s.get(*n))
                    .cloned()
                    .unwrap_or(Attempt::Deliver);
                *n += 1;
                let frame = &frames[r.index as usize];
                match attempt {
                    Attempt::Deliver => d.fetch_done(r.seq, frame[r.start as usize..].to_vec()),
                    Attempt::Fail(f) => d.fetch_failed(r.seq, &FetchFailure::Replica(f)),
                    Attempt::Break(after) => d.fetch_broken(
                        r.seq,
                        &FetchFailure::Stream("reset".into()),
                        frame[r.start as usize..after].to_vec(),
                    ),
                }
            } else if d.wants_listing() && from < listed.len() {
                if list_fail_after == Some(from) && !list_failed {
                    list_failed = true;
                    d.listing_failed(&ReplicaFailure::Unavailable("flaky".into()));
                } else {
                    // A new listing replays from the start of its index.
                    d.listing_page(&listed[from..from + 1]);
                    from += 1;
                }
            } else if d.wants_listing() {
                d.listing_end();
            } else {
                panic!("waiting with nothing outstanding");
            }
        }
        let files = output.files.borrow().clone();
        (files, error, requests, d.stats())
    }

    #[test]
    fn transient_failures_are_retried_with_backoff_and_resume() {
        let parts: [&[u8]; 3] = [&[1; 3000], &[2; 5000], &[3; 100]];
        let frame1 = lz4(parts[1]);
        let cut = frame1.len() / 2;
        let script = HashMap::from([
            (
                0,
                vec![Attempt::Fail(ReplicaFailure::Unavailable("busy".into()))],
            ),
            (1, vec![Attempt::Break(5), Attempt::Break(cut)]),
        ]);
        let (files, error, requests, stats) = run_retries(&parts, script, None, 5);
        assert_eq!(error, None);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(files[&format!("wal-{i:016x}-wal")], *part, "index {i}");
        }
        // Index 1 was fetched from 0, then resumed from byte 5, then from `cut`.
        let starts: Vec<u64> = requests
            .iter()
            .filter(|r| r.index == 1)
            .map(|r| r.start)
            .collect();
        assert_eq!(starts, [0, 5, cut as u64]);
        // First attempts start at once; retries after 20-40 ms, then 40-80 ms.
        for r in &requests {
            match (r.index, r.start) {
                (_, 0) if r.delay_ms == 0 => {}
                (0, 0) | (1, 5) => assert!((20..=40).contains(&r.delay_ms), "{r:?}"),
                (1, _) => assert!((40..=80).contains(&r.delay_ms), "{r:?}"),
                _ => panic!("unexpected request {r:?}"),
            }
        }
        assert_eq!(
            stats,
            Stats {
                fetches: 6,
                retries: 3,
                resumed_bytes: cut as u64,
            }
        );
    }

    #[test]
    fn permanent_failures_and_exhausted_attempts_are_errors() {
        let parts: [&[u8]; 2] = [b"zero", b"one"];
        // Not found is not retried.
        let script = HashMap::from([(
            1,
            vec![Attempt::Fail(ReplicaFailure::NotFound("gone".into()))],
        )]);
        let (files, error, requests, stats) = run_retries(&parts, script, None, 5);
        let e = error.unwrap();
        assert_eq!((e.kind, e.index), (ErrorKind::ReplicaNotFound, Some(1)));
        assert_eq!(requests.len(), 2);
        assert_eq!(stats.retries, 0);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["wal-0000000000000000-wal"]
        );

        // Unavailable every time: three attempts, then the last error.
        let flaky = || Attempt::Fail(ReplicaFailure::Unavailable("still busy".into()));
        let script = HashMap::from([(1, vec![flaky(), flaky(), flaky(), flaky()])]);
        let (_, error, requests, stats) = run_retries(&parts, script, None, 3);
        let e = error.unwrap();
        assert_eq!((e.kind, e.index), (ErrorKind::ReplicaUnavailable, Some(1)));
        assert!(
            e.message.starts_with("read WAL segment: still busy"),
            "{}",
            e.message
        );
        assert_eq!(requests.iter().filter(|r| r.index == 1).count(), 3);
        assert_eq!(stats.retries, 2);

        // One attempt (Litestream's behaviour): no retry at all.
        let script = HashMap::from([(1, vec![Attempt::Break(2)])]);
        let (_, error, requests, _) = run_retries(&parts, script, None, 1);
        assert!(
            error
                .unwrap()
                .message
                .starts_with("copy WAL segment: reset")
        );
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn a_transient_listing_failure_lists_again_from_where_it_stopped() {
        let parts: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        let (files, error, _, stats) = run_retries(&parts, HashMap::new(), Some(2), 5);
        assert_eq!(error, None);
        assert_eq!(files.len(), 4);
        assert_eq!(stats.retries, 1);
        // With one attempt the failure is the error.
        let (_, error, _, _) = run_retries(&parts, HashMap::new(), Some(2), 1);
        let e = error.unwrap();
        assert_eq!(e.kind, ErrorKind::ReplicaUnavailable);
        assert!(
            e.message.starts_with("wal segments: flaky"),
            "{}",
            e.message
        );
    }
}
