//! `wal-download`: downloads the WAL files of one generation of a Litestream replica with the
//! walrestore component, like Litestream's restore does before it replays them.

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use walrestore_host::{
    DirReplica, LogLine, LoggingReplica, Options, Replica, Runtime, RuntimeConfig,
    default_cache_dir, parse_hex16,
};

/// Download WAL files from a Litestream (v0.4) replica.
///
/// Reads the WAL segments of one generation of REPLICA, from --min-index to --max-index, many
/// segment fetches at once, and writes each WAL file, decompressed and verified, to OUT_DIR as
/// `<PREFIX>-<index, 16 hex>-wal` (mode 0600), in index order.
///
/// On failure, prints one line `wal-download: <error>` on stderr, removes unfinished output
/// (files already complete stay) and exits with status 1.
#[derive(Parser, Debug)]
#[command(name = "wal-download", version)]
struct Cli {
    /// The replica: a directory, or a `file://` URL, in Litestream's layout
    /// (`generations/<gen>/wal/<index>/<offset>.wal.lz4`).
    replica: String,

    /// Directory to write the WAL files to; created if missing.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    out_dir: PathBuf,

    /// Generation to download (16 hex digits). Default: the replica's only generation.
    #[arg(long, value_name = "GEN")]
    generation: Option<String>,

    /// First WAL index to download, in hex as replica paths write it (`0x` optional).
    /// Default: the lowest index in the generation.
    #[arg(long, value_name = "HEX", allow_hyphen_values = true)]
    min_index: Option<String>,

    /// Last WAL index to download, in hex (`0x` optional). Default: the highest index in the
    /// generation.
    #[arg(long, value_name = "HEX", allow_hyphen_values = true)]
    max_index: Option<String>,

    /// Output file name prefix.
    #[arg(long, value_name = "NAME", default_value = "wal")]
    prefix: String,

    /// Most segment fetches outstanding at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    parallelism: u32,

    /// Split the index range over up to N component instances that decode at once, sharing
    /// the parallelism: worth it on a multi-core machine when decoding, not fetching, is the
    /// bottleneck (large WAL files on a fast store). Files still arrive in index order.
    #[arg(long, value_name = "N", default_value_t = 1)]
    shards: u32,

    /// Do not check WAL files (header, frame salts and checksum chain, final commit frame)
    /// before writing them under their final names. Only for replicas whose "WAL files" are
    /// not SQLite WALs.
    #[arg(long)]
    no_verify_wal: bool,

    /// Largest WAL file accepted, in bytes, with an optional K, M, G or T suffix (powers of
    /// 1024): a segment that would grow a file past it is a corrupt-segment error, reported
    /// before it fills the disk.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    max_wal_size: u64,

    /// Give up after this many seconds (fractions allowed): the download stops, unfinished
    /// files are removed, and the error says so. Default: no limit.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<std::time::Duration>,

    /// Most memory the component may use, with an optional K, M, G or T suffix. Default: no
    /// limit beyond WebAssembly's 4 GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,

    /// Attempts at a fetch or listing that fails transiently (the store unavailable, or a
    /// stream that breaks, which resumes from the byte where it stopped), with exponential
    /// backoff between them. 1 turns retries off.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,

