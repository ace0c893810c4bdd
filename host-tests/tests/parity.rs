//! Litestream's `WALDownloader` test suite, case by case (see
//! `../shared/fixtures/litestream/PROVENANCE.md`), run through the real component at
//! parallelism 1, 8 and 1024 against Litestream's own fixtures.
//!
//! One difference on purpose: Litestream's `Close()` drops errors raised while downloading;
//! ours returns the first error, so the failing cases expect `close` to return it.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use walrestore_host::{DirReplica, DownloadError, ErrorKind, Fault, MemReplica, ReplicaError};

use common::sqlite_replica::FrameStyle;
use common::*;

const PARALLELISMS: [u32; 3] = [1, 8, 1024];
const PREFIX: &str = "wal";

/// The expected WAL file of `index` in a fixture.
fn fixture_wal(fixture: &Path, index: u64) -> Vec<u8> {
    let path = fixture.join(format!("{index:016x}.wal"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Downloads `min..=max` of a fixture and checks every file against the fixture's `.wal`.
async fn expect_files(fixture_name: &str, min: u64, max: u64) {
    let fixture = wal_fixture(fixture_name);
    for p in PARALLELISMS {
        let ctx = format!("{fixture_name} {min}..{max} parallelism {p}");
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(&fixture));
        let mut d = start(replica, out.path(), &wal_options(GEN0, min, max, p)).await;
        let mut files = Vec::new();
        for index in min..=max {
            let file = d
                .next()
                .await
                .unwrap_or_else(|e| panic!("{ctx}: next: {e:?}"))
                .unwrap_or_else(|| panic!("{ctx}: ended before index {index}"));
            assert_file(
                &file,
                out.path(),
                PREFIX,
                index,
                &fixture_wal(&fixture, index),
                &ctx,
            );
            files.push(file);
        }
        assert_eq!(d.next().await, Ok(None), "{ctx}: end after the last index");
        assert_eq!(d.next().await, Ok(None), "{ctx}: end stays the end");
        assert_eq!(d.count().await, Ok(max - min + 1), "{ctx}: count");
        assert_eq!(d.close().await, Ok(()), "{ctx}: close");
        assert_only_returned(out.path(), &files, &ctx);
    }
}

/// Checks a failure that `next` reports before any file, again on a second `next`, and from
/// `close`; and that nothing is left in the output directory.
async fn expect_error_first(
    replica: Arc<dyn walrestore_host::Replica>,
    min: u64,
    max: u64,
    p: u32,
    ctx: &str,
    check: impl Fn(&DownloadError),
) {
    let out = tempfile::tempdir().unwrap();
    let mut d = start(replica, out.path(), &wal_options(GEN0, min, max, p)).await;
    let err = d.next().await.expect_err(&format!("{ctx}: next must fail"));
    check(&err);
    assert_eq!(d.count().await, Ok(0), "{ctx}: count");
    for index in min..=max {
        assert_no_final_file(out.path(), PREFIX, index, ctx);
    }
    assert_eq!(
        d.next().await,
        Err(err.clone()),
        "{ctx}: a second next returns the same error"
    );
    assert_eq!(d.close().await, Err(err), "{ctx}: close returns the error");
    assert_only_returned(out.path(), &[], ctx);
}

fn wal_not_found(index: u64) -> impl Fn(&DownloadError) {
    move |e| {
        assert_eq!(e.kind, ErrorKind::WalNotFound, "{e:?}");
        assert_eq!(
            e.message,
            format!("wal not found: generation={GEN0} index={index:016x}")
        );
        assert_eq!(e.index, Some(index), "{e:?}");
    }
}

// 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok() {
    expect_files("ok", 0, 2).await;
}

// 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one() {
    expect_files("one", 0, 0).await;
}

// 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slice() {
    expect_files("ok", 1, 1).await;
}

// 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slice_left() {
    expect_files("ok", 0, 1).await;
}

// 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slice_right() {
    expect_files("ok", 1, 2).await;
}

// 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large() {
    const N: u64 = 1000;
    let replica_dir = tempfile::tempdir().unwrap();
    for i in 0..N {
        let path = common::sqlite_replica::segment_path(replica_dir.path(), GEN0, i, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            FrameStyle::LITESTREAM.compress(i.to_string().as_bytes()),
        )
        .unwrap();
    }
    for p in PARALLELISMS {
        let ctx = format!("large parallelism {p}");
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(replica_dir.path()));
        // The segments hold decimal text, not WALs: the check is off, as in Litestream.
        let mut d = start(replica, out.path(), &options(GEN0, 0, N - 1, p)).await;
        let mut files = Vec::new();
        for i in 0..N {
            let file = d
                .next()
                .await
                .unwrap_or_else(|e| panic!("{ctx}: next: {e:?}"))
                .unwrap_or_else(|| panic!("{ctx}: ended before index {i}"));
            assert_file(&file, out.path(), PREFIX, i, i.to_string().as_bytes(), &ctx);
            files.push(file);
        }
        assert_eq!(d.next().await, Ok(None), "{ctx}: end");
        assert_eq!(d.count().await, Ok(N), "{ctx}: count");
        assert_eq!(d.close().await, Ok(()), "{ctx}: close");
        assert_only_returned(out.path(), &files, &ctx);
    }
}

