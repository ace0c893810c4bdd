//! Embedding: the engine, linker and pre-instantiated component (`Runtime`), and one running
//! downloader in its own store (`Download`).

use crate::backend::Replica;
use crate::bindings::{WalDownloaderPre, downloader as wit};
use crate::client::{self, ClientLimits, ReplicaClientState, ReplicaClientView};
use crate::limits::MemoryWatch;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// The component, built for wasm32-wasip2 by build.rs and embedded so that binaries using this
/// crate (the CLI) are self-contained.
static COMPONENT: &[u8] = include_bytes!(env!("WALRESTORE_COMPONENT"));

/// Engine + linker + `InstancePre` for the component, built once; cheap to clone, Send + Sync.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: Arc<WalDownloaderPre<HostState>>,
}

/// The default `Options::max_wal_size`: 4 GiB, far above any WAL SQLite writes by default
/// (checkpoints keep it near 4 MiB), small enough to stop a decompression bomb early.
pub const DEFAULT_MAX_WAL_SIZE: u64 = 4 << 30;

/// What to download, and how (the WIT `options`, plus host settings).
#[derive(Clone, Debug)]
pub struct Options {
    /// Generation to read, 16 lowercase hex digits.
    pub generation: String,
    /// First WAL index to download (inclusive).
    pub min_index: u64,
    /// Last WAL index to download (inclusive).
    pub max_index: u64,
    /// Output files are `<prefix>-<index, 16 hex>-wal`; default `wal`.
    pub prefix: String,
    /// Most segment fetches outstanding at once; default 8.
    pub parallelism: u32,
    /// Check each WAL file (header, frames, checksum chain, final commit) before it is
    /// handed out; default true. Off only for data that is not a WAL.
    pub verify_wal: bool,
    /// Largest WAL file accepted, in bytes; default 4 GiB.
    pub max_wal_size: u64,
    /// Attempts at a fetch or listing that fails transiently (unavailable, or a stream that
    /// breaks, which resumes from where it stopped); default 5. 1 is Litestream's behaviour.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts; default 100 ms (milliseconds count).
    pub retry_delay: Duration,
    /// Most bytes of linear memory the guest may grow to; default none (wasm32's 4 GiB).
    /// Reaching it ends the download with an `ErrorKind::Limit` error.
    pub max_memory: Option<u64>,
    /// Wall-clock time the download may take, from `Runtime::start`; default none. When it
    /// passes, the call in progress is abandoned and the download ends with an
    /// `ErrorKind::Limit` error (a guest busy computing is stopped at the next epoch tick).
    pub timeout: Option<Duration>,
    /// Preopen the output directory read-only (to test write failures); default false.
    pub read_only_output: bool,
    /// Run the guest's output-directory calls (open, write, rename) on tokio's blocking
    /// thread pool instead of on the thread that runs the guest; default false.
    ///
    /// The guest waits for each call either way. Inline, a call costs a system call; offloaded,
    /// it also costs a hand-off to another thread and back, which made many small files
    /// (64 concurrent downloads of 64 KiB files, W5) take 1.5× as long. Offloading is for an
    /// output directory whose calls can block for long (a network filesystem), where an
    /// inline call would also hold up the other tasks of the tokio worker thread it runs on.
    pub offload_output_io: bool,
}

impl Options {
    /// Options for `min_index..=max_index` of `generation`, with the defaults above.
    pub fn new(generation: impl Into<String>, min_index: u64, max_index: u64) -> Options {
        Options {
            generation: generation.into(),
            min_index,
            max_index,
            prefix: "wal".to_owned(),
            parallelism: 8,
            verify_wal: true,
            max_wal_size: DEFAULT_MAX_WAL_SIZE,
            max_attempts: 5,
            retry_delay: Duration::from_millis(100),
            max_memory: None,
            timeout: None,
            read_only_output: false,
            offload_output_io: false,
        }
    }
}

/// Counters of a download (the WIT `download-stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownloadStats {
    /// Segment fetches started, retries included.
    pub fetches: u64,
    /// Fetches and listings started again after a transient failure.
    pub retries: u64,
    /// Compressed bytes of broken streams that retries did not fetch again.
    pub resumed_bytes: u64,
}

