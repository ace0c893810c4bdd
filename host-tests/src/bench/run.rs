//! The measured runs: the component (one download, or many at once), the native baseline,
//! and the cold start.

use super::report::Record;
use super::workload::Workload;
use crate::backend::{MemReplica, Replica};
use crate::embed::{Options, Runtime, RuntimeConfig, ensure_precompiled};
use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How each run downloads.
#[derive(Clone, Copy, Debug)]
pub struct RunSettings {
    pub parallelism: u32,
    pub fetch_latency: Duration,
    pub list_latency: Duration,
    /// The component's `Options::offload_output_io`.
    pub offload_output_io: bool,
    /// Instances each download is split over (`Runtime::start_sharded`); 1 is the plain one.
    pub shards: u32,
    /// The component's `Options::verify_wal` (on by default).
    pub verify_wal: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl RunSettings {
    fn ideal_ms(&self, fetches: u64, pages: u64) -> f64 {
        fetches as f64 * ms(self.fetch_latency) / f64::from(self.parallelism.max(1))
            + pages as f64 * ms(self.list_latency)
    }

    fn record(&self, mode: &'static str, workload: &Workload) -> Record {
        Record {
            mode,
            concurrency: 1,
            shards: 1,
            parallelism: self.parallelism,
            latency_ms: ms(self.fetch_latency),
            list_latency_ms: ms(self.list_latency),
            memory_bound_bytes: u64::from(self.parallelism) * workload.largest_segment()
                + (16 << 20),
            ..Record::default()
        }
    }
}

/// One download by the component, unchecked: its record (without the check) and its files.
async fn download(
    runtime: &Runtime,
    workload: &Workload,
    settings: &RunSettings,
    replica: MemReplica,
    out: &Path,
) -> anyhow::Result<(Record, Vec<(u64, PathBuf)>, Instant)> {
    let mut options = Options::new(
        workload.generation.clone(),
        workload.min_index,
        workload.max_index,
    );
    options.parallelism = settings.parallelism;
    options.offload_output_io = settings.offload_output_io;
    options.verify_wal = settings.verify_wal;
    let mut download = runtime
        .start_sharded(Arc::new(replica.clone()), out, &options, settings.shards)
        .await?;
    let mut record = settings.record("component", workload);
    record.instantiate_us = download.instantiate_time().as_secs_f64() * 1e6;
    record.shards = download.shards();
    // Each instance has its own fixed part (buffers, the runtime): 16 MiB each.
    record.memory_bound_bytes += (download.shards() as u64 - 1) * (16 << 20);
    let mut files = Vec::new();
    let started = Instant::now();
    let mut last = started;
    loop {
        match download.next().await {
            Ok(Some(file)) => {
                last = Instant::now();
                if files.is_empty() {
                    record.time_to_first_file_ms = ms(last - started);
                }
                record.bytes_out += file.size;
                files.push((file.index, file.path));
            }
            Ok(None) => break,
            Err(e) => {
                let _ = download.close().await;
                bail!("download failed: {e} ({:?})", e.kind);
            }
        }
    }
    record.elapsed_ms = ms(last - started);
    download
        .close()
        .await
        .map_err(|e| anyhow::anyhow!("close failed: {e}"))?;
    record.files = files.len() as u64;
    record.peak_guest_memory_bytes = download.peak_guest_memory_bytes();
    let stats = replica.stats();
    record.fetches = stats.fetches;
    record.max_outstanding = stats.max_outstanding;
    record.pages = stats.pages;
    record.ideal_ms = settings.ideal_ms(stats.fetches, stats.pages);
    Ok((record, files, last))
}

/// One download by a freshly instantiated component into a fresh temporary directory, checked
/// byte for byte (after the clock stops) and removed.
pub async fn run_component(
    runtime: &Runtime,
    workload: &Workload,
    settings: &RunSettings,
) -> anyhow::Result<Record> {
    let out = tempfile::tempdir().context("creating the output directory")?;
    let replica = workload.replica(settings.fetch_latency, settings.list_latency);
    let (mut record, files, _) = download(runtime, workload, settings, replica, out.path()).await?;
    workload.check(&files)?;
    record.verified = true;
    Ok(record)
}

/// `n` downloads at once, each in its own store, with its own replica (sharing the segment
/// bytes) and output directory. Reports the wall time of all of them, the slowest single one,
/// and the host's RSS growth per download.
pub async fn run_concurrent(
    runtime: &Runtime,
    workload: Arc<Workload>,
    settings: &RunSettings,
    n: usize,
) -> anyhow::Result<Record> {
    let rss_before = rss_bytes();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let runtime = runtime.clone();
            let workload = workload.clone();
            let settings = *settings;
            tokio::spawn(async move {
                let out = tempfile::tempdir().context("creating the output directory")?;
                let begun = Instant::now();
                let replica = workload.replica(settings.fetch_latency, settings.list_latency);
                let (record, files, last) =
                    download(&runtime, &workload, &settings, replica, out.path()).await?;
                anyhow::Ok((record, files, out, last - begun, last))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.context("download task panicked")??);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let rss_peak = sampler.join().unwrap_or(0);
    let mut record = settings.record("component", &workload);
    let mut instantiate: Vec<f64> = results.iter().map(|r| r.0.instantiate_us).collect();
    instantiate.sort_by(f64::total_cmp);
    record.instantiate_us = instantiate.get(n / 2).copied().unwrap_or(0.0);
    record.shards = results.iter().map(|r| r.0.shards).max().unwrap_or(1);
    record.memory_bound_bytes += (record.shards as u64 - 1) * (16 << 20);
    record.rss_per_download_bytes =
        rss_before.map(|before| rss_peak.saturating_sub(before) / n.max(1) as u64);
    sum_concurrent(&workload, &mut record, started, &results)?;
    Ok(record)
}

/// One download of a concurrent run: its record, its files, its output directory (kept until
/// checked), how long it took, and when its last file was complete.
type Finished = (
    Record,
    Vec<(u64, PathBuf)>,
    tempfile::TempDir,
    Duration,
    Instant,
);

/// Folds the downloads of a concurrent run, started at `started`, into `record`, and checks
/// every download's files.
fn sum_concurrent(
    workload: &Workload,
    record: &mut Record,
    started: Instant,
    results: &[Finished],
) -> anyhow::Result<()> {
    let last = results.iter().map(|r| r.4).max().unwrap_or(started);
    record.concurrency = results.len();
    record.elapsed_ms = ms(last - started);
    record.time_to_first_file_ms = results
        .iter()
        .map(|r| r.0.time_to_first_file_ms)
        .fold(f64::MAX, f64::min);
    record.slowest_download_ms = Some(results.iter().map(|r| ms(r.3)).fold(0.0, f64::max));
    for (r, files, _out, _, _) in results {
        record.files += r.files;
        record.bytes_out += r.bytes_out;
        record.fetches += r.fetches;
        record.pages += r.pages;
        record.max_outstanding = record.max_outstanding.max(r.max_outstanding);
        record.peak_guest_memory_bytes = record
            .peak_guest_memory_bytes
            .max(r.peak_guest_memory_bytes);
        workload.check(files)?;
        // One download's ideal: every download has its own replica and window.
        record.ideal_ms = r.ideal_ms;
    }
    record.verified = true;
    Ok(())
}

/// The native baseline: the same work without WebAssembly, on the same in-memory replica
/// and latencies. The listing is read as it arrives, `P` fetches (each collecting its body)
/// run at once in index order, and one thread decodes each LZ4 frame (lz4_flex) and writes the
/// WAL files in order, under a temporary name renamed when complete, as the component does.
pub async fn run_native(workload: &Workload, settings: &RunSettings) -> anyhow::Result<Record> {
    let out = tempfile::tempdir().context("creating the output directory")?;
    let (mut record, files, _) = native_download(workload, settings, out.path()).await?;
    workload.check(&files)?;
    record.verified = true;
    Ok(record)
}

/// `n` native downloads at once (each on its own tokio task, with its own replica), for
/// comparison with `run_concurrent`: the wall time of all of them, then the check.
pub async fn run_native_concurrent(
    workload: Arc<Workload>,
    settings: &RunSettings,
    n: usize,
) -> anyhow::Result<Record> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let workload = workload.clone();
            let settings = *settings;
            tokio::spawn(async move {
                let out = tempfile::tempdir().context("creating the output directory")?;
                let begun = Instant::now();
                let (record, files, last) =
                    native_download(&workload, &settings, out.path()).await?;
                anyhow::Ok((record, files, out, last - begun, last))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.context("native task panicked")??);
    }
    let mut record = settings.record("native", &workload);
    sum_concurrent(&workload, &mut record, started, &results)?;
    Ok(record)
}

/// The native download itself, unchecked: its record, its files and when the last one was
/// complete.
async fn native_download(
    workload: &Workload,
    settings: &RunSettings,
    out: &Path,
) -> anyhow::Result<(Record, Vec<(u64, PathBuf)>, Instant)> {
    let replica = workload.replica(settings.fetch_latency, settings.list_latency);
    let mut record = settings.record("native", workload);
    let generation = workload.generation.clone();
    let max_index = workload.max_index;
    let started = Instant::now();
    let fetcher = replica.clone();
    let mut bodies = replica
        .list_wal_segments(&generation, workload.min_index)
        .map_ok(|page| {
            futures::stream::iter(page.into_iter().map(Ok::<_, crate::backend::ReplicaError>))
        })
        .try_flatten()
        .try_take_while(move |s| std::future::ready(Ok(s.index <= max_index)))
        .map(move |s| {
            // Each fetch runs on its own task, so it progresses while this one decodes.
            let fetch = s.map(|s| {
                let fetch = fetcher.fetch_wal_segment(&generation, s.index, s.offset, 0);
                let task = tokio::spawn(async move {
                    let body: Vec<Bytes> = fetch.await?.try_collect().await?;
                    Ok::<_, crate::backend::ReplicaError>(body)
                });
                (s, task)
            });
            async move {
                let (s, task) = fetch?;
                let body = task.await.map_err(|e| {
                    crate::backend::ReplicaError::Other(format!("fetch task: {e}"))
                })??;
                Ok::<_, crate::backend::ReplicaError>((s, body))
            }
        })
        .buffered(settings.parallelism.max(1) as usize);
    let mut decoder = lz4_flex::frame::FrameDecoder::new(std::io::Cursor::new(Bytes::new()));
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    let mut current: Option<(u64, u64, PathBuf, std::io::BufWriter<std::fs::File>)> = None;
    let mut last = started;
    let finish = |(index, _, tmp, file): (u64, u64, PathBuf, std::io::BufWriter<std::fs::File>),
                  files: &mut Vec<(u64, PathBuf)>|
     -> anyhow::Result<()> {
        // Like the component, no fsync: both leave durability to the caller.
        drop(file.into_inner().map_err(|e| e.into_error())?);
        let path = tmp.with_extension("");
        std::fs::rename(&tmp, &path)?;
        files.push((index, path));
        Ok(())
    };
    while let Some(item) = bodies.next().await {
        let (s, body) = item.map_err(|e| anyhow::anyhow!("native fetch: {e}"))?;
        if current.as_ref().is_some_and(|c| c.0 != s.index) {
            finish(current.take().expect("checked"), &mut files)?;
            last = Instant::now();
            if files.len() == 1 {
                record.time_to_first_file_ms = ms(last - started);
            }
        }
        let (_, written, _, file) = current.get_or_insert_with(|| {
            let tmp = out.join(format!("wal-{:016x}-wal.tmp", s.index));
            let file = std::fs::File::create(&tmp).expect("creating a native output file");
            (
                s.index,
                0,
                tmp,
                std::io::BufWriter::with_capacity(256 << 10, file),
            )
        });
        if *written != s.offset {
            bail!(
                "native: missing offset {:x} of index {:x}",
                *written,
                s.index
            );
        }
        let compressed = if body.len() == 1 {
            body.into_iter().next().expect("one chunk")
        } else {
            Bytes::from(body.concat())
        };
        // One decoder for the whole run, given each segment in turn: it keeps its block
        // buffers instead of allocating (and zeroing) 4 MiB per segment.
        *decoder.get_mut() = std::io::Cursor::new(compressed);
        let n = std::io::copy(&mut decoder, file)?;
        *written += n;
        record.bytes_out += n;
    }
    if let Some(c) = current.take() {
        finish(c, &mut files)?;
        last = Instant::now();
        if files.len() == 1 {
            record.time_to_first_file_ms = ms(last - started);
        }
    }
    record.elapsed_ms = ms(last - started);
    record.files = files.len() as u64;
    let stats = replica.stats();
    record.fetches = stats.fetches;
    record.max_outstanding = stats.max_outstanding;
    record.pages = stats.pages;
    record.ideal_ms = settings.ideal_ms(stats.fetches, stats.pages);
    drop(bodies);
    Ok((record, files, last))
}

/// The host's resident set size (VmRSS of /proc/self/status); `None` where there is none.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One cold start, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct ColdStart {
    /// Creating the engine (once per process in a real host; not part of the goal).
    pub engine_us: f64,
    /// `Component::deserialize_file` of the precompiled component, linking and `InstancePre`.
    pub load_us: f64,
    /// The first instantiation after loading (store + instantiate from the template).
    pub first_instantiate_us: f64,
    /// A later instantiation from the same template (median of several).
    pub instantiate_pre_us: f64,
}

