//! `MemReplica`: an in-memory replica for tests and benchmarks, with injectable latency and
//! faults, and counters of how many fetches are outstanding at once.

use super::{
    Replica, ReplicaError, SegmentBody, WalSegmentInfo, dir, is_generation_name, segment_path,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A fault injected into one segment's fetch.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The fetch fails with this error (`NotFound(..)` for not-found).
    FetchError(ReplicaError),
    /// The body fails with `ReplicaError::Other(message)` after `after` bytes.
    MidStream { after: usize, message: String },
    /// A delay before every chunk of the body.
    SlowStream(Duration),
    /// Extra latency before the fetch is ready.
    Delay(Duration),
    /// The first `times` fetches of the segment fail with `ReplicaError::Unavailable`; later
    /// ones succeed.
    UnavailableTimes(u32),
    /// The first `times` fetches of the segment break after `after` bytes of the segment
    /// (counted from its first byte, whatever the fetch's `start`); later ones succeed.
    CutTimes { times: u32, after: usize },
}

/// Faults at random, each drawn for every fetch: the fetch fails (`Unavailable`) with
/// probability `fail_permille` / 1000, or its stream breaks at a random byte with probability
/// `cut_permille` / 1000. Deterministic for a seed and a sequence of fetches.
#[derive(Clone, Copy, Debug)]
pub struct TransientFaults {
    pub fail_permille: u32,
    pub cut_permille: u32,
    pub seed: u64,
}

/// Counters of a `MemReplica`'s work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// `fetch_wal_segment` calls.
    pub fetches: u64,
    /// Fetches whose future or body has not been dropped yet.
    pub outstanding: u64,
    /// High-water mark of `outstanding`.
    pub max_outstanding: u64,
    /// `list_wal_segments` calls.
    pub listings: u64,
    /// Listing pages delivered.
    pub pages: u64,
}

/// An in-memory replica. Clones share data, settings and stats, so a test keeps a clone to
/// change faults and read stats while the host uses another.
#[derive(Clone, Default)]
pub struct MemReplica {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (generation, index, offset) -> compressed bytes; the key order is listing order.
    segments: Mutex<BTreeMap<(String, u64, u64), Bytes>>,
    settings: Mutex<Settings>,
    stats: Mutex<FetchStats>,
}

struct Settings {
    fetch_latency: Duration,
    list_latency: Duration,
    page_size: usize,
    chunk_size: usize,
    list_error: Option<ReplicaError>,
    faults: HashMap<(u64, u64), Fault>,
    transient: Option<TransientFaults>,
    /// The first `.1` listings fail (`Unavailable`) after delivering `.0` pages.
    listing_breaks: Option<(usize, u32)>,
    /// Fetches of each segment so far, for the `*Times` faults.
    attempts: HashMap<(u64, u64), u32>,
    /// Draws made for `transient`.
    draws: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fetch_latency: Duration::ZERO,
            list_latency: Duration::ZERO,
            page_size: 1000,
            chunk_size: 64 * 1024,
            list_error: None,
            faults: HashMap::new(),
            transient: None,
            listing_breaks: None,
            attempts: HashMap::new(),
            draws: 0,
        }
    }
}

/// Counts one fetch as outstanding from its call until the last of its future and body is
/// dropped (it moves from the future into the body).
struct OutstandingGuard(Arc<Inner>);

impl OutstandingGuard {
    fn new(inner: Arc<Inner>) -> OutstandingGuard {
        {
            let mut stats = lock(&inner.stats);
            stats.fetches += 1;
            stats.outstanding += 1;
            stats.max_outstanding = stats.max_outstanding.max(stats.outstanding);
        }
        OutstandingGuard(inner)
    }
}

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        lock(&self.0.stats).outstanding -= 1;
    }
}

/// Locks a mutex, ignoring poisoning: the data is plain counters and maps that a panic
/// elsewhere cannot leave half-updated in a way that matters to a test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        precise::sleep_until(Instant::now() + d).await;
    }
}

/// Sleeps that end at their deadline, not at the next millisecond. tokio's timer rounds every
/// deadline up to a whole millisecond tick, so a 10 ms latency took 10 to 11 ms, and fetches
/// that start in lockstep stayed late together round after round. One thread sleeps on a
/// condvar until the earliest deadline (the kernel's high-resolution timeout) and wakes the
/// futures whose deadline passed.
mod precise {
    use std::cmp::Ordering;
    use std::collections::BinaryHeap;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    struct Entry {
        deadline: Instant,
        waker: Waker,
    }