impl std::ops::AddAssign for DownloadStats {
    fn add_assign(&mut self, other: DownloadStats) {
        self.fetches += other.fetches;
        self.retries += other.retries;
        self.resumed_bytes += other.resumed_bytes;
    }
}

/// A complete, verified WAL file in the output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// Its WAL index.
    pub index: u64,
    /// The output directory joined with the file name the guest reported.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// What kind of failure a `DownloadError` is (the WIT `error-kind`, plus `Host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    WalNotFound,
    MissingOffset,
    ReplicaNotFound,
    ReplicaUnavailable,
    ReplicaOther,
    Corrupt,
    Output,
    Closed,
    /// A trap in the guest or a failure of the host itself.
    Host,
    /// A limit of the host was reached: guest memory or the timeout.
    Limit,
}

/// A download failure. Displays as `message` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadError {
    pub kind: ErrorKind,
    pub message: String,
    pub index: Option<u64>,
    pub offset: Option<u64>,
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DownloadError {}

impl DownloadError {
    fn limit(message: String) -> DownloadError {
        DownloadError {
            kind: ErrorKind::Limit,
            message,
            index: None,
            offset: None,
        }
    }

    /// A trap or host failure; `{:#}` keeps the whole cause chain on one line.
    fn host(e: wasmtime::Error) -> DownloadError {
        DownloadError {
            kind: ErrorKind::Host,
            message: format!("{e:#}"),
            index: None,
            offset: None,
        }
    }
}

impl From<wit::Error> for DownloadError {
    fn from(e: wit::Error) -> Self {
        let kind = match e.kind {
            wit::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            wit::ErrorKind::WalNotFound => ErrorKind::WalNotFound,
            wit::ErrorKind::MissingOffset => ErrorKind::MissingOffset,
            wit::ErrorKind::ReplicaNotFound => ErrorKind::ReplicaNotFound,
            wit::ErrorKind::ReplicaUnavailable => ErrorKind::ReplicaUnavailable,
            wit::ErrorKind::ReplicaOther => ErrorKind::ReplicaOther,
            wit::ErrorKind::Corrupt => ErrorKind::Corrupt,
            wit::ErrorKind::Output => ErrorKind::Output,
            wit::ErrorKind::Closed => ErrorKind::Closed,
        };
        DownloadError {
            kind,
            message: e.message,
            index: e.index,
            offset: e.offset,
        }
    }
}

/// wasmtime has its own error type; `anyhow` is this crate's public one.
fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// Engine settings beyond wasmtime's defaults (see `Runtime::with_config`).
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    /// Use wasmtime's pooling instance allocator, sized for this many live downloads at once
    /// (opt-in; the default is on-demand allocation).
    pub pooling: Option<PoolingSettings>,
}

/// Size of the pooling allocator's pools.
#[derive(Clone, Copy, Debug)]
pub struct PoolingSettings {
    /// Downloads (component instances) alive at once.
    pub instances: u32,
    /// Largest linear memory a guest may grow to, in bytes.
    pub max_memory_bytes: usize,
}

impl Default for PoolingSettings {
    fn default() -> Self {
        PoolingSettings {
            instances: 128,
            max_memory_bytes: 1 << 30,
        }
    }
}

impl RuntimeConfig {
    /// The engine for these settings. Engines made from equal settings share precompiled code.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let mut config = Config::new();
        // A computing guest yields at every epoch tick, so that a timeout can stop it.
        config.epoch_interruption(true);
        if let Some(p) = self.pooling {
            let n = p.instances.max(1);
            let mut pool = PoolingAllocationConfig::default();
            // A wasip2 component is a handful of core instances (the program plus adapter
            // shims), with one or two memories and a few tables.
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(8))
                .total_stacks(n)
                .max_memory_size(p.max_memory_bytes);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(to_anyhow)?;
        crate::limits::start_epoch_ticker(&engine);
        Ok(engine)
    }
}

