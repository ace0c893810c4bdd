//! The committed sample replica restores to valid SQLite WAL files, each equal to the
//! concatenation of its decompressed segments.

mod common;

use std::sync::Arc;

use walrestore_host::DirReplica;

use common::sqlite_replica::verify_wal;
use common::*;

/// The sample's one generation, as the directory says.
fn sample_generation() -> String {
    let gens = entries(&sample_replica().join("generations"));
    assert_eq!(gens.len(), 1, "the sample has one generation: {gens:?}");
    gens.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_replica_restores_to_valid_wals() {
    let root = sample_replica();
    let generation = sample_generation();
    let expected = expected_wals(&root, &generation);
    assert!(
        expected.len() >= 5,
        "the sample has {} indexes",
        expected.len()
    );
    let segments: Vec<usize> = expected
        .iter()
        .map(|(index, _)| {
            entries(
                &root
                    .join("generations")
                    .join(&generation)
                    .join("wal")
                    .join(format!("{index:016x}")),
            )
            .len()
        })
        .collect();
    assert!(
        segments.iter().any(|&n| n >= 10),
        "segments per index: {segments:?}"
    );

    let (min, max) = (expected[0].0, expected.last().unwrap().0);
    for p in [1, 8] {
        let ctx = format!("sample replica, parallelism {p}");
        let out = tempfile::tempdir().unwrap();
        let replica = Arc::new(DirReplica::new(&root));
        let mut d = start(replica, out.path(), &wal_options(&generation, min, max, p)).await;
        let (files, err) = drain(&mut d).await;
        assert_eq!(err, None, "{ctx}");
        assert_eq!(files.len(), expected.len(), "{ctx}");
        for (file, (index, wal)) in files.iter().zip(&expected) {
            assert_file(file, out.path(), "wal", *index, wal, &ctx);
            assert_eq!(verify_wal(wal), 4096, "{ctx}: page size of index {index}");
        }
        assert_eq!(d.close().await, Ok(()), "{ctx}");
        assert_only_returned(out.path(), &files, &ctx);
    }
}
