//! Replica backends: where WAL segments come from. The host side of the WIT
//! (`crate::client`) talks to one `Replica` and never to a store directly, so adding a
//! backend (S3, ...) touches only this module.

mod dir;
mod logging;
mod mem;

pub use dir::DirReplica;
pub use logging::{LogLine, LoggingReplica};
pub use mem::{Fault, FetchStats, MemReplica, TransientFaults};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::fmt;

/// One WAL segment as listed by a replica: the LZ4-compressed bytes stored at
/// `generations/<gen>/wal/<index 16 hex>/<offset 16 hex>.wal.lz4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalSegmentInfo {
    /// WAL index (the WAL file this segment belongs to).
    pub index: u64,
    /// Byte offset of the segment's decompressed content within its WAL file.
    pub offset: u64,
    /// Size of the compressed segment in bytes.
    pub size: u64,
}

/// Why a replica operation failed; mirrors the WIT `replica-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaError {
    /// The generation, index or segment does not exist.
    NotFound(String),
    /// Transient: retrying may succeed.
    Unavailable(String),
    /// Anything else.
    Other(String),
}

impl ReplicaError {
    /// The human-readable message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            ReplicaError::NotFound(m) | ReplicaError::Unavailable(m) | ReplicaError::Other(m) => m,
        }
    }
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ReplicaError {}

/// A segment's compressed bytes, in order; an `Err` item is a failure part way through, after
/// which the stream yields nothing more.
pub type SegmentBody = BoxStream<'static, Result<Bytes, ReplicaError>>;

/// Read access to one replica. Every method returns work that has not started yet or runs on
/// its own; dropping the returned future or stream cancels it.
pub trait Replica: Send + Sync + 'static {
    /// Generations present, sorted.
    fn generations(&self) -> BoxFuture<'static, Result<Vec<String>, ReplicaError>>;

    /// Pages of segments of `generation` with index >= `min_index`, in (index, offset) order.
    /// A generation without WAL is an empty listing (not an error).
    fn list_wal_segments(
        &self,
        generation: &str,
        min_index: u64,
    ) -> BoxStream<'static, Result<Vec<WalSegmentInfo>, ReplicaError>>;

    /// The compressed bytes of one segment, from byte `start` (0: all of it; more: to resume
    /// a broken stream). A `start` at or past the end gives an empty body.
    fn fetch_wal_segment(
        &self,
        generation: &str,
        index: u64,
        offset: u64,
        start: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, ReplicaError>>;
}

/// Parses exactly 16 lowercase hex digits, the only form Litestream writes for generations,
/// indexes and offsets. Anything else (including uppercase) is `None`, so a parsed name always
/// formats back to the same path component.
pub fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Formats a generation-relative number the way replica paths spell it: 16 lowercase hex.
pub fn format_hex16(n: u64) -> String {
    format!("{n:016x}")
}

/// Whether `s` is a valid generation name (16 lowercase hex digits).
pub fn is_generation_name(s: &str) -> bool {
    parse_hex16(s).is_some()
}

/// The path of a segment relative to the replica root, as used in error messages.
pub fn segment_path(generation: &str, index: u64, offset: u64) -> String {
    format!(
        "generations/{generation}/wal/{}/{}.wal.lz4",
        format_hex16(index),
        format_hex16(offset)
    )
}

/// The error for a generation name a caller sent that is not 16 lowercase hex digits: it is
/// never joined to a path.
pub(crate) fn invalid_generation(generation: &str) -> ReplicaError {
    ReplicaError::Other(format!(
        "invalid generation {generation:?}: expected 16 lowercase hex digits"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex16_round_trips_and_rejects_other_forms() {
        assert_eq!(parse_hex16("0000000000002050"), Some(0x2050));
        assert_eq!(parse_hex16("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(format_hex16(0x3068), "0000000000003068");
        for bad in [
            "",
            "2050",
            "00000000000020500",
            "000000000000205G",
            "000000000000205A",
            "../0000000000000",
            "+000000000002050",
        ] {
            assert_eq!(parse_hex16(bad), None, "{bad:?}");
        }
    }
}