/// Where precompiled components are cached by default: `$WALRESTORE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/walrestore`, else `$HOME/.cache/walrestore`, else a directory in the
/// system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("WALRESTORE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("walrestore");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".cache").join("walrestore");
    }
    std::env::temp_dir().join("walrestore-cache")
}

/// The file, in `cache_dir`, of the embedded component precompiled for `engine`: its name is
/// a hash of the engine's `precompile_compatibility_hash` (which covers wasmtime's version) and the
/// component's bytes, so a different engine, wasmtime or component never reads a stale file.
pub fn precompiled_path(engine: &Engine, cache_dir: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    static COMPONENT_HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let component_hash = *COMPONENT_HASH.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        COMPONENT.hash(&mut h);
        h.finish()
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    component_hash.hash(&mut h);
    cache_dir.join(format!("walrestore-{:016x}.cwasm", h.finish()))
}

/// Precompiles the embedded component for `engine` into `cache_dir` unless it is already
/// there, and returns the file. Written to a temporary name and renamed, so a concurrent
/// reader never sees half a file.
pub fn ensure_precompiled(engine: &Engine, cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = precompiled_path(engine, cache_dir);
    if path.is_file() {
        return Ok(path);
    }
    let bytes = engine
        .precompile_component(COMPONENT)
        .map_err(|e| anyhow::anyhow!("precompiling the walrestore component: {e:#}"))?;
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| anyhow::anyhow!("creating cache directory {}: {e}", cache_dir.display()))?;
    let tmp = path.with_extension(format!("cwasm.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("writing {}: {e}", path.display())
        })?;
    Ok(path)
}

impl Runtime {
    /// Compiles the component embedded in this crate at build time (WALRESTORE_COMPONENT).
    pub fn new() -> anyhow::Result<Runtime> {
        Runtime::with_config(&RuntimeConfig::default())
    }

    /// Like `new`, with the given engine settings.
    pub fn with_config(config: &RuntimeConfig) -> anyhow::Result<Runtime> {
        let engine = config.engine()?;
        let component = Component::new(&engine, COMPONENT)
            .map_err(|e| anyhow::anyhow!("compiling the walrestore component: {e:#}"))?;
        Runtime::link(engine, component)
    }

