//! `ShardedDownload`: one download split by index range over several component instances that
//! run at once, each driven on its own tokio task, with the files handed back in index order.
//!
//! One instance decodes on one thread (a component has no threads of its own). When decoding
//! is the bottleneck (large WAL files, little latency to hide), shards put more cores to work:
//! `min..=max` is cut into contiguous ranges, each downloaded by its own instance with its share
//! of the parallelism, so no more than `parallelism` fetches are outstanding in all. A shard
//! runs ahead of the files handed out: its completed files wait in the output directory under
//! their final names until their turn.
//!
//! Seen from the caller it is one download, with the unsharded download's results:
//! - files come in index order, each returned once;
//! - an error a listing finds (a gap, a failed listing, an invalid argument) is returned before
//!   any file, as the unsharded download does: no file is handed out until every shard has
//!   produced its first result;
//! - any other error is returned at its index's turn, after every earlier file;
//! - after an error, `close`, or a drop, the output directory holds exactly the files handed
//!   out: every shard is stopped, and files that shards completed ahead are removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::Replica;
use crate::embed::{Download, DownloadError, DownloadStats, ErrorKind, Options, Runtime, WalFile};

type Item = Result<Option<WalFile>, DownloadError>;

/// A download over one or more component instances; see the module documentation.
pub struct ShardedDownload {
    mode: Mode,
}

enum Mode {
    /// One shard: the instance itself, with no task or channel in between.
    One(Download),
    Shards(Shards),
}

struct Shards {
    /// In index order.
    shards: Vec<Shard>,
    /// Set at the first `next` (or at a stop): the shards wait for it, so that like an
    /// unsharded download nothing starts before the first `next`.
    go: tokio::sync::watch::Sender<bool>,
    /// The shard whose files are handed out now.
    current: usize,
    /// Every shard has produced its first result, and none was a listing error.
    started: bool,
    count: u64,
    /// The error handed out (returned again by `next` and `close`).
    error: Option<DownloadError>,
    /// What `close` returned.
    closed: Option<Result<(), DownloadError>>,
    instantiate_time: Duration,
}

struct Shard {
    min_index: u64,
    items: mpsc::UnboundedReceiver<Item>,
    /// An item taken from `items` but not handed out yet.
    peeked: Option<Item>,
    stop: Arc<AtomicBool>,
    peak_memory: Arc<AtomicU64>,
    /// The instance's counters, as of its last result.
    stats: Arc<std::sync::Mutex<DownloadStats>>,
    /// The task driving the shard's instance; it returns the instance's `close` result.
    task: Option<JoinHandle<Result<(), DownloadError>>>,
}

impl Runtime {
    /// Starts a download of `options.min_index..=options.max_index` split over up to `shards`
    /// component instances (see [`ShardedDownload`]). Fewer are used when the range has
    /// fewer indexes or the parallelism is smaller; with one (or invalid options, which the
    /// component then reports), it is exactly [`Runtime::start`]. Must be called inside a
    /// multi-threaded tokio runtime for the shards to run in parallel.
    pub async fn start_sharded(
        &self,
        replica: Arc<dyn Replica>,
        out_dir: &std::path::Path,
        options: &Options,
        shards: u32,
    ) -> anyhow::Result<ShardedDownload> {
        let ranges = split(options, shards);
        if ranges.len() <= 1 {
            let download = self.start(replica, out_dir, options).await?;
            return Ok(ShardedDownload {
                mode: Mode::One(download),
            });
        }
        let (go, _) = tokio::sync::watch::channel(false);
        let mut all = Shards {
            shards: Vec::with_capacity(ranges.len()),
            go,
            current: 0,
            started: false,
            count: 0,
            error: None,
            closed: None,
            instantiate_time: Duration::ZERO,
        };
        // On an error below, dropping `all` stops the shards already running.
        for (min_index, max_index, parallelism) in ranges {
            let mut shard_options = options.clone();
            shard_options.min_index = min_index;
            shard_options.max_index = max_index;
            shard_options.parallelism = parallelism;
            let download = self.start(replica.clone(), out_dir, &shard_options).await?;
            all.instantiate_time += download.instantiate_time();
            let (sender, items) = mpsc::unbounded_channel();
            let stop = Arc::new(AtomicBool::new(false));
            let peak_memory = Arc::new(AtomicU64::new(download.peak_guest_memory_bytes()));
            let stats = Arc::new(std::sync::Mutex::new(DownloadStats::default()));
            let task = tokio::spawn(drive(
                download,
                all.go.subscribe(),
                sender,
                stop.clone(),
                (peak_memory.clone(), stats.clone()),
            ));
            all.shards.push(Shard {
                min_index,
                items,
                peeked: None,
                stop,
                peak_memory,
                stats,
                task: Some(task),
            });
        }
        Ok(ShardedDownload {
            mode: Mode::Shards(all),
        })
    }
}

