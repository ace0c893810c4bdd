//! Edge cases of the contract beyond Litestream's suite: option validation, extreme index
//! ranges, empty and foreign segments, decompression bombs, and generations side by side.

mod common;

use std::sync::Arc;

use walrestore_host::{DirReplica, ErrorKind, MemReplica};

use common::sqlite_replica::FrameStyle;
use common::*;

/// The `ok` fixture in memory, under another generation too.
fn two_generations() -> MemReplica {
    let mem = MemReplica::load_dir(&wal_fixture("ok")).unwrap();
    mem.insert(
        "00000000000000ff",
        0,
        0,
        FrameStyle::LITESTREAM.compress(b"other generation"),
    );
    mem
}

/// A change that makes valid options invalid.
type ChangeOptions = dyn Fn(&mut walrestore_host::Options);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_invalid_arguments() {
    let cases: Vec<(&str, Box<ChangeOptions>)> = vec![
        ("empty prefix", Box::new(|o| o.prefix = String::new())),
        ("prefix with /", Box::new(|o| o.prefix = "a/b".into())),
        ("prefix with \\", Box::new(|o| o.prefix = "a\\b".into())),
        ("prefix .", Box::new(|o| o.prefix = ".".into())),
        ("prefix ..", Box::new(|o| o.prefix = "..".into())),
        ("short generation", Box::new(|o| o.generation = "00".into())),
        (
            "generation with a path",
            Box::new(|o| o.generation = "../../../../etc/x".into()),
        ),
        ("maximum WAL size 0", Box::new(|o| o.max_wal_size = 0)),
        (
            "upper-case generation",
            Box::new(|o| o.generation = "000000000000000A".into()),
        ),
        (
            "non-hex generation",
            Box::new(|o| o.generation = "000000000000000g".into()),
        ),
    ];
    for (name, change) in cases {
        let mem = two_generations();
        let out = tempfile::tempdir().unwrap();
        let mut o = options(GEN0, 0, 2, 4);
        change(&mut o);
        let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
        let err = d.next().await.expect_err(name);
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{name}: {err:?}");
        assert_eq!(
            mem.stats().listings,
            0,
            "{name}: listed with invalid options"
        );
        assert_eq!(d.close().await, Err(err), "{name}: close");
        assert_only_returned(out.path(), &[], name);
    }
}

/// The largest indexes: no overflow when the range ends at u64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_up_to_u64_max() {
    let mem = MemReplica::new();
    let top = u64::MAX;
    for index in [top - 1, top] {
        let body = format!("index {index}");
        mem.insert(
            GEN0,
            index,
            0,
            FrameStyle::LITESTREAM.compress(body.as_bytes()),
        );
    }
    let out = tempfile::tempdir().unwrap();
    let mut d = start(
        Arc::new(mem.clone()),
        out.path(),
        &options(GEN0, top - 1, top, 8),
    )
    .await;
    let (files, err) = drain(&mut d).await;
    assert_eq!(err, None);
    assert_eq!(files.len(), 2);
    for (file, index) in files.iter().zip([top - 1, top]) {
        let body = format!("index {index}");
        assert_file(file, out.path(), "wal", index, body.as_bytes(), "u64::MAX");
    }
    assert_eq!(d.close().await, Ok(()));
}

/// A range far beyond what the replica holds: the first missing index is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_beyond_the_replica() {
    let mem = MemReplica::load_dir(&wal_fixture("ok")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut d = start(
        Arc::new(mem.clone()),
        out.path(),
        &options(GEN0, 0, u64::MAX, 1024),
    )
    .await;
    let err = d.next().await.expect_err("index 3 is missing");
    assert_eq!(err.kind, ErrorKind::WalNotFound, "{err:?}");
    assert_eq!(err.index, Some(3), "{err:?}");
    assert_eq!(d.close().await, Err(err));
    assert_only_returned(out.path(), &[], "beyond");
}

/// Another generation in the same replica is neither listed nor fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_generation_is_ignored() {
    let mem = two_generations();
    let fixture = wal_fixture("ok");
    let out = tempfile::tempdir().unwrap();
    let mut d = start(Arc::new(mem.clone()), out.path(), &options(GEN0, 0, 2, 8)).await;
    let (files, err) = drain(&mut d).await;
    assert_eq!(err, None);
    for (file, index) in files.iter().zip(0..) {
        let want = std::fs::read(fixture.join(format!("{index:016x}.wal"))).unwrap();
        assert_file(file, out.path(), "wal", index, &want, "generation 0");
    }
    assert_eq!(files.len(), 3);
    assert_eq!(mem.stats().fetches, 6);

    let out = tempfile::tempdir().unwrap();
    let o = options("00000000000000ff", 0, 0, 8);
    let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
    let (files, err) = drain(&mut d).await;
    assert_eq!(err, None);
    assert_eq!(files.len(), 1);
    assert_file(
        &files[0],
        out.path(),
        "wal",
        0,
        b"other generation",
        "generation ff",
    );
}

