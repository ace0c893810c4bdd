//! `wal-bench`: measures the walrestore component against a replica served from memory with
//! a simulated remote-store latency, checks every byte it writes, and optionally runs a native
//! Rust baseline of the same work. `wal-bench generate` writes the synthetic workloads;
//! `wal-bench cold-start` measures loading the precompiled component and instantiating it.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use walrestore_host::bench::{self, Record, RunSettings, Shape, Workload};
use walrestore_host::{PoolingSettings, Runtime, RuntimeConfig, default_cache_dir, parse_hex16};

#[derive(Parser, Debug)]
#[command(name = "wal-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a synthetic replica (Litestream's layout) for one of the workloads.
    Generate {
        /// w1 (200 × 1 × 64 KiB), w2 (8 × 100 × 16 KiB), w3 (16 × 1 × 16 MiB) or tiny.
        #[arg(long, default_value = "w1")]
        shape: String,
        /// Override the shape's number of WAL indexes.
        #[arg(long)]
        indexes: Option<u64>,
        /// Override the shape's segments per index.
        #[arg(long)]
        segments: Option<u64>,
        /// Override the shape's decompressed bytes per segment.
        #[arg(long)]
        segment_bytes: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Replica directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Load the precompiled component and instantiate it (W4).
    ColdStart {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
        /// Use the pooling instance allocator.
        #[arg(long)]
        pooling: bool,
        /// Where the precompiled component is cached (default: see the README).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Baseline {
    Native,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Replica directory (Litestream's layout); read into memory before timing.
    #[arg(long)]
    replica: Option<PathBuf>,
    /// Generation (default: the only one).
    #[arg(long)]
    generation: Option<String>,
    /// First WAL index, hex (default: lowest).
    #[arg(long, value_name = "HEX")]
    min_index: Option<String>,
    /// Last WAL index, hex (default: highest).
    #[arg(long, value_name = "HEX")]
    max_index: Option<String>,
    /// Segment fetches outstanding at once.
    #[arg(long, default_value_t = 8)]
    parallelism: u32,
    /// Milliseconds before a fetch's result is ready.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Milliseconds before each listing page.
    #[arg(long, default_value_t = 0.0)]
    list_latency_ms: f64,
    /// Runs of each mode.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// One JSON object per line per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run a native Rust baseline of the same work.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Downloads at once in this process, each its own store (W5).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Use wasmtime's pooling instance allocator.
    #[arg(long)]
    pooling: bool,
    /// Run the component's output-directory calls on tokio's blocking pool, not inline.
    #[arg(long)]
    offload_output_io: bool,
    /// Do not check the WAL files (header, salts, checksum chain, final commit): measures
    /// what the check costs.
    #[arg(long)]
    no_verify_wal: bool,
    /// Split each download by index range over this many component instances running at
    /// once (the parallelism is shared between them).
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Where the precompiled component is cached (default: see the README).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    let result = match cli.command {
        Some(Command::Generate {
            shape,
            indexes,
            segments,
            segment_bytes,
            seed,
            out,
        }) => generate(&shape, indexes, segments, segment_bytes, seed, &out),
        Some(Command::ColdStart {
            runs,
            json,
            pooling,
            cache_dir,
        }) => rt.block_on(cold_start(runs, json, pooling, cache_dir)),
        None => rt.block_on(run(cli.run)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("wal-bench: FAILED: {message}");
    ExitCode::FAILURE
}

fn generate(
    shape: &str,
    indexes: Option<u64>,
    segments: Option<u64>,
    segment_bytes: Option<usize>,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let mut s = Shape::named(shape).ok_or_else(|| anyhow::anyhow!("unknown shape {shape:?}"))?;
    s.indexes = indexes.unwrap_or(s.indexes);
    s.segments = segments.unwrap_or(s.segments).max(1);
    s.segment_bytes = segment_bytes.unwrap_or(s.segment_bytes).max(1);
    if bench::generate::is_generated(s, out, seed) {
        eprintln!("{} is up to date", out.display());
        return Ok(());
    }
    let g = bench::generate(s, out, seed)?;
    eprintln!(
        "generated {} segments in {} indexes: {} bytes, {} compressed (ratio {:.2}) in {}",
        g.segments,
        s.indexes,
        g.decompressed_bytes,
        g.compressed_bytes,
        g.decompressed_bytes as f64 / g.compressed_bytes.max(1) as f64,
        out.display()
    );
    Ok(())
}

fn runtime_config(pooling: bool, concurrency: usize) -> RuntimeConfig {
    RuntimeConfig {
        pooling: pooling.then(|| PoolingSettings {
            instances: (concurrency as u32).max(16) + 8,
            ..PoolingSettings::default()
        }),
    }
}

/// One figure of a cold start.
type Metric = fn(&bench::ColdStart) -> f64;

async fn cold_start(
    runs: usize,
    json: bool,
    pooling: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = runtime_config(pooling, 1);
    let cache_dir = cache_dir.unwrap_or_else(default_cache_dir);
    let mut results = Vec::new();
    for _ in 0..runs.max(1) {
        let c = bench::cold_start(&config, &cache_dir).await?;
        if json {
            println!("{}", c.to_json());
        }
        results.push(c);
    }
    if !json {
        let min = |f: fn(&bench::ColdStart) -> f64| results.iter().map(f).fold(f64::MAX, f64::min);
        let median = |f: fn(&bench::ColdStart) -> f64| {
            let mut v: Vec<f64> = results.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{:<34} {:>10} {:>10}   ({} runs{})",
            "cold start",
            "min us",
            "median us",
            results.len(),
            if pooling { ", pooling allocator" } else { "" }
        );
        let rows: [(&str, Metric); 5] = [
            ("engine (once per process)", |c| c.engine_us),
            ("deserialize_file + link", |c| c.load_us),
            ("first instantiate", |c| c.first_instantiate_us),
            ("load + instantiate", |c| c.load_us + c.first_instantiate_us),
            ("instantiate from InstancePre", |c| c.instantiate_pre_us),
        ];
        for (name, f) in rows {
            println!("{name:<34} {:>10.0} {:>10.0}", min(f), median(f));
        }
    }
    Ok(())
}

fn parse_index(s: &str) -> anyhow::Result<u64> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let padded = format!("{digits:0>16}");
    parse_hex16(&padded).ok_or_else(|| anyhow::anyhow!("not a hex WAL index: {s:?}"))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let Some(replica) = args.replica.as_deref() else {
        anyhow::bail!("--replica DIR is required (or a subcommand: generate, cold-start)");
    };
    if args.parallelism == 0 || args.concurrency == 0 {
        anyhow::bail!("--parallelism and --concurrency must be at least 1");
    }
    let min = args.min_index.as_deref().map(parse_index).transpose()?;
    let max = args.max_index.as_deref().map(parse_index).transpose()?;
    let workload = Arc::new(Workload::load(replica, args.generation.as_deref(), min, max).await?);
    let settings = RunSettings {
        parallelism: args.parallelism,
        fetch_latency: Duration::from_secs_f64(args.latency_ms.max(0.0) / 1000.0),
        list_latency: Duration::from_secs_f64(args.list_latency_ms.max(0.0) / 1000.0),
        offload_output_io: args.offload_output_io,
        shards: args.shards.max(1),
        verify_wal: !args.no_verify_wal,
    };
    let config = runtime_config(args.pooling, args.concurrency);
    let cache_dir = args.cache_dir.unwrap_or_else(default_cache_dir);
    let runtime = Runtime::cached(&config, &cache_dir)?;
    if !args.json {
        println!(
            "replica {}: generation {}, indexes {:x}..={:x}, {} segments, {:.1} MiB decompressed, largest segment {} bytes compressed; P={} L={} ms L2={} ms{}{}{}{}{}",
            replica.display(),
            workload.generation,
            workload.min_index,
            workload.max_index,
            workload.segments.len(),
            workload.total_bytes() as f64 / (1 << 20) as f64,
            workload.largest_segment(),
            args.parallelism,
            args.latency_ms,
            args.list_latency_ms,
            if args.concurrency > 1 {
                format!(", {} downloads at once", args.concurrency)
            } else {
                String::new()
            },
            if args.pooling {
                ", pooling allocator"
            } else {
                ""
            },
            if args.offload_output_io {
                ", output calls offloaded"
            } else {
                ""
            },
            if args.shards > 1 {
                format!(", up to {} shards", args.shards)
            } else {
                String::new()
            },
            if args.no_verify_wal {
                ", WAL check off"
            } else {
                ""
            },
        );
    }
    let mut records: Vec<Record> = Vec::new();
    let mut violations = Vec::new();
    let mut emit = |r: Record, records: &mut Vec<Record>| {
        if args.json {
            println!("{}", r.to_json());
        }
        if !r.bounds_ok() {
            violations.push(format!(
                "{} run: max_outstanding {} (P {}), peak guest memory {} (bound {})",
                r.mode,
                r.max_outstanding,
                r.parallelism,
                r.peak_guest_memory_bytes,
                r.memory_bound_bytes
            ));
        }
        records.push(r);
    };
    // Component and native runs alternate, so that a change in the machine's background load
    // skews both alike.
    for _ in 0..args.runs.max(1) {
        let r = if args.concurrency > 1 {
            bench::run_concurrent(&runtime, workload.clone(), &settings, args.concurrency).await?
        } else {
            bench::run_component(&runtime, &workload, &settings).await?
        };
        emit(r, &mut records);
        if args.baseline == Some(Baseline::Native) {
            let r = if args.concurrency > 1 {
                bench::run_native_concurrent(workload.clone(), &settings, args.concurrency).await?
            } else {
                bench::run_native(&workload, &settings).await?
            };
            emit(r, &mut records);
        }
    }
    if !args.json {
        bench::print_table(&records);
    }
    if !violations.is_empty() {
        anyhow::bail!("bounds violated: {}", violations.join("; "));
    }
    Ok(())
}