/// Cases 7–9: a replica whose generation has no WAL, in three shapes git cannot store.
async fn empty_replica(shape: &str) {
    let root = tempfile::tempdir().unwrap();
    let gen_dir = root.path().join("generations").join(GEN0);
    let dir = match shape {
        "generation" => gen_dir,
        "wal" => gen_dir.join("wal"),
        "index" => gen_dir.join("wal").join("0000000000000000"),
        _ => unreachable!(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    for p in PARALLELISMS {
        let ctx = format!("empty {shape} dir, parallelism {p}");
        let replica = Arc::new(DirReplica::new(root.path()));
        expect_error_first(replica, 0, 0, p, &ctx, wal_not_found(0)).await;
    }
}

// 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_empty_generation_dir() {
    empty_replica("generation").await;
}

// 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_wal_dir() {
    empty_replica("wal").await;
}

// 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_wal_index_dir() {
    empty_replica("index").await;
}

// 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_without_next() {
    for p in PARALLELISMS {
        let ctx = format!("close without next, parallelism {p}");
        let replica_dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(replica_dir.path()));
        let mut d = start(replica, out.path(), &wal_options(GEN0, 0, 2, p)).await;
        assert_eq!(d.close().await, Ok(()), "{ctx}");
        assert_eq!(d.count().await, Ok(0), "{ctx}: count");
        assert_only_returned(out.path(), &[], &ctx);
    }
}

// 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_early() {
    let fixture = wal_fixture("ok");
    for p in PARALLELISMS {
        let ctx = format!("close early, parallelism {p}");
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(&fixture));
        let mut d = start(replica, out.path(), &wal_options(GEN0, 0, 2, p)).await;
        let file = d.next().await.unwrap().expect("a first file");
        assert_file(
            &file,
            out.path(),
            PREFIX,
            0,
            &fixture_wal(&fixture, 0),
            &ctx,
        );
        assert_eq!(d.close().await, Ok(()), "{ctx}: close");
        let err = d.next().await.expect_err("next after close must fail");
        assert_eq!(err.kind, ErrorKind::Closed, "{ctx}: {err:?}");
        assert_eq!(d.count().await, Ok(1), "{ctx}: count");
        // The returned file stays; the downloads in flight for 1 and 2 leave nothing behind.
        assert_only_returned(out.path(), &[file], &ctx);
    }
}

/// Runs the CLI on the `ok` fixture with extra arguments; returns (exit code, stderr).
fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wal-download"))
        .env("WALRESTORE_CACHE_DIR", cli_cache_dir())
        .arg(wal_fixture("ok"))
        .arg("-o")
        .arg(out.path())
        .args(args)
        .output()
        .expect("run wal-download");
    assert!(
        entries(out.path()).is_empty(),
        "wal-download {args:?} wrote files although the arguments are invalid"
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// 12. (A negative index cannot reach the component: its options are u64.)
#[test]
fn err_min_index_required() {
    let (code, stderr) = cli(&["--min-index=-1", "--max-index=2"]);
    assert_eq!(code, Some(1), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("minimum index required"),
        "stderr: {stderr}"
    );
}

// 13.
#[test]
fn err_max_index_required() {
    let (code, stderr) = cli(&["--min-index=1", "--max-index=-1"]);
    assert_eq!(code, Some(1), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("maximum index required"),
        "stderr: {stderr}"
    );
}

fn invalid_argument(message: &'static str) -> impl Fn(&DownloadError) {
    move |e| {
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
        assert_eq!(e.message, message);
    }
}

// 14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_min_index_too_large() {
    let fixture = wal_fixture("ok");
    for p in PARALLELISMS {
        let ctx = format!("min > max, parallelism {p}");
        let replica = Arc::new(DirReplica::new(&fixture));
        expect_error_first(
            replica,
            2,
            1,
            p,
            &ctx,
            invalid_argument("minimum index cannot be larger than maximum index"),
        )
        .await;
    }
}

// 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_parallelism_required() {
    let replica = Arc::new(DirReplica::new(wal_fixture("ok")));
    expect_error_first(
        replica,
        0,
        0,
        0,
        "parallelism 0",
        invalid_argument("parallelism must be at least one"),
    )
    .await;
}

// 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_missing_initial_index() {
    missing_index("missing-initial-index", 0).await;
}

// 17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_missing_middle_index() {
    missing_index("missing-middle-index", 1).await;
}

// 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_missing_ending_index() {
    missing_index("missing-ending-index", 2).await;
}

async fn missing_index(fixture_name: &str, index: u64) {
    let fixture = wal_fixture(fixture_name);
    for p in PARALLELISMS {
        let ctx = format!("{fixture_name}, parallelism {p}");
        let replica = Arc::new(DirReplica::new(&fixture));
        expect_error_first(replica, 0, 2, p, &ctx, wal_not_found(index)).await;
    }
}