/// A listed segment whose object is empty is not a valid LZ4 frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_segment_is_corrupt() {
    let mem = MemReplica::load_dir(&wal_fixture("ok")).unwrap();
    mem.insert(GEN0, 1, 0, Vec::new());
    let out = tempfile::tempdir().unwrap();
    let mut d = start(Arc::new(mem.clone()), out.path(), &options(GEN0, 0, 2, 8)).await;
    let (files, err) = drain(&mut d).await;
    let err = err.expect("index 1 is corrupt");
    assert_eq!(files.len(), 1);
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err:?}");
    assert_eq!((err.index, err.offset), (Some(1), Some(0)), "{err:?}");
    assert_eq!(d.close().await, Err(err));
    assert_only_returned(out.path(), &files, "empty segment");
    assert_eq!(wait_released(&mem).await.outstanding, 0);
}

/// Files that do not parse as hex in the replica directory are skipped, as Litestream's
/// file client skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_replica_skips_foreign_names() {
    let root = tempfile::tempdir().unwrap();
    let indexes = [(0u64, b"zero".as_slice()), (1, b"one")];
    for (index, body) in indexes {
        let path = common::sqlite_replica::segment_path(root.path(), GEN0, index, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, FrameStyle::LITESTREAM.compress(body)).unwrap();
        std::fs::write(path.with_file_name("notes.txt"), b"not a segment").unwrap();
    }
    let wal = root.path().join("generations").join(GEN0).join("wal");
    std::fs::create_dir_all(wal.join("not-an-index")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let replica = Arc::new(DirReplica::new(root.path()));
    let mut d = start(replica, out.path(), &options(GEN0, 0, 1, 2)).await;
    let (files, err) = drain(&mut d).await;
    assert_eq!(err, None);
    assert_eq!(files.len(), 2);
    for (file, (index, body)) in files.iter().zip(indexes) {
        assert_file(file, out.path(), "wal", index, body, "foreign names");
    }
}

/// A segment that decompresses far past the next listed offset, or a file past the maximum
/// size, is stopped at the first block over the limit: a `corrupt` error naming the segment,
/// before the bytes reach the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_stop_at_the_limit() {
    // 64 MiB of zeros compress to about 256 KiB: listed as a segment of 100 bytes.
    let bomb = FrameStyle::LITESTREAM.compress(&vec![0u8; 64 << 20]);
    let mem = MemReplica::new();
    mem.insert(GEN0, 0, 0, FrameStyle::LITESTREAM.compress(b"first file"));
    mem.insert(GEN0, 1, 0, bomb.clone());
    mem.insert(GEN0, 1, 100, FrameStyle::LITESTREAM.compress(b"tail"));
    let out = tempfile::tempdir().unwrap();
    let mut d = start(Arc::new(mem.clone()), out.path(), &options(GEN0, 0, 1, 4)).await;
    let (files, err) = drain(&mut d).await;
    let err = err.expect("index 1 is a bomb");
    assert_eq!(files.len(), 1);
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err:?}");
    assert_eq!((err.index, err.offset), (Some(1), Some(0)), "{err:?}");
    assert_eq!(
        err.message,
        "corrupt WAL segment: decompresses past the next segment's offset 0000000000000064 \
         (generation=0000000000000000 index=0000000000000001 offset=0000000000000000)"
    );
    assert_eq!(d.close().await, Err(err));
    assert_only_returned(out.path(), &files, "bomb before the next offset");
    // The guest never held the 64 MiB: one 4 MiB block at most.
    assert!(
        d.peak_guest_memory_bytes() < 16 << 20,
        "{}",
        d.peak_guest_memory_bytes()
    );

    // The last segment of a file is held to the maximum size.
    let mem = MemReplica::new();
    mem.insert(GEN0, 0, 0, bomb);
    let out = tempfile::tempdir().unwrap();
    let mut o = options(GEN0, 0, 0, 4);
    o.max_wal_size = 1 << 20;
    let mut d = start(Arc::new(mem.clone()), out.path(), &o).await;
    let (files, err) = drain(&mut d).await;
    let err = err.expect("index 0 is too large");
    assert!(files.is_empty());
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err:?}");
    assert!(
        err.message.starts_with(
            "corrupt WAL segment: WAL file grows past the maximum size of 1048576 bytes"
        ),
        "{err:?}"
    );
    assert_eq!(d.close().await, Err(err));
    assert_only_returned(out.path(), &[], "bomb past the maximum size");
}