    /// Print a debug line on stderr for every failed fetch or listing and every retry (and no
    /// progress line).
    #[arg(short, long)]
    verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => return fail(&clap_message(&e)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// Prints the one error line and gives exit status 1.
fn fail(message: &str) -> ExitCode {
    // One line whatever the message holds, so scripts can rely on it.
    let line = message.replace(['\r', '\n'], " ");
    eprintln!("wal-download: {}", line.trim());
    ExitCode::FAILURE
}

/// clap's error without its usage block: the first line, without the `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

async fn run(cli: Cli) -> Result<(), String> {
    let started = Instant::now();
    let root = replica_path(&cli.replica)?;
    if !root.is_dir() {
        return Err(format!(
            "replica {} is not a directory (or does not exist)",
            cli.replica
        ));
    }
    let replica: Arc<dyn Replica> = Arc::new(DirReplica::new(&root));

    // Parse the indexes before any I/O, so a bad argument changes nothing.
    let min_index = cli
        .min_index
        .as_deref()
        .map(|s| parse_index(s).ok_or_else(|| format!("minimum index required: {s:?}")))
        .transpose()?;
    let max_index = cli
        .max_index
        .as_deref()
        .map(|s| parse_index(s).ok_or_else(|| format!("maximum index required: {s:?}")))
        .transpose()?;

    let generation = match cli.generation {
        Some(generation) => generation,
        None => only_generation(replica.as_ref(), &cli.replica).await?,
    };
    let (min_index, max_index) = match (min_index, max_index) {
        (Some(min), Some(max)) => (min, max),
        // Not a name a replica could hold: the component reports it, as for any bad option.
        (min, max) if !is_generation_name(&generation) => (min.unwrap_or(0), max.unwrap_or(0)),
        (min, max) => {
            let (lowest, highest) = index_range(replica.as_ref(), &generation)
                .await?
                .ok_or_else(|| {
                    format!(
                        "no WAL segments found in generation {generation} of replica {}",
                        cli.replica
                    )
                })?;
            (min.unwrap_or(lowest), max.unwrap_or(highest))
        }
    };

    // The output directory must exist before it is preopened.
    std::fs::create_dir_all(&cli.out_dir)
        .map_err(|e| format!("create output directory {}: {e}", cli.out_dir.display()))?;
    restrict_umask();

    // The component is compiled once and cached (see the README); a cache that cannot be
    // used (read-only, full disk) only costs the compilation.
    let runtime = Runtime::cached(&RuntimeConfig::default(), &default_cache_dir())
        .or_else(|_| Runtime::new())
        .map_err(|e| format!("{e:#}"))?;
    let mut options = Options::new(generation.clone(), min_index, max_index);
    options.prefix = cli.prefix;
    options.parallelism = cli.parallelism;
    options.verify_wal = !cli.no_verify_wal;
    options.max_wal_size = cli.max_wal_size;
    options.timeout = cli.timeout;
    options.max_memory = cli.max_memory;
    options.max_attempts = cli.max_attempts;
    let replica: Arc<dyn Replica> = if cli.verbose {
        let log: LogLine = Arc::new(|line| eprintln!("wal-download: debug: {line}"));
        Arc::new(LoggingReplica::new(replica, log))
    } else {
        replica
    };
    let mut download = runtime
        .start_sharded(replica, &cli.out_dir, &options, cli.shards)
        .await
        .map_err(|e| format!("{e:#}"))?;

    let progress = !cli.quiet && !cli.verbose && std::io::stderr().is_terminal();
    let total = max_index
        .checked_sub(min_index)
        .map(|n| n.saturating_add(1));
    let (mut files, mut bytes) = (0u64, 0u64);
    loop {
        match download.next().await {
            Ok(Some(file)) => {
                files += 1;
                bytes += file.size;
                if progress {
                    let total = total.map_or("?".to_owned(), |t| t.to_string());
                    eprint!("\rdownloaded {files}/{total} WAL files ({bytes} bytes)");
                    let _ = std::io::stderr().flush();
                }
            }
            Ok(None) => break,
            Err(e) => {
                clear_progress(progress && files > 0);
                // Close removes unfinished output; its error is the same first error.
                let _ = download.close().await;
                return Err(e.message);
            }
        }
    }
    clear_progress(progress && files > 0);
    let stats = download.stats().await.unwrap_or_default();
    download.close().await.map_err(|e| e.message)?;
    if !cli.quiet {
        let retries = match stats.retries {
            0 => String::new(),
            1 => ", after 1 retry".to_owned(),
            n => format!(", after {n} retries"),
        };
        eprintln!(
            "downloaded {files} WAL files ({bytes} bytes) from generation {generation} in {:.3} s{retries}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Erases the progress line, so that only the summary or the error line stays on screen.
fn clear_progress(shown: bool) {
    if shown {
        eprint!("\r\x1b[K");
    }
}

/// The directory of a replica given as a path or a `file://` URL.
fn replica_path(replica: &str) -> Result<PathBuf, String> {
    let Some((scheme, rest)) = replica.split_once("://") else {
        return Ok(PathBuf::from(replica));
    };
    if !scheme.eq_ignore_ascii_case("file") {
        return Err(format!(
            "unsupported replica URL scheme {scheme:?} in {replica}: use a directory or a file:// URL"
        ));
    }
    // file:///abs/path or file://localhost/abs/path; other hosts are not local files.
    let path = match rest.strip_prefix("localhost") {
        Some(p) if p.starts_with('/') => p,
        _ if rest.starts_with('/') => rest,
        _ => return Err(format!("unsupported file URL host in {replica}")),
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    percent_decode(path)
        .map(PathBuf::from)
        .ok_or_else(|| format!("invalid percent-encoding in replica URL {replica}"))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a positive number of seconds, e.g. `30` or `2.5`.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("invalid number of seconds {s:?}: want a positive number"))
}

/// Parses a size in bytes: digits with an optional K, M, G or T (or KiB, MiB, GiB, TiB)
/// suffix, in powers of 1024.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: want digits with an optional K, M, G or T"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?}: want digits with an optional K, M, G or T"))?;
    n.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid size {s:?}: must be between 1 byte and 2^64 - 1"))
}

/// Parses a WAL index the way replica paths and Litestream's CLI write it: hex, with an
/// optional `0x`. A sign (`-1`, `+1`) or anything else is rejected.
fn parse_index(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn is_generation_name(s: &str) -> bool {
    parse_hex16(s).is_some()
}

/// The replica's only generation; none or several is an error naming what was found.
async fn only_generation(replica: &dyn Replica, url: &str) -> Result<String, String> {
    let generations = replica
        .generations()
        .await
        .map_err(|e| format!("list generations of replica {url}: {e}"))?;
    match generations.as_slice() {
        [] => Err(format!("no generations found in replica {url}")),
        [only] => Ok(only.clone()),
        several => Err(format!(
            "several generations in replica {url}, choose one with --generation: {}",
            several.join(", ")
        )),
    }
}

/// The lowest and highest WAL index listed in a generation, if it has any segment.
async fn index_range(
    replica: &dyn Replica,
    generation: &str,
) -> Result<Option<(u64, u64)>, String> {
    use futures::StreamExt;
    let mut pages = replica.list_wal_segments(generation, 0);
    let mut range: Option<(u64, u64)> = None;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("wal segments: generation={generation}: {e}"))?;
        for segment in page {
            range = Some(match range {
                None => (segment.index, segment.index),
                Some((lo, hi)) => (lo.min(segment.index), hi.max(segment.index)),
            });
        }
    }
    Ok(range)
}

/// Makes files the component creates private to the user (0600), as Litestream's are.
fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) only swaps the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_parse_as_hex_like_replica_paths() {
        assert_eq!(parse_index("0000000000000010"), Some(16));
        assert_eq!(parse_index("10"), Some(16));
        assert_eq!(parse_index("0x1f"), Some(31));
        assert_eq!(parse_index("FF"), Some(255));
        for bad in ["", "-1", "+1", "0x", "g", "1 ", "10000000000000000"] {
            assert_eq!(parse_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100b"), Ok(100));
        for bad in [
            "",
            "0",
            "G",
            "-1",
            "1.5G",
            "4X",
            "99999999999T",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_seconds("30"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(
            parse_seconds("0.25"),
            Ok(std::time::Duration::from_millis(250))
        );
        for bad in ["", "0", "-1", "abc", "inf", "NaN", "1e30"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replica_urls() {
        assert_eq!(replica_path("some/dir").unwrap(), PathBuf::from("some/dir"));
        assert_eq!(
            replica_path("file:///tmp/a%20b").unwrap(),
            PathBuf::from("/tmp/a b")
        );
        assert_eq!(
            replica_path("file://localhost/r").unwrap(),
            PathBuf::from("/r")
        );
        let err = replica_path("s3://bucket/db").unwrap_err();
        assert!(err.contains("unsupported replica URL scheme"), "{err}");
        assert!(replica_path("file://otherhost/r").is_err());
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