/// The `(min, max, parallelism)` of each shard: contiguous ranges of as equal a number of
/// indexes as can be, and parallelisms that add up to the download's.
fn split(options: &Options, shards: u32) -> Vec<(u64, u64, u32)> {
    let (min, max, parallelism) = (options.min_index, options.max_index, options.parallelism);
    if shards <= 1 || min > max || parallelism < 2 {
        return vec![(min, max, parallelism)];
    }
    let indexes = u128::from(max - min) + 1;
    let k = u128::from(shards.min(parallelism)).min(indexes);
    (0..k)
        .map(|i| {
            let lo = u128::from(min) + indexes * i / k;
            let hi = u128::from(min) + indexes * (i + 1) / k - 1;
            let share = u128::from(parallelism) / k + u128::from(i < u128::from(parallelism) % k);
            // In range by construction: lo..=hi lies within min..=max, share <= parallelism.
            (lo as u64, hi as u64, share as u32)
        })
        .collect()
}

/// Runs one shard's instance until its end, its first error, or `stop`, sending each result,
/// then closes it. Returns the close result, unless the shard's own error was sent (that
/// error is the caller's to report, at its turn).
async fn drive(
    mut download: Download,
    mut go: tokio::sync::watch::Receiver<bool>,
    sender: mpsc::UnboundedSender<Item>,
    stop: Arc<AtomicBool>,
    (peak_memory, stats): (Arc<AtomicU64>, Arc<std::sync::Mutex<DownloadStats>>),
) -> Result<(), DownloadError> {
    // A dropped sender (the download dropped before its first `next`) also ends the wait.
    let _ = go.wait_for(|go| *go).await;
    let mut sent_error = false;
    while !stop.load(Ordering::Acquire) {
        let item = download.next().await;
        peak_memory.store(download.peak_guest_memory_bytes(), Ordering::Relaxed);
        if let Ok(now) = download.stats().await {
            *stats.lock().unwrap_or_else(|e| e.into_inner()) = now;
        }
        let more = matches!(item, Ok(Some(_)));
        sent_error = item.is_err();
        if sender.send(item).is_err() || !more {
            break;
        }
    }
    let closed = download.close().await;
    peak_memory.store(download.peak_guest_memory_bytes(), Ordering::Relaxed);
    if sent_error { Ok(()) } else { closed }
}

impl Shard {
    /// The next item, waiting for it; a shard whose task ended without a last item (a
    /// panic) is a host error.
    async fn next_item(&mut self) -> Item {
        if let Some(item) = self.peeked.take() {
            return item;
        }
        match self.items.recv().await {
            Some(item) => item,
            None => Err(DownloadError {
                kind: ErrorKind::Host,
                message: format!(
                    "the shard from index {:016x} stopped without a result",
                    self.min_index
                ),
                index: None,
                offset: None,
            }),
        }
    }

    async fn peek(&mut self) -> &Item {
        if self.peeked.is_none() {
            let item = self.next_item().await;
            self.peeked = Some(item);
        }
        self.peeked.as_ref().expect("just filled")
    }
}

