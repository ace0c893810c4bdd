//! One measured run (`Record`), as a JSON line or as rows of the readable table.

use serde_json::{Value, json};

/// One run of a workload, by the component or the native baseline.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// "component" or "native".
    pub mode: &'static str,
    /// Downloads run at once (1 except for W5).
    pub concurrency: usize,
    /// Component instances each download is split over (1 unsharded, and for native).
    pub shards: usize,
    pub parallelism: u32,
    pub latency_ms: f64,
    pub list_latency_ms: f64,
    /// From the first `next()` call to the last file (concurrent runs: from starting the
    /// first download, instantiation included, to the last file of the last one).
    pub elapsed_ms: f64,
    pub time_to_first_file_ms: f64,
    pub files: u64,
    pub bytes_out: u64,
    pub fetches: u64,
    /// Most fetches outstanding at once as the host saw them (max over downloads).
    pub max_outstanding: u64,
    pub pages: u64,
    /// fetches × L / P + pages × L2 (of one download when concurrent).
    pub ideal_ms: f64,
    /// The component's linear-memory high-water mark (max over downloads; sharded, the sum
    /// of the shards' marks); 0 for native.
    pub peak_guest_memory_bytes: u64,
    /// P × largest compressed segment + 16 MiB (sharded: + 16 MiB per instance).
    pub memory_bound_bytes: u64,
    /// Store creation + instantiation from the template (median over downloads); 0 native.
    pub instantiate_us: f64,
    /// Concurrent runs: the slowest single download, from its start to its last file.
    pub slowest_download_ms: Option<f64>,
    /// Concurrent runs: (peak host RSS during the run − RSS before) / downloads.
    pub rss_per_download_bytes: Option<u64>,
    /// Every byte of every file checked against the replica.
    pub verified: bool,
}

impl Record {
    /// Decompressed bytes per second.
    pub fn throughput_mib_s(&self) -> f64 {
        self.bytes_out as f64 / (1 << 20) as f64 / (self.elapsed_ms / 1000.0)
    }

    /// `max_outstanding ≤ P` and `peak_guest_memory_bytes ≤ P × largest + 16 MiB`.
    pub fn bounds_ok(&self) -> bool {
        self.max_outstanding <= u64::from(self.parallelism)
            && self.peak_guest_memory_bytes <= self.memory_bound_bytes
    }

    pub fn to_json(&self) -> Value {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let mut v = json!({
            "mode": self.mode,
            "concurrency": self.concurrency,
            "shards": self.shards,
            "parallelism": self.parallelism,
            "latency_ms": self.latency_ms,
            "list_latency_ms": self.list_latency_ms,
            "elapsed_ms": round(self.elapsed_ms),
            "time_to_first_file_ms": round(self.time_to_first_file_ms),
            "files": self.files,
            "bytes_out": self.bytes_out,
            "throughput_mib_s": round(self.throughput_mib_s()),
            "fetches": self.fetches,
            "max_outstanding": self.max_outstanding,
            "pages": self.pages,
            "ideal_ms": round(self.ideal_ms),
            "peak_guest_memory_bytes": self.peak_guest_memory_bytes,
            "memory_bound_bytes": self.memory_bound_bytes,
            "instantiate_us": round(self.instantiate_us),
            "bounds_ok": self.bounds_ok(),
            "verified": self.verified,
        });
        if let Some(ms) = self.slowest_download_ms {
            v["slowest_download_ms"] = json!(round(ms));
        }
        if let Some(rss) = self.rss_per_download_bytes {
            v["rss_per_download_bytes"] = json!(rss);
        }
        v
    }
}

fn stats(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The readable table: per mode, min / median / max over the runs, and the ratios.
pub fn print_table(records: &[Record]) {
    let modes: Vec<&'static str> = {
        let mut m: Vec<_> = records.iter().map(|r| r.mode).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    println!(
        "{:<10} {:>4} {:>26} {:>22} {:>9} {:>8} {:>10} {:>7} {:>10} {:>10}",
        "mode",
        "runs",
        "elapsed ms min/med/max",
        "first file ms min/med",
        "ideal ms",
        "min/ideal",
        "MiB/s max",
        "max out",
        "peak mem",
        "inst us"
    );
    let mut best: Vec<(&str, f64)> = Vec::new();
    for mode in &modes {
        let rs: Vec<&Record> = records.iter().filter(|r| r.mode == *mode).collect();
        let (lo, med, hi) = stats(rs.iter().map(|r| r.elapsed_ms));
        let (flo, fmed, _) = stats(rs.iter().map(|r| r.time_to_first_file_ms));
        let ideal = rs[0].ideal_ms;
        let ratio = if ideal > 0.0 {
            format!("{:.3}", lo / ideal)
        } else {
            "-".into()
        };
        let mib = rs.iter().map(|r| r.throughput_mib_s()).fold(0.0, f64::max);
        let max_out = rs.iter().map(|r| r.max_outstanding).max().unwrap_or(0);
        let peak = rs
            .iter()
            .map(|r| r.peak_guest_memory_bytes)
            .max()
            .unwrap_or(0);
        let (_, inst, _) = stats(rs.iter().map(|r| r.instantiate_us));
        println!(
            "{:<10} {:>4} {:>26} {:>22} {:>9.1} {:>9} {:>10.1} {:>7} {:>10} {:>10.0}",
            mode,
            rs.len(),
            format!("{lo:.1} / {med:.1} / {hi:.1}"),
            format!("{flo:.1} / {fmed:.1}"),
            ideal,
            ratio,
            mib,
            max_out,
            if *mode == "native" {
                "-".to_owned()
            } else {
                format!("{:.1} MiB", peak as f64 / (1 << 20) as f64)
            },
            inst
        );
        best.push((mode, lo));
        if let Some(r) = rs.iter().find_map(|r| r.rss_per_download_bytes) {
            let slowest = stats(rs.iter().filter_map(|r| r.slowest_download_ms));
            println!(
                "{:<10} {} downloads at once: host RSS {:.1} MiB per download; slowest single download {:.1} ms (min over runs)",
                "",
                rs[0].concurrency,
                r as f64 / (1 << 20) as f64,
                slowest.0
            );
        }
    }
    let component = best.iter().find(|(m, _)| *m == "component");
    let native = best.iter().find(|(m, _)| *m == "native");
    if let (Some((_, c)), Some((_, n))) = (component, native) {
        println!(
            "throughput component / native (min elapsed): {:.3} (native {:.1} ms, component {:.1} ms)",
            n / c,
            n,
            c
        );
    }
}
