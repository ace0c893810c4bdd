//! walrestore-host: runs the walrestore component (Litestream's WAL downloader for WASI 0.2)
//! in wasmtime, supplies its replica client from a `Replica` backend, and provides the
//! `wal-download` CLI.
//!
//! - `embed`: the engine, linker and store (`Runtime`, `Download`).
//! - `sharded`: one download over several instances at once (`ShardedDownload`).
//! - `client`: the host side of the WIT `replica-client` interface.
//! - `backend`: where segments come from (`DirReplica`, `MemReplica`).
//! - `bench`: the `wal-bench` harness (workload generator, native baseline, measurements).

pub mod backend;
pub mod bench;
mod bindings;
mod client;
mod embed;
mod limits;
mod sharded;

pub use backend::{
    DirReplica, Fault, FetchStats, LogLine, LoggingReplica, MemReplica, Replica, ReplicaError,
    SegmentBody, TransientFaults, WalSegmentInfo, format_hex16, parse_hex16,
};
pub use embed::{
    DEFAULT_MAX_WAL_SIZE, Download, DownloadError, DownloadStats, ErrorKind, Options,
    PoolingSettings, Runtime, RuntimeConfig, WalFile, default_cache_dir, ensure_precompiled,
    precompiled_path,
};
pub use sharded::ShardedDownload;
