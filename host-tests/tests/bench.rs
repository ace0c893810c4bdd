//! `wal-bench` end to end on a tiny generated replica: it runs, checks every byte, and its
//! JSON lines carry the documented fields. No timing is asserted here (timings live in the
//! bench only).

use std::process::Command;

fn wal_bench(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wal-bench"))
        .args(args)
        .env("WALRESTORE_CACHE_DIR", cache)
        .output()
        .expect("running wal-bench")
}

#[test]
fn runs_checks_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let cache = dir.path().join("cache");
    let replica_arg = replica.to_str().unwrap();

    let generated = wal_bench(
        &["generate", "--shape", "tiny", "--out", replica_arg],
        &cache,
    );
    assert!(generated.status.success(), "{generated:?}");

    let out = wal_bench(
        &[
            "--replica",
            replica_arg,
            "--parallelism",
            "2",
            "--latency-ms",
            "1",
            "--list-latency-ms",
            "1",
            "--runs",
            "1",
            "--json",
            "--baseline",
            "native",
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wal-bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["component", "native"]);
    for row in &rows {
        for field in [
            "elapsed_ms",
            "time_to_first_file_ms",
            "ideal_ms",
            "instantiate_us",
        ] {
            assert!(row[field].is_number(), "{field} in {row}");
        }
        // The tiny shape: 4 indexes of 3 segments of at least 8 KiB, one listing page: a
        // WAL header and 6 frames of 24 + 4096 bytes per index.
        assert_eq!(row["files"], 4, "{row}");
        assert_eq!(row["bytes_out"], 4 * (32 + 6 * (24 + 4096)), "{row}");
        assert_eq!(row["fetches"], 12, "{row}");
        assert_eq!(row["pages"], 1, "{row}");
        assert!(row["max_outstanding"].as_u64().unwrap() <= 2, "{row}");
        assert_eq!(row["verified"], true, "{row}");
        assert_eq!(row["bounds_ok"], true, "{row}");
    }
    let component = &rows[0];
    let peak = component["peak_guest_memory_bytes"].as_u64().unwrap();
    assert!(peak > 0 && peak <= component["memory_bound_bytes"].as_u64().unwrap());
    // The precompiled component was cached for the next run.
    assert!(std::fs::read_dir(&cache).unwrap().count() >= 1);
}

/// The precompiled-component cache: compiled once, loaded afterwards, and a damaged file is
/// replaced rather than trusted; downloads work from it, with and without the pooling
/// allocator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_and_pooled_runtimes_download() {
    use std::time::Duration;
    use walrestore_host::bench::{RunSettings, Shape, Workload, generate, run_component};
    use walrestore_host::{PoolingSettings, Runtime, RuntimeConfig, precompiled_path};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let cache = dir.path().join("cache");
    generate(Shape::named("tiny").unwrap(), &root, 3).unwrap();
    let workload = Workload::load(&root, None, None, None).await.unwrap();
    let settings = RunSettings {
        parallelism: 3,
        fetch_latency: Duration::from_millis(1),
        list_latency: Duration::ZERO,
        // Every other test writes output inline; this one covers the blocking-pool path.
        offload_output_io: true,
        shards: 1,
        verify_wal: true,
    };

    let config = RuntimeConfig::default();
    let runtime = Runtime::cached(&config, &cache).unwrap();
    let file = precompiled_path(runtime.engine(), &cache);
    assert!(file.is_file());
    let record = run_component(&runtime, &workload, &settings).await.unwrap();
    assert!(record.verified && record.bounds_ok() && record.files == 4);

    // Loaded from the file this time; then a damaged file is compiled afresh. (A loaded
    // component maps the file: it is replaced, never written in place, by the host and here.)
    drop(runtime);
    Runtime::cached(&config, &cache).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, b"not a precompiled component").unwrap();
    let runtime = Runtime::cached(&config, &cache).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 1000);
    run_component(&runtime, &workload, &settings).await.unwrap();

    let pooled = RuntimeConfig {
        pooling: Some(PoolingSettings {
            instances: 4,
            ..PoolingSettings::default()
        }),
    };
    let runtime = Runtime::cached(&pooled, &cache).unwrap();
    for _ in 0..6 {
        // More runs than pool slots: each download's instance goes back to the pool.
        let record = run_component(&runtime, &workload, &settings).await.unwrap();
        assert!(record.verified && record.bounds_ok());
    }
}
