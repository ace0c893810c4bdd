//! The downloader's state machine, driven by events: listing pages, fetch results, and calls to
//! [`Download::step`]. It decides which fetches to start, writes the head of the window in
//! order, and hands back complete WAL files strictly in index order. The glue only moves bytes
//! and resources between it and the host.

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
        }
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

    /// The listing failed.
    pub fn listing_failed(&mut self, failure: &ReplicaFailure) {
        if !self.wants_listing() {
            return;
        }
        self.fail(Error::listing(&self.options.generation, failure));
    }

    /// The next fetch to start, if the window has room and a segment is listed.
    pub fn next_fetch(&mut self) -> Option<FetchRequest> {
        if self.stored.is_some() {
            return None;
        }
        next_fetch(&mut self.window, self.plan.as_mut()?)
    }

    /// The fetch of `seq` delivered all its bytes.
    pub fn fetch_done(&mut self, seq: u64, bytes: Vec<u8>) {
        self.window.complete(seq, bytes);
    }

    /// The fetch of `seq` failed; the error is returned at that segment's turn.
    pub fn fetch_failed(&mut self, seq: u64, failure: &FetchFailure) {
        let Some(info) = self.plan.as_ref().and_then(|p| p.get(seq)) else {
            return;
        };
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
                    while let Some(request) = next_fetch(&mut self.window, plan) {
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
        if let Some(sink) = self.sink.take() {
            sink.discard(&mut self.output);
        }
        if let Some(ready) = self.ready.take() {
            ready.discard(&mut self.output);
        }
    }
}

/// Takes the next listed segment into the window, if it has room.
fn next_fetch(window: &mut Window, plan: &mut Plan) -> Option<FetchRequest> {
    if !window.has_room() {
        return None;
    }
    let (seq, info) = plan.next_to_fetch()?;
    window.start(seq);
    Some(FetchRequest {
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
}