    /// Like `with_config`, but compiles the component only once per engine configuration:
    /// the machine code is cached in `cache_dir` (see `precompiled_path`) and later runs
    /// only load it (`Component::deserialize_file`, a few milliseconds instead of seconds).
    pub fn cached(config: &RuntimeConfig, cache_dir: &Path) -> anyhow::Result<Runtime> {
        let engine = config.engine()?;
        let path = ensure_precompiled(&engine, cache_dir)?;
        match Runtime::from_precompiled(engine.clone(), &path) {
            Ok(runtime) => Ok(runtime),
            // An unreadable or foreign file (e.g. damaged): compile afresh and replace it.
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                let path = ensure_precompiled(&engine, cache_dir)?;
                Runtime::from_precompiled(engine, &path)
            }
        }
    }

    /// Loads a component precompiled by `ensure_precompiled` for a compatible `engine`, and
    /// links it.
    pub fn from_precompiled(engine: Engine, path: &Path) -> anyhow::Result<Runtime> {
        // SAFETY: deserializing trusts the file to be wasmtime's own output for this engine
        // configuration. It is: `ensure_precompiled` wrote it (atomically, by rename) into
        // the host's own cache directory, under a name keyed by the engine's compatibility
        // hash, and wasmtime checks its header and engine settings again on load. The file
        // is memory-mapped: it must never be modified in place while loaded (replacing or
        // removing it is fine), which is why it is only ever written under a temporary name.
        let component = unsafe { Component::deserialize_file(&engine, path) }.map_err(|e| {
            anyhow::anyhow!("loading precompiled component {}: {e:#}", path.display())
        })?;
        Runtime::link(engine, component)
    }

    fn link(engine: Engine, component: Component) -> anyhow::Result<Runtime> {
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        client::add_to_linker(&mut linker).map_err(to_anyhow)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(WalDownloaderPre::new)
            .map_err(|e| anyhow::anyhow!("linking the walrestore component: {e:#}"))?;
        Ok(Runtime {
            engine,
            pre: Arc::new(pre),
        })
    }

    /// The engine the component was compiled with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Instantiates a fresh component whose only preopen is `out_dir` (read-only when
    /// `options.read_only_output`), with no env, args or network, and constructs its
    /// downloader. Must be called inside a tokio runtime (replica work runs on tokio tasks).
    pub async fn start(
        &self,
        replica: Arc<dyn Replica>,
        out_dir: &Path,
        options: &Options,
    ) -> anyhow::Result<Download> {
        let perms = match options.read_only_output {
            true => FsPerms::ReadOnly,
            false => FsPerms::ReadWrite,
        };
        let mut wasi = WasiCtx::builder();
        // Must be set before the preopen, which takes it from the builder.
        wasi.allow_blocking_current_thread(!options.offload_output_io);
        // stderr only, so a guest panic message is visible; nothing else of the host leaks in.
        wasi.inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        wasi.preopened_dir(out_dir, ".", perms).map_err(|e| {
            anyhow::anyhow!("opening output directory {}: {e:#}", out_dir.display())
        })?;
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            replica,
            client_limits: ClientLimits::new(options.parallelism as usize),
            memory: MemoryWatch {
                limit: options
                    .max_memory
                    .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
                ..MemoryWatch::default()
            },
        };
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let instantiating = Instant::now();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("instantiating the walrestore component: {e:#}"))?;
        let instantiate_time = instantiating.elapsed();
        let wit_options = wit::Options {
            generation: options.generation.clone(),
            min_index: options.min_index,
            max_index: options.max_index,
            prefix: options.prefix.clone(),
            parallelism: options.parallelism,
            verify_wal: options.verify_wal,
            max_wal_size: options.max_wal_size,
            max_attempts: options.max_attempts,
            retry_delay_ms: u32::try_from(options.retry_delay.as_millis()).unwrap_or(u32::MAX),
        };
        let downloader = instance
            .walrestore_downloader_downloader()
            .downloader()
            .call_constructor(&mut store, &wit_options)
            .await
            .map_err(|e| anyhow::anyhow!("creating the downloader: {e:#}"))?;
        Ok(Download {
            store: Some(store),
            instance,
            downloader,
            out_dir: out_dir.to_path_buf(),
            instantiate_time,
            deadline,
            timeout: options.timeout.unwrap_or_default(),
            range: (options.prefix.clone(), options.min_index, options.max_index),
            poisoned: None,
        })
    }
}

/// The data of one download's store: WASI (the output directory), the resource table shared
/// by WASI and the replica client, and the replica.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    replica: Arc<dyn Replica>,
    memory: MemoryWatch,
    client_limits: ClientLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ReplicaClientState for HostState {
    fn replica_client(&mut self) -> ReplicaClientView<'_> {
        ReplicaClientView {
            table: &mut self.table,
            replica: &self.replica,
            limits: &mut self.client_limits,
        }
    }
}

/// How long a dropped `Download` gives the guest's destructor to remove unfinished output
/// before the store is dropped regardless.
const DROP_CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One component instance and its downloader resource. Dropping it drops the store, which
/// cancels every outstanding replica task (they are owned by resources in the store); when
/// dropped inside a tokio runtime, the guest's destructor runs first, on a task, so that
/// unfinished output is removed as the WIT promises.
pub struct Download {
    /// `None` only while being dropped.
    store: Option<Store<HostState>>,
    instance: crate::bindings::WalDownloader,
    downloader: ResourceAny,
    out_dir: PathBuf,
    instantiate_time: Duration,
    /// When `Options::timeout` runs out.
    deadline: Option<Instant>,
    timeout: Duration,
    /// The prefix and index range, to remove unfinished files of a poisoned instance.
    range: (String, u64, u64),
    /// A trap or timeout stopped a call: the instance is not called again, and this is the
    /// download's error.
    poisoned: Option<DownloadError>,
}