/// Whether `e`, as a shard's first result, comes from its listing (and so is returned before
/// any file), rather than from its first index's turn. A listing error names no index, or
/// is a gap (`wal not found`), or an out-of-order listing; an invalid argument names none.
fn is_listing_error(e: &DownloadError) -> bool {
    e.index.is_none()
        || e.kind == ErrorKind::WalNotFound
        || e.kind == ErrorKind::InvalidArgument
        || e.message.starts_with("wal segments:")
}

impl Shards {
    async fn next(&mut self) -> Item {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.closed.is_some() {
            return Err(closed());
        }
        self.go.send_replace(true);
        if !self.started {
            // A listing error in any shard is returned before any file, as unsharded; the
            // lowest shard's first, as a single listing would find it first.
            let mut first_listing_error = None;
            for shard in &mut self.shards {
                if let Err(e) = shard.peek().await
                    && is_listing_error(e)
                    && first_listing_error.is_none()
                {
                    first_listing_error = Some(e.clone());
                }
            }
            if let Some(e) = first_listing_error {
                return Err(self.fail(e).await);
            }
            self.started = true;
        }
        while let Some(shard) = self.shards.get_mut(self.current) {
            match shard.next_item().await {
                Ok(Some(file)) => {
                    self.count += 1;
                    return Ok(Some(file));
                }
                Ok(None) => self.current += 1,
                Err(e) => return Err(self.fail(e).await),
            }
        }
        Ok(None)
    }

    /// Stops every shard and removes what they completed ahead; `e` is then the download's
    /// error.
    async fn fail(&mut self, e: DownloadError) -> DownloadError {
        // The error is the download's: the shards' own close results no longer matter.
        let _ = self.stop_all().await;
        self.error = Some(e.clone());
        e
    }

    /// Stops every shard, waits for their tasks, removes the files they completed that were
    /// not handed out, and returns the first close error of a shard at or before the current
    /// one.
    async fn stop_all(&mut self) -> Result<(), DownloadError> {
        let mut result = Ok(());
        for shard in &self.shards {
            shard.stop.store(true, Ordering::Release);
        }
        // Shards still waiting for the first `next` see the stop and close at once.
        self.go.send_replace(true);
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let closed = stop_shard(shard).await;
            if i <= self.current && result.is_ok() {
                result = closed;
            }
        }
        result
    }

    async fn close(&mut self) -> Result<(), DownloadError> {
        if let Some(result) = &self.closed {
            return result.clone();
        }
        let stopped = self.stop_all().await;
        let result = match &self.error {
            Some(e) => Err(e.clone()),
            None => stopped,
        };
        self.closed = Some(result.clone());
        result
    }
}

/// Waits for a stopping shard's task and removes the files it completed that were not handed
/// out. Returns the task's close result.
async fn stop_shard(shard: &mut Shard) -> Result<(), DownloadError> {
    shard.stop.store(true, Ordering::Release);
    let closed = match shard.task.take() {
        Some(task) => task.await.unwrap_or_else(|e| {
            Err(DownloadError {
                kind: ErrorKind::Host,
                message: format!("the shard from index {:016x}: {e}", shard.min_index),
                index: None,
                offset: None,
            })
        }),
        None => Ok(()),
    };
    // The task has ended, so nothing more arrives: what is queued was never handed out.
    shard.items.close();
    let mut ahead = shard.peeked.take().into_iter().collect::<Vec<_>>();
    while let Ok(item) = shard.items.try_recv() {
        ahead.push(item);
    }
    for file in ahead.into_iter().filter_map(|item| item.ok().flatten()) {
        let _ = std::fs::remove_file(&file.path);
    }
    closed
}

fn closed() -> DownloadError {
    DownloadError {
        kind: ErrorKind::Closed,
        message: "downloader closed".to_string(),
        index: None,
        offset: None,
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let mut shards = std::mem::take(&mut self.shards);
        for shard in &shards {
            shard.stop.store(true, Ordering::Release);
        }
        self.go.send_replace(true);
        // Waiting is async: it runs on a task, like `Download`'s own drop.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for shard in &mut shards {
                    let _ = stop_shard(shard).await;
                }
            });
        }
    }
}