    // Ordered by deadline, earliest first in the (max-)heap.
    impl Ord for Entry {
        fn cmp(&self, other: &Self) -> Ordering {
            other.deadline.cmp(&self.deadline)
        }
    }
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl PartialEq for Entry {
        fn eq(&self, other: &Self) -> bool {
            self.deadline == other.deadline
        }
    }
    impl Eq for Entry {}

    struct Timer {
        heap: Mutex<BinaryHeap<Entry>>,
        changed: Condvar,
    }

    fn timer() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                heap: Mutex::new(BinaryHeap::new()),
                changed: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("mem-replica-timer".into())
                .spawn(move || {
                    // Linux lets a sleeping thread wake up to 50 us late by default (timer
                    // slack); 1 ns asks for the deadline itself.
                    #[cfg(target_os = "linux")]
                    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
                    unsafe {
                        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
                    }
                    timer.run()
                })
                .expect("spawn the mem replica's timer thread");
            timer
        })
    }

    impl Timer {
        fn run(&self) -> ! {
            let mut due = Vec::new();
            let mut heap = super::lock(&self.heap);
            loop {
                let now = Instant::now();
                while heap.peek().is_some_and(|e| e.deadline <= now) {
                    due.push(heap.pop().expect("peeked").waker);
                }
                if !due.is_empty() {
                    drop(heap);
                    due.drain(..).for_each(Waker::wake);
                    heap = super::lock(&self.heap);
                    continue;
                }
                heap = match heap.peek().map(|e| e.deadline - now) {
                    Some(wait) => {
                        let waited = self.changed.wait_timeout(heap, wait);
                        waited.unwrap_or_else(|e| e.into_inner()).0
                    }
                    None => self.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
                };
            }
        }

        fn register(&self, deadline: Instant, waker: Waker) {
            let mut heap = super::lock(&self.heap);
            let earliest = heap.peek().is_none_or(|e| deadline < e.deadline);
            heap.push(Entry { deadline, waker });
            if earliest {
                self.changed.notify_one();
            }
        }
    }

    /// Ready once `deadline` has passed. A dropped sleep leaves its entry to fire harmlessly.
    pub fn sleep_until(deadline: Instant) -> SleepUntil {
        SleepUntil { deadline }
    }

    pub struct SleepUntil {
        deadline: Instant,
    }

    impl Future for SleepUntil {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            timer().register(self.deadline, cx.waker().clone());
            Poll::Pending
        }
    }
}

impl MemReplica {
    /// An empty replica with no latency and no faults.
    pub fn new() -> MemReplica {
        MemReplica::default()
    }

    /// Loads every generation's segments from a directory in Litestream's layout.
    pub fn load_dir(root: &Path) -> std::io::Result<MemReplica> {
        let to_io = |e: ReplicaError| std::io::Error::other(e.to_string());
        let replica = MemReplica::new();
        for generation in dir::list_generations(root).map_err(to_io)? {
            for index in dir::list_indexes(root, &generation, 0).map_err(to_io)? {
                for s in dir::list_segments(root, &generation, index).map_err(to_io)? {
                    let data =
                        std::fs::read(root.join(segment_path(&generation, index, s.offset)))?;
                    replica.insert(&generation, index, s.offset, data);
                }
            }
        }
        Ok(replica)
    }

    /// Adds (or replaces) a segment.
    pub fn insert(&self, generation: &str, index: u64, offset: u64, compressed: impl Into<Bytes>) {
        lock(&self.inner.segments)
            .insert((generation.to_owned(), index, offset), compressed.into());
    }

    /// Latency before a fetch's result is ready.
    pub fn set_fetch_latency(&self, d: Duration) {
        lock(&self.inner.settings).fetch_latency = d;
    }

    /// Latency before each listing page.
    pub fn set_list_latency(&self, d: Duration) {
        lock(&self.inner.settings).list_latency = d;
    }

    /// Segments per listing page (default 1000; at least 1).
    pub fn set_page_size(&self, n: usize) {
        lock(&self.inner.settings).page_size = n.max(1);
    }

    /// Bytes per body chunk (default 64 KiB; at least 1).
    pub fn set_chunk_size(&self, n: usize) {
        lock(&self.inner.settings).chunk_size = n.max(1);
    }

