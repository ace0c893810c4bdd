//! Shared by the integration tests: one compiled component per test binary, the fixture root,
//! and checks on the output directory.

#![allow(dead_code)] // each test binary uses a different part

pub mod sqlite_replica;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use walrestore_host::{
    Download, DownloadError, FetchStats, MemReplica, Options, Replica, Runtime, WalFile,
};

use sqlite_replica::{FrameStyle, GeneratedIndex};

/// The generation of every Litestream fixture.
pub const GEN0: &str = "0000000000000000";

/// The component, compiled once per test binary (compiling it is the expensive part).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("compile the walrestore component"))
}

/// Litestream's fixtures, read in place from `../shared` beside the workspace. Missing
/// fixtures fail the test: a parity suite that silently skips proves nothing.
pub fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/litestream");
    assert!(
        root.join("wal-downloader").is_dir(),
        "../shared/fixtures missing: Litestream's fixtures must be at {} \
         (shared/ beside the workspace); see the README",
        root.display()
    );
    root
}

/// A fixture of `wal-downloader/`.
pub fn wal_fixture(name: &str) -> PathBuf {
    let dir = fixtures().join("wal-downloader").join(name);
    assert!(
        dir.is_dir(),
        "../shared/fixtures missing: {}",
        dir.display()
    );
    dir
}

/// The cache directory for the precompiled component of the tests' `wal-download` runs, under
/// the build's target directory, so that the tests never write into the user's own cache.
pub fn cli_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("walrestore-cache")
}

/// The committed sample replica.
pub fn sample_replica() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-replica")
}

/// Name of the final output file of `index`.
pub fn final_name(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index:016x}-wal")
}

/// Options with a given parallelism, for segments that are not SQLite WALs (noise, text):
/// the WAL check is off. Real WALs use `wal_options`.
pub fn options(generation: &str, min: u64, max: u64, parallelism: u32) -> Options {
    let mut o = wal_options(generation, min, max, parallelism);
    o.verify_wal = false;
    o
}

/// Options with a given parallelism and the defaults otherwise (the WAL check on), for
/// replicas of real SQLite WALs.
pub fn wal_options(generation: &str, min: u64, max: u64, parallelism: u32) -> Options {
    let mut o = Options::new(generation, min, max);
    o.parallelism = parallelism;
    // The default attempts, with short backoffs: permanent faults are retried to no avail.
    o.retry_delay = std::time::Duration::from_millis(1);
    o
}

/// Starts a download of `replica` into `out`.
pub async fn start(replica: Arc<dyn Replica>, out: &Path, options: &Options) -> Download {
    runtime()
        .start(replica, out, options)
        .await
        .expect("start the component")
}

/// Calls `next` until the end or the first error.
pub async fn drain(download: &mut Download) -> (Vec<WalFile>, Option<DownloadError>) {
    let mut files = Vec::new();
    loop {
        match download.next().await {
            Ok(Some(file)) => files.push(file),
            Ok(None) => return (files, None),
            Err(e) => return (files, Some(e)),
        }
    }
}

/// Names of the entries of `dir`.
pub fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that `dir` holds exactly the files that were returned: nothing unfinished
/// (`*.tmp`), and no final file for an index that was not returned.
pub fn assert_only_returned(dir: &Path, returned: &[WalFile], context: &str) {
    let want: BTreeSet<String> = returned
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let got = entries(dir);
    assert_eq!(
        got, want,
        "{context}: the output directory must hold exactly the returned files"
    );
}

/// Asserts that no final file exists for `index` (nor a `*.tmp` one) right now.
pub fn assert_no_final_file(dir: &Path, prefix: &str, index: u64, context: &str) {
    let name = final_name(prefix, index);
    assert!(
        !dir.join(&name).exists(),
        "{context}: {name} exists although index {index:#x} failed"
    );
}

/// Asserts a returned file: its index, its name, its size and its bytes.
pub fn assert_file(file: &WalFile, out: &Path, prefix: &str, index: u64, want: &[u8], ctx: &str) {
    assert_eq!(file.index, index, "{ctx}: files must come in index order");
    assert_eq!(
        file.path,
        out.join(final_name(prefix, index)),
        "{ctx}: path of index {index:#x}"
    );
    assert_eq!(
        file.size,
        want.len() as u64,
        "{ctx}: size of index {index:#x}"
    );
    let got = std::fs::read(&file.path)
        .unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", file.path.display()));
    assert!(
        got == want,
        "{ctx}: contents of index {index:#x} differ ({} bytes, want {})",
        got.len(),
        want.len()
    );
}

/// Waits until every fetch of `mem` is released (the guest dropped its futures and streams,
/// the host aborted their tasks). A liveness bound, not a timing check: up to 2 s.
pub async fn wait_released(mem: &MemReplica) -> FetchStats {
    for _ in 0..200 {
        let stats = mem.stats();
        if stats.outstanding == 0 {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mem.stats()
}

/// A `MemReplica` holding `indexes` under `generation`, compressed in `style`.
pub fn mem_replica(generation: &str, indexes: &[GeneratedIndex], style: &FrameStyle) -> MemReplica {
    let mem = MemReplica::new();
    for (index, offset, frame) in sqlite_replica::compressed_segments(indexes, style) {
        mem.insert(generation, index, offset, frame);
    }
    mem
}

/// The expected WAL of every index of a replica directory: the concatenation of its
/// decompressed segments, checked to be contiguous from offset 0.
pub fn expected_wals(root: &Path, generation: &str) -> Vec<(u64, Vec<u8>)> {
    let wal_dir = root.join("generations").join(generation).join("wal");
    let mut indexes: Vec<(u64, PathBuf)> = std::fs::read_dir(&wal_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", wal_dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (u64::from_str_radix(&name, 16).unwrap(), e.path())
        })
        .collect();
    indexes.sort();
    indexes
        .into_iter()
        .map(|(index, dir)| {
            let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    let offset = name.strip_suffix(".wal.lz4").unwrap();
                    (u64::from_str_radix(offset, 16).unwrap(), e.path())
                })
                .collect();
            segments.sort();
            let mut wal = Vec::new();
            for (offset, path) in segments {
                assert_eq!(offset, wal.len() as u64, "segments of {}", dir.display());
                wal.extend(sqlite_replica::decompress(&std::fs::read(path).unwrap()));
            }
            (index, wal)
        })
        .collect()
}