impl Download {
    /// Runs one call into the guest within the deadline. A trap or a timeout poisons the
    /// instance (see `poisoned`).
    async fn call<R>(
        &mut self,
        call: impl AsyncFnOnce(
            &mut Store<HostState>,
            &crate::bindings::exports::walrestore::downloader::downloader::GuestDownloader<'_>,
            ResourceAny,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, DownloadError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let guest = self
            .instance
            .walrestore_downloader_downloader()
            .downloader();
        let store = self.store.as_mut().expect(LIVE);
        let running = call(store, &guest, self.downloader);
        let result = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), running).await,
            None => Ok(running.await),
        };
        let e = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(trap)) => match self.store.as_ref().expect(LIVE).data().memory.refused {
                Some(asked) => DownloadError::limit(format!(
                    "memory limit of {} bytes reached: the component asked for {asked} bytes",
                    self.store
                        .as_ref()
                        .expect(LIVE)
                        .data()
                        .memory
                        .limit
                        .unwrap_or_default()
                )),
                None => DownloadError::host(trap),
            },
            Err(_) => DownloadError::limit(format!(
                "timed out: the download did not finish within {:.3} s",
                self.timeout.as_secs_f64()
            )),
        };
        let (prefix, min, max) = &self.range;
        crate::limits::remove_unfinished(&self.out_dir, prefix, *min, *max);
        self.poisoned = Some(e.clone());
        Err(e)
    }

    /// The next WAL file in index order, `None` after the last; see the WIT `next`.
    pub async fn next(&mut self) -> Result<Option<WalFile>, DownloadError> {
        let file = self
            .call(async |store, guest, downloader| guest.call_next(store, downloader).await)
            .await??;
        Ok(file.map(|f| WalFile {
            index: f.index,
            path: self.out_dir.join(f.path),
            size: f.size,
        }))
    }

    /// How many WAL files `next` has returned.
    pub async fn count(&mut self) -> Result<u64, DownloadError> {
        self.call(async |store, guest, downloader| guest.call_count(store, downloader).await)
            .await
    }

    /// The download's counters so far: fetches, retries, resumed bytes.
    pub async fn stats(&mut self) -> Result<DownloadStats, DownloadError> {
        let stats = self
            .call(async |store, guest, downloader| guest.call_stats(store, downloader).await)
            .await?;
        Ok(DownloadStats {
            fetches: stats.fetches,
            retries: stats.retries,
            resumed_bytes: stats.resumed_bytes,
        })
    }

    /// The high-water mark of the guest's linear memory, in bytes, since instantiation.
    pub fn peak_guest_memory_bytes(&self) -> u64 {
        self.store.as_ref().expect(LIVE).data().memory.peak as u64
    }

    /// How long creating the store and instantiating the component (from the `InstancePre`
    /// template) took, without building the WASI context or constructing the downloader.
    pub fn instantiate_time(&self) -> Duration {
        self.instantiate_time
    }

    /// Cancels outstanding work, removes unfinished output and returns the first error.
    pub async fn close(&mut self) -> Result<(), DownloadError> {
        self.call(async |store, guest, downloader| guest.call_close(store, downloader).await)
            .await??;
        Ok(())
    }
}

const LIVE: &str = "the store is only taken when the Download is dropped";

impl Drop for Download {
    fn drop(&mut self) {
        let Some(mut store) = self.store.take() else {
            return;
        };
        if self.poisoned.is_some() {
            // Not called again: its unfinished files were removed when it was poisoned.
            return;
        }
        let downloader = self.downloader;
        // Dropping the guest's resource runs its destructor (cancel fetches, remove unfinished
        // files); dropping only the store would leave those files behind. That call is async,
        // so it runs on a task; without a runtime the store is simply dropped.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let cleanup = downloader.resource_drop_async(&mut store);
                // A trapped or hung guest must not keep the store alive: errors are ignored
                // (nothing is left to report them to) and the wait is bounded.
                let _ = tokio::time::timeout(DROP_CLEANUP_TIMEOUT, cleanup).await;
                drop(store);
            });
        }
    }
}