    /// Makes listings fail with `e` (at their next page), or succeed again with `None`.
    pub fn set_list_error(&self, e: Option<ReplicaError>) {
        lock(&self.inner.settings).list_error = e;
    }

    /// Injects a fault into the segment at (index, offset) of any generation.
    pub fn set_fault(&self, index: u64, offset: u64, fault: Fault) {
        lock(&self.inner.settings)
            .faults
            .insert((index, offset), fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        let mut settings = lock(&self.inner.settings);
        settings.faults.clear();
        settings.attempts.clear();
        settings.transient = None;
    }

    /// Makes the first `times` listings fail with `Unavailable` after `pages` pages.
    pub fn set_listing_breaks(&self, pages: usize, times: u32) {
        lock(&self.inner.settings).listing_breaks = Some((pages, times));
    }

    /// Injects faults at random into every fetch (see [`TransientFaults`]), or stops.
    pub fn set_transient_faults(&self, faults: Option<TransientFaults>) {
        lock(&self.inner.settings).transient = faults;
    }

    /// The counters so far.
    pub fn stats(&self) -> FetchStats {
        *lock(&self.inner.stats)
    }

    /// Resets the counters, except `outstanding` (those fetches are still alive) from which
    /// `max_outstanding` starts again.
    pub fn reset_stats(&self) {
        let mut stats = lock(&self.inner.stats);
        *stats = FetchStats {
            outstanding: stats.outstanding,
            max_outstanding: stats.outstanding,
            ..FetchStats::default()
        };
    }
}

impl Replica for MemReplica {
    fn generations(&self) -> BoxFuture<'static, Result<Vec<String>, ReplicaError>> {
        let mut generations: Vec<String> = lock(&self.inner.segments)
            .keys()
            .map(|(g, _, _)| g.clone())
            .collect();
        generations.dedup(); // keys are sorted, so duplicates are adjacent
        async move { Ok(generations) }.boxed()
    }

