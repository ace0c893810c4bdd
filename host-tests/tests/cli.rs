//! The `wal-download` command line: the committed sample and Litestream's `ok` fixture
//! restore; bad inputs exit 1 with one line on stderr.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn wal_download(replica: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wal-download"))
        .env("WALRESTORE_CACHE_DIR", cli_cache_dir())
        .arg(replica)
        .arg("-o")
        .arg(out)
        .args(args)
        .output()
        .expect("run wal-download")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs on a replica and checks every file against the decompressed segments.
fn restores(replica: &Path, generation: &str, args: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let output = wal_download(replica, out.path(), args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one summary line on stderr: {err:?}");
    assert!(
        !lines[0].starts_with("wal-download: "),
        "not an error: {err:?}"
    );

    let expected = expected_wals(replica, generation);
    let names: Vec<String> = expected
        .iter()
        .map(|(i, _)| final_name("wal", *i))
        .collect();
    assert_eq!(
        entries(out.path()),
        names.iter().cloned().collect(),
        "files written"
    );
    for (index, wal) in &expected {
        let path = out.path().join(final_name("wal", *index));
        assert!(
            std::fs::read(&path).unwrap() == *wal,
            "contents of index {index}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "mode of {}", path.display());
        }
    }
}

#[test]
fn restores_the_sample_replica() {
    let gens = entries(&sample_replica().join("generations"));
    let generation = gens.into_iter().next().expect("the sample's generation");
    restores(&sample_replica(), &generation, &[]);
    restores(&sample_replica(), &generation, &["--shards", "3"]);
}

#[test]
fn restores_the_ok_fixture() {
    restores(&wal_fixture("ok"), GEN0, &[]);
    // The fixture's expected files agree with the decompressed segments.
    for (index, wal) in expected_wals(&wal_fixture("ok"), GEN0) {
        let want = std::fs::read(wal_fixture("ok").join(format!("{index:016x}.wal"))).unwrap();
        assert!(want == wal, "index {index}");
    }
}

/// Expects exit 1, exactly one stderr line `wal-download: …` containing `text`, and no files.
fn fails(replica: &Path, args: &[&str], text: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let output = wal_download(replica, out.path(), args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("wal-download: "), "stderr: {err:?}");
    assert!(err.contains(text), "stderr {err:?} must contain {text:?}");
    let left: Vec<String> = entries(out.path()).into_iter().collect();
    assert!(left.is_empty(), "files left after a failure: {left:?}");
    err
}

#[test]
fn missing_replica_dir() {
    let root = tempfile::tempdir().unwrap();
    fails(&root.path().join("no-such-replica"), &[], "no-such-replica");
}

#[test]
fn several_generations_are_listed() {
    let root = tempfile::tempdir().unwrap();
    for generation in ["00000000000000aa", "00000000000000bb"] {
        let dir = root
            .path()
            .join("generations")
            .join(generation)
            .join("wal")
            .join("0000000000000000");
        std::fs::create_dir_all(&dir).unwrap();
        let src = wal_fixture("one")
            .join("generations")
            .join(GEN0)
            .join("wal");
        let src = src
            .join("0000000000000000")
            .join("0000000000000000.wal.lz4");
        std::fs::copy(src, dir.join("0000000000000000.wal.lz4")).unwrap();
    }
    let err = fails(root.path(), &[], "00000000000000aa");
    assert!(err.contains("00000000000000bb"), "stderr: {err:?}");
}

#[test]
fn negative_min_index() {
    fails(
        &wal_fixture("ok"),
        &["--min-index=-1"],
        "minimum index required",
    );
}

#[test]
fn negative_max_index() {
    fails(
        &wal_fixture("ok"),
        &["--max-index=-1"],
        "maximum index required",
    );
}

#[test]
fn gap_is_one_line() {
    let out = tempfile::tempdir().unwrap();
    let output = wal_download(&wal_fixture("missing-middle-index"), out.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "wal-download: wal not found: generation=0000000000000000 index=0000000000000001\n"
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn max_wal_size_is_enforced_and_validated() {
    // The ok fixture's index 0 is 16512 bytes.
    fails(
        &wal_fixture("ok"),
        &["--max-wal-size", "16K"],
        "WAL file grows past the maximum size of 16384 bytes",
    );
    fails(
        &wal_fixture("ok"),
        &["--max-wal-size", "0"],
        "invalid size \"0\"",
    );
    let out = tempfile::tempdir().unwrap();
    let output = wal_download(&wal_fixture("ok"), out.path(), &["--max-wal-size", "17K"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn wal_check_can_be_turned_off_for_data_that_is_not_a_wal() {
    // A replica whose one "WAL file" is text, as in Litestream's own tests.
    let root = tempfile::tempdir().unwrap();
    let path = common::sqlite_replica::segment_path(root.path(), GEN0, 0, 0);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        common::sqlite_replica::FrameStyle::LITESTREAM.compress(b"not a wal"),
    )
    .unwrap();
    fails(
        root.path(),
        &[],
        "corrupt WAL file: wal header: truncated (9 of 32 bytes)",
    );
    let out = tempfile::tempdir().unwrap();
    let output = wal_download(root.path(), out.path(), &["--no-verify-wal"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let restored = std::fs::read(out.path().join(final_name("wal", 0))).unwrap();
    assert_eq!(restored, b"not a wal");
}