impl ShardedDownload {
    /// The next WAL file in index order, `None` after the last; see the WIT `next`.
    pub async fn next(&mut self) -> Result<Option<WalFile>, DownloadError> {
        match &mut self.mode {
            Mode::One(d) => d.next().await,
            Mode::Shards(s) => s.next().await,
        }
    }

    /// How many WAL files `next` has returned.
    pub async fn count(&mut self) -> Result<u64, DownloadError> {
        match &mut self.mode {
            Mode::One(d) => d.count().await,
            Mode::Shards(s) => Ok(s.count),
        }
    }

    /// Cancels outstanding work, removes unfinished output (and, sharded, the files completed
    /// ahead of their turn) and returns the first error.
    pub async fn close(&mut self) -> Result<(), DownloadError> {
        match &mut self.mode {
            Mode::One(d) => d.close().await,
            Mode::Shards(s) => s.close().await,
        }
    }

    /// The download's counters so far (summed over the instances).
    pub async fn stats(&mut self) -> Result<DownloadStats, DownloadError> {
        match &mut self.mode {
            Mode::One(d) => d.stats().await,
            Mode::Shards(s) => {
                let mut sum = DownloadStats::default();
                for shard in &s.shards {
                    sum += *shard.stats.lock().unwrap_or_else(|e| e.into_inner());
                }
                Ok(sum)
            }
        }
    }

    /// How many component instances the download runs on.
    pub fn shards(&self) -> usize {
        match &self.mode {
            Mode::One(_) => 1,
            Mode::Shards(s) => s.shards.len(),
        }
    }

    /// The sum over the instances of each one's guest memory high-water mark, in bytes (an
    /// upper bound of what they held at once).
    pub fn peak_guest_memory_bytes(&self) -> u64 {
        match &self.mode {
            Mode::One(d) => d.peak_guest_memory_bytes(),
            Mode::Shards(s) => s
                .shards
                .iter()
                .map(|shard| shard.peak_memory.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// The time spent instantiating, summed over the instances (see
    /// [`Download::instantiate_time`]).
    pub fn instantiate_time(&self) -> Duration {
        match &self.mode {
            Mode::One(d) => d.instantiate_time(),
            Mode::Shards(s) => s.instantiate_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(min: u64, max: u64, parallelism: u32, shards: u32) -> Vec<(u64, u64, u32)> {
        let mut o = Options::new("0123456789abcdef", min, max);
        o.parallelism = parallelism;
        split(&o, shards)
    }

    #[test]
    fn splits_cover_the_range_and_share_the_parallelism() {
        assert_eq!(ranges(0, 15, 4, 2), vec![(0, 7, 2), (8, 15, 2)]);
        assert_eq!(
            ranges(5, 14, 5, 3),
            vec![(5, 7, 2), (8, 10, 2), (11, 14, 1)]
        );
        // No more shards than indexes or than the parallelism.
        assert_eq!(ranges(7, 8, 8, 4), vec![(7, 7, 4), (8, 8, 4)]);
        assert_eq!(ranges(0, 99, 2, 8), vec![(0, 49, 1), (50, 99, 1)]);
        // One shard, or options the component must reject, are left as they are.
        assert_eq!(ranges(0, 99, 8, 1), vec![(0, 99, 8)]);
        assert_eq!(ranges(9, 3, 8, 2), vec![(9, 3, 8)]);
        assert_eq!(ranges(0, 9, 0, 2), vec![(0, 9, 0)]);
        assert_eq!(ranges(0, 9, 1, 2), vec![(0, 9, 1)]);
        // The whole u64 range.
        let whole = ranges(0, u64::MAX, 3, 3);
        assert_eq!(whole.len(), 3);
        assert_eq!((whole[0].0, whole[2].1), (0, u64::MAX));
        for pair in whole.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0);
        }
        assert_eq!(whole.iter().map(|r| r.2).sum::<u32>(), 3);
    }
}