    fn list_wal_segments(
        &self,
        generation: &str,
        min_index: u64,
    ) -> BoxStream<'static, Result<Vec<WalSegmentInfo>, ReplicaError>> {
        let listing = {
            let mut stats = lock(&self.inner.stats);
            stats.listings += 1;
            stats.listings
        };
        let break_after = lock(&self.inner.settings)
            .listing_breaks
            .filter(|&(_, times)| listing <= u64::from(times))
            .map(|(pages, _)| pages);
        if !is_generation_name(generation) {
            return stream::iter([Err(super::invalid_generation(generation))]).boxed();
        }
        // The listing is a snapshot of the segments at the call.
        let segments: Vec<WalSegmentInfo> = lock(&self.inner.segments)
            .iter()
            .filter(|((g, index, _), _)| g == generation && *index >= min_index)
            .map(|(&(_, index, offset), data)| WalSegmentInfo {
                index,
                offset,
                size: data.len() as u64,
            })
            .collect();
        let inner = self.inner.clone();
        let mut delivered = 0usize;
        stream::unfold(Some(segments), move |remaining| {
            let inner = inner.clone();
            let broken = break_after == Some(delivered);
            delivered += 1;
            async move {
                let mut remaining = remaining?;
                if broken {
                    let e = ReplicaError::Unavailable("injected: listing interrupted".into());
                    return Some((Err(e), None));
                }
                let (latency, page_size, error) = {
                    let s = lock(&inner.settings);
                    (s.list_latency, s.page_size, s.list_error.clone())
                };
                sleep(latency).await;
                if let Some(e) = error {
                    return Some((Err(e), None));
                }
                if remaining.is_empty() {
                    return None;
                }
                let rest = remaining.split_off(page_size.min(remaining.len()));
                lock(&inner.stats).pages += 1;
                Some((Ok(remaining), Some(rest)))
            }
        })
        .boxed()
    }

    fn fetch_wal_segment(
        &self,
        generation: &str,
        index: u64,
        offset: u64,
        start: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, ReplicaError>> {
        let guard = OutstandingGuard::new(self.inner.clone());
        if !is_generation_name(generation) {
            let e = super::invalid_generation(generation);
            return async move { Err(e) }.boxed();
        }
        let data = lock(&self.inner.segments)
            .get(&(generation.to_owned(), index, offset))
            .cloned();
        let (latency, chunk_size, fault) = {
            let mut s = lock(&self.inner.settings);
            let attempt = {
                let n = s.attempts.entry((index, offset)).or_insert(0);
                *n += 1;
                *n
            };
            let len = data.as_ref().map_or(0, |d| d.len());
            let mut fault = match s.faults.get(&(index, offset)).cloned() {
                Some(Fault::UnavailableTimes(times)) if attempt <= times => {
                    Some(Fault::FetchError(ReplicaError::Unavailable(format!(
                        "injected: unavailable (attempt {attempt})"
                    ))))
                }
                Some(Fault::CutTimes { times, after }) if attempt <= times => {
                    Some(Fault::MidStream {
                        after,
                        message: format!("injected: connection reset (attempt {attempt})"),
                    })
                }
                Some(Fault::UnavailableTimes(_) | Fault::CutTimes { .. }) => None,
                other => other,
            };
            if fault.is_none()
                && let Some(t) = s.transient
            {
                s.draws += 1;
                let roll = splitmix(t.seed ^ s.draws.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let permille = (roll % 1000) as u32;
                if permille < t.fail_permille {
                    fault = Some(Fault::FetchError(ReplicaError::Unavailable(
                        "injected: transient failure".into(),
                    )));
                } else if permille < t.fail_permille + t.cut_permille && len > 0 {
                    let after = ((roll >> 20) % len as u64) as usize;
                    fault = Some(Fault::MidStream {
                        after,
                        message: "injected: transient connection reset".into(),
                    });
                }
            }
            (s.fetch_latency, s.chunk_size, fault)
        };
        let path = segment_path(generation, index, offset);
        // The latency runs from the call, not from when the runtime first polls the task.
        let ready_at = Instant::now() + latency;
        async move {
            precise::sleep_until(ready_at).await;
            if let Some(Fault::Delay(d)) = &fault {
                sleep(*d).await;
            }
            if let Some(Fault::FetchError(e)) = fault {
                return Err(e);
            }
            let Some(data) = data else {
                return Err(ReplicaError::NotFound(format!(
                    "{path}: no such file or directory"
                )));
            };
            let (limit, failure, chunk_delay) = match fault {
                Some(Fault::MidStream { after, message }) => {
                    (after.min(data.len()), Some(message), Duration::ZERO)
                }
                Some(Fault::SlowStream(d)) => (data.len(), None, d),
                _ => (data.len(), None, Duration::ZERO),
            };
            // The stream carries bytes `start..`; a cut before `start` breaks it at once.
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(limit);
            Ok(body(
                data.slice(from..limit),
                chunk_size,
                chunk_delay,
                failure,
                guard,
            ))
        }
        .boxed()
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value from any input.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Streams `data` in chunks (zero-copy slices), then fails with `failure` if given. The guard
/// lives as long as the stream, not just until its last item: the fetch counts as outstanding
/// until the body is dropped.
fn body(
    data: Bytes,
    chunk_size: usize,
    chunk_delay: Duration,
    failure: Option<String>,
    guard: OutstandingGuard,
) -> SegmentBody {
    let chunks = stream::unfold(Some((data, failure)), move |state| async move {
        let (mut rest, mut failure) = state?;
        sleep(chunk_delay).await;
        if !rest.is_empty() {
            let chunk = rest.split_to(chunk_size.min(rest.len()));
            return Some((Ok(chunk), Some((rest, failure))));
        }
        let message = failure.take()?;
        Some((Err(ReplicaError::Other(message)), None))
    })
    .boxed();
    Guarded {
        inner: chunks,
        _guard: guard,
    }
    .boxed()
}

/// A body that holds its fetch's `OutstandingGuard` until it is dropped.
struct Guarded {
    inner: SegmentBody,
    _guard: OutstandingGuard,
}

impl futures::Stream for Guarded {
    type Item = Result<Bytes, ReplicaError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    const GEN: &str = "0000000000000000";

    fn replica_with(n: u64, len: usize) -> MemReplica {
        let replica = MemReplica::new();
        for index in 0..n {
            replica.insert(GEN, index, 0, vec![index as u8; len]);
        }
        replica
    }

    #[tokio::test]
    async fn outstanding_counts_until_the_body_is_dropped() {
        let replica = replica_with(3, 10);
        let f0 = replica.fetch_wal_segment(GEN, 0, 0, 0);
        let f1 = replica.fetch_wal_segment(GEN, 1, 0, 0);
        let stats = replica.stats();
        assert_eq!(
            (stats.fetches, stats.outstanding, stats.max_outstanding),
            (2, 2, 2)
        );

        // Dropping a future that never ran releases its fetch.
        drop(f0);
        assert_eq!(replica.stats().outstanding, 1);

        // A completed future hands the guard to the body: still outstanding until it drops.
        let body = f1.await.unwrap();
        assert_eq!(replica.stats().outstanding, 1);
        let f2 = replica.fetch_wal_segment(GEN, 2, 0, 0);
        assert_eq!(replica.stats().max_outstanding, 2);
        drop(body);
        assert_eq!(replica.stats().outstanding, 1);
        let chunks: Vec<Bytes> = f2.await.unwrap().try_collect().await.unwrap();
        assert_eq!(chunks.concat(), vec![2u8; 10]);
        // The body is consumed and dropped by try_collect.
        let stats = replica.stats();
        assert_eq!(
            (stats.fetches, stats.outstanding, stats.max_outstanding),
            (3, 0, 2)
        );

        replica.reset_stats();
        assert_eq!(replica.stats(), FetchStats::default());
    }

    #[tokio::test]
    async fn faults() {
        let replica = replica_with(4, 100);
        replica.set_chunk_size(30);
        replica.set_fault(
            0,
            0,
            Fault::FetchError(ReplicaError::Other("marker".into())),
        );
        replica.set_fault(
            1,
            0,
            Fault::MidStream {
                after: 45,
                message: "marker".into(),
            },
        );
        replica.set_fault(2, 0, Fault::SlowStream(Duration::from_millis(1)));

        let err = replica.fetch_wal_segment(GEN, 0, 0, 0).await.err().unwrap();
        assert_eq!(err, ReplicaError::Other("marker".into()));

        let items: Vec<_> = replica
            .fetch_wal_segment(GEN, 1, 0, 0)
            .await
            .unwrap()
            .collect()
            .await;
        let lens: Vec<_> = items.iter().map(|r| r.as_ref().map(Bytes::len)).collect();
        assert_eq!(
            lens,
            vec![Ok(30), Ok(15), Err(&ReplicaError::Other("marker".into()))]
        );

        let chunks: Vec<Bytes> = replica
            .fetch_wal_segment(GEN, 2, 0, 0)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![30, 30, 30, 10]
        );

        let err = replica.fetch_wal_segment(GEN, 9, 0, 0).await.err().unwrap();
        assert!(matches!(err, ReplicaError::NotFound(_)), "{err:?}");
        assert!(err.message().contains("0000000000000009"), "{err}");

        replica.clear_faults();
        assert!(replica.fetch_wal_segment(GEN, 0, 0, 0).await.is_ok());
        assert_eq!(replica.stats().outstanding, 0);
    }

    #[tokio::test]
    async fn listing_pages_and_list_error() {
        let replica = replica_with(5, 1);
        replica.insert("0000000000000001", 0, 0, vec![1]);
        replica.set_page_size(2);
        let pages: Vec<Vec<WalSegmentInfo>> = replica
            .list_wal_segments(GEN, 1)
            .try_collect()
            .await
            .unwrap();
        let indexes: Vec<Vec<u64>> = pages
            .iter()
            .map(|p| p.iter().map(|s| s.index).collect())
            .collect();
        assert_eq!(indexes, vec![vec![1, 2], vec![3, 4]]);
        let stats = replica.stats();
        assert_eq!((stats.listings, stats.pages), (1, 2));
        assert_eq!(
            replica.generations().await.unwrap(),
            vec![GEN.to_owned(), "0000000000000001".to_owned()]
        );

        replica.set_list_error(Some(ReplicaError::Other("marker".into())));
        let err = replica
            .list_wal_segments(GEN, 0)
            .try_concat()
            .await
            .unwrap_err();
        assert_eq!(err, ReplicaError::Other("marker".into()));
        replica.set_list_error(None);
        assert!(
            replica
                .list_wal_segments("nope", 0)
                .try_concat()
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn load_dir_reads_every_segment() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/litestream/wal-downloader/ok");
        assert!(
            root.is_dir(),
            "shared fixture {} is missing",
            root.display()
        );
        let replica = MemReplica::load_dir(&root).unwrap();
        let listed = replica
            .list_wal_segments(GEN, 0)
            .try_concat()
            .await
            .unwrap();
        assert_eq!(listed.len(), 6);
        let body: Vec<Bytes> = replica
            .fetch_wal_segment(GEN, 2, 0x1038, 0)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let expected = std::fs::read(root.join(segment_path(GEN, 2, 0x1038))).unwrap();
        assert_eq!(body.concat(), expected);
    }
}