// 19.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_wal_segments() {
    for p in PARALLELISMS {
        let ctx = format!("listing fails, parallelism {p}");
        let mem = MemReplica::load_dir(&wal_fixture("ok")).unwrap();
        mem.set_list_error(Some(ReplicaError::Other("marker".into())));
        expect_error_first(Arc::new(mem.clone()), 0, 2, p, &ctx, |e| {
            assert_eq!(e.kind, ErrorKind::ReplicaOther, "{e:?}");
            assert!(e.message.contains("wal segments: marker"), "{e:?}");
        })
        .await;
        assert_eq!(mem.stats().fetches, 0, "{ctx}: fetched without a listing");
    }
}

/// Runs `0..=0` of a fixture and expects the download of index 0 to fail; checks the error,
/// the repeat, `close`, and that nothing is left behind.
async fn expect_index0_error(
    replica: Arc<dyn walrestore_host::Replica>,
    p: u32,
    read_only_output: bool,
    ctx: &str,
    check: impl Fn(&DownloadError),
) {
    let out = tempfile::tempdir().unwrap();
    let mut o = wal_options(GEN0, 0, 0, p);
    o.read_only_output = read_only_output;
    let mut d = start(replica, out.path(), &o).await;
    let err = d.next().await.expect_err(&format!("{ctx}: next must fail"));
    check(&err);
    assert_eq!(err.index, Some(0), "{ctx}: {err:?}");
    assert_no_final_file(out.path(), PREFIX, 0, ctx);
    assert_eq!(d.next().await, Err(err.clone()), "{ctx}: next again");
    assert_eq!(d.count().await, Ok(0), "{ctx}: count");
    assert_eq!(d.close().await, Err(err), "{ctx}: close returns the error");
    assert_only_returned(out.path(), &[], ctx);
}

// 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_missing_offset() {
    let fixture = wal_fixture("missing-offset");
    for p in PARALLELISMS {
        let ctx = format!("missing offset, parallelism {p}");
        let replica = Arc::new(DirReplica::new(&fixture));
        expect_index0_error(replica, p, false, &ctx, |e| {
            assert_eq!(e.kind, ErrorKind::MissingOffset, "{e:?}");
            assert_eq!(
                e.message,
                "missing WAL offset: generation=0000000000000000 index=0000000000000000 \
                 offset=0000000000002050"
            );
            assert_eq!(e.offset, Some(0x2050), "{e:?}");
        })
        .await;
    }
}

// 21.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_cancelled_before_next() {
    let fixture = wal_fixture("ok");
    for p in PARALLELISMS {
        let ctx = format!("cancelled before next, parallelism {p}");
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(&fixture));
        let mut d = start(replica, out.path(), &wal_options(GEN0, 0, 2, p)).await;
        assert_eq!(d.close().await, Ok(()), "{ctx}: close");
        let err = d.next().await.expect_err("next after close must fail");
        assert_eq!(err.kind, ErrorKind::Closed, "{ctx}: {err:?}");
        assert_eq!(d.count().await, Ok(0), "{ctx}: count");
        assert_only_returned(out.path(), &[], &ctx);
    }
}

// 22.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_write_wal() {
    let fixture = wal_fixture("err-write-wal");
    for p in PARALLELISMS {
        let ctx = format!("read-only output, parallelism {p}");
        let replica = Arc::new(DirReplica::new(&fixture));
        expect_index0_error(replica, p, true, &ctx, |e| {
            assert_eq!(e.kind, ErrorKind::Output, "{e:?}");
        })
        .await;
    }
}

// 23.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_download_wal() {
    for p in PARALLELISMS {
        let ctx = format!("fetch fails, parallelism {p}");
        let mem = MemReplica::load_dir(&wal_fixture("err-download-wal")).unwrap();
        mem.set_fault(
            0,
            0,
            Fault::FetchError(ReplicaError::Other("marker".into())),
        );
        expect_index0_error(Arc::new(mem.clone()), p, false, &ctx, |e| {
            assert_eq!(e.kind, ErrorKind::ReplicaOther, "{e:?}");
            assert!(e.message.contains("read WAL segment: marker"), "{e:?}");
            assert_eq!(e.offset, Some(0), "{e:?}");
        })
        .await;
        assert_eq!(
            wait_released(&mem).await.outstanding,
            0,
            "{ctx}: leaked fetches"
        );
    }
}

// 24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_read_wal_segment() {
    for p in PARALLELISMS {
        let ctx = format!("stream fails, parallelism {p}");
        let mem = MemReplica::load_dir(&wal_fixture("err-read-wal-segment")).unwrap();
        mem.set_fault(
            0,
            0,
            Fault::MidStream {
                after: 5,
                message: "marker".into(),
            },
        );
        expect_index0_error(Arc::new(mem.clone()), p, false, &ctx, |e| {
            assert_eq!(e.kind, ErrorKind::ReplicaOther, "{e:?}");
            assert!(e.message.contains("copy WAL segment: marker"), "{e:?}");
            assert_eq!(e.offset, Some(0), "{e:?}");
        })
        .await;
        assert_eq!(
            wait_released(&mem).await.outstanding,
            0,
            "{ctx}: leaked fetches"
        );
    }
}
