//! The limits a download runs under, and what happens when one is reached.
//!
//! - Guest memory: a store limiter refuses to grow the guest's linear memory past
//!   `Options::max_memory`; the guest then fails its allocation and traps, and the download
//!   ends with a `Limit` error saying so.
//! - Wall-clock time: `Options::timeout` bounds every call into the guest. A guest waiting on
//!   the replica is simply not resumed; a guest busy computing yields to the executor at every
//!   epoch tick (epoch interruption, ticked by one thread per engine), so it is stopped too.
//! - After a trap or a timeout the instance is not called again (its state may be half way
//!   through an operation): the host removes the unfinished files itself.

use std::path::Path;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the longest a computing guest runs before it yields.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on a thread of its own, until the engine is
/// dropped.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("walrestore-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    // Without the thread a busy guest cannot be interrupted, but nothing else changes.
    drop(spawned);
}

/// Records the high-water mark of the guest's linear memories (they never shrink, so the
/// largest size any of them was grown to is the peak), and refuses growth past `limit`.
#[derive(Default)]
pub(crate) struct MemoryWatch {
    pub(crate) peak: usize,
    pub(crate) limit: Option<usize>,
    /// The size a refused growth asked for.
    pub(crate) refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.limit.is_some_and(|limit| desired > limit) {
            self.refused = Some(desired);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// Removes the unfinished files (`<prefix>-<index, 16 hex>-wal.tmp`) of indexes `min..=max` in
/// `out_dir`: what the guest would have removed had it been able to. Other files, including
/// those of other downloads into the same directory with other ranges, are left alone.
pub(crate) fn remove_unfinished(out_dir: &Path, prefix: &str, min: u64, max: u64) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.strip_suffix("-wal.tmp"))
            .filter(|hex| hex.len() == 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        if (min..=max).contains(&index) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_unfinished_files_of_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "wal-0000000000000001-wal.tmp",
            "wal-0000000000000002-wal.tmp",
            "wal-0000000000000009-wal.tmp", // another range
            "wal-0000000000000001-wal",     // finished
            "other-0000000000000001-wal.tmp",
            "wal-1-wal.tmp",
            "notes.txt",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_unfinished(dir.path(), "wal", 0, 5);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "other-0000000000000001-wal.tmp",
                "wal-0000000000000001-wal",
                "wal-0000000000000009-wal.tmp",
                "wal-1-wal.tmp",
            ]
        );
    }

    #[test]
    fn the_limiter_refuses_growth_past_the_limit() {
        use wasmtime::ResourceLimiter;
        let mut watch = MemoryWatch {
            limit: Some(1 << 20),
            ..MemoryWatch::default()
        };
        assert!(watch.memory_growing(0, 1 << 20, None).unwrap());
        assert!(
            !watch
                .memory_growing(1 << 20, (1 << 20) + 65536, None)
                .unwrap()
        );
        assert_eq!(
            (watch.peak, watch.refused),
            (1 << 20, Some((1 << 20) + 65536))
        );
    }
}