impl ColdStart {
    pub fn to_json(&self) -> serde_json::Value {
        let round = |x: f64| x.round();
        serde_json::json!({
            "mode": "cold-start",
            "engine_us": round(self.engine_us),
            "load_us": round(self.load_us),
            "first_instantiate_us": round(self.first_instantiate_us),
            "load_and_instantiate_us": round(self.load_us + self.first_instantiate_us),
            "instantiate_pre_us": round(self.instantiate_pre_us),
        })
    }
}

/// Measures a cold start with a fresh engine of `config`: load the component precompiled in
/// `cache_dir` (compiling it there first if missing, untimed), then instantiate it.
pub async fn cold_start(config: &RuntimeConfig, cache_dir: &Path) -> anyhow::Result<ColdStart> {
    let t = Instant::now();
    let engine = config.engine()?;
    let engine_us = t.elapsed().as_secs_f64() * 1e6;
    let path = ensure_precompiled(&engine, cache_dir)?;
    let t = Instant::now();
    let runtime = Runtime::from_precompiled(engine, &path)?;
    let load_us = t.elapsed().as_secs_f64() * 1e6;
    let replica = Arc::new(MemReplica::new());
    let options = Options::new(super::GENERATION, 0, 0);
    let out = tempfile::tempdir()?;
    let mut times = Vec::new();
    for _ in 0..11 {
        let download = runtime
            .start(replica.clone() as Arc<dyn Replica>, out.path(), &options)
            .await?;
        times.push(download.instantiate_time().as_secs_f64() * 1e6);
        drop(download);
    }
    let first_instantiate_us = times[0];
    let mut later = times[1..].to_vec();
    later.sort_by(f64::total_cmp);
    Ok(ColdStart {
        engine_us,
        load_us,
        first_instantiate_us,
        instantiate_pre_us: later[later.len() / 2],
    })
}
