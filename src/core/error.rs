//! The download error: a kind that callers branch on, and one line of text that names the
//! generation, and the index and offset where they apply (Litestream's formats).

use std::fmt;

/// What kind of failure an [`Error`] is; mirrors the WIT `error-kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The options are invalid (range, parallelism, generation, prefix).
    InvalidArgument,
    /// A WAL index in the range has no segments in the replica.
    WalNotFound,
    /// An index's segments do not cover its WAL file contiguously from offset 0.
    MissingOffset,
    /// The replica reported `not-found` for a listed segment.
    ReplicaNotFound,
    /// The replica reported `unavailable` (transient).
    ReplicaUnavailable,
    /// Any other replica failure, including a stream that broke part way through.
    ReplicaOther,
    /// A segment is not a valid LZ4 frame.
    Corrupt,
    /// Writing the output failed.
    Output,
    /// The downloader was closed before the operation.
    Closed,
}

/// A replica failure as the replica client reports it; mirrors the WIT `replica-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaFailure {
    /// The generation, index or segment does not exist.
    NotFound(String),
    /// The store is unavailable for now.
    Unavailable(String),
    /// Any other failure.
    Other(String),
}

impl ReplicaFailure {
    /// Whether trying again may succeed: only `Unavailable`.
    pub fn is_transient(&self) -> bool {
        matches!(self, ReplicaFailure::Unavailable(_))
    }

    fn kind(&self) -> ErrorKind {
        match self {
            ReplicaFailure::NotFound(_) => ErrorKind::ReplicaNotFound,
            ReplicaFailure::Unavailable(_) => ErrorKind::ReplicaUnavailable,
            ReplicaFailure::Other(_) => ErrorKind::ReplicaOther,
        }
    }

    fn message(&self) -> &str {
        match self {
            ReplicaFailure::NotFound(m)
            | ReplicaFailure::Unavailable(m)
            | ReplicaFailure::Other(m) => m,
        }
    }
}

/// A download failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The human-readable error, one line.
    pub message: String,
    /// The WAL index the error is about, if any.
    pub index: Option<u64>,
    /// The segment offset the error is about, if any.
    pub offset: Option<u64>,
}

impl Error {
    fn new(kind: ErrorKind, message: String, index: Option<u64>, offset: Option<u64>) -> Error {
        Error {
            kind,
            // The message is one line whatever the replica or the host put into it.
            message: message.replace(['\n', '\r'], " "),
            index,
            offset,
        }
    }

    /// `min-index` is larger than `max-index`.
    pub fn range_inverted() -> Error {
        let message = "minimum index cannot be larger than maximum index".to_string();
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// `parallelism` is zero.
    pub fn parallelism_zero() -> Error {
        let message = "parallelism must be at least one".to_string();
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// The maximum number of attempts is zero.
    pub fn max_attempts_zero() -> Error {
        let message = "maximum attempts must be at least one".to_string();
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// The maximum WAL size is zero.
    pub fn max_wal_size_zero() -> Error {
        let message = "maximum WAL size must be at least one byte".to_string();
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// The generation is not 16 lowercase hex digits.
    pub fn invalid_generation(generation: &str) -> Error {
        let message = format!("invalid generation {generation:?}: want 16 lowercase hex digits");
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// The prefix is not a plain, non-empty file name.
    pub fn invalid_prefix(prefix: &str) -> Error {
        let message = format!(
            "invalid prefix {prefix:?}: want a non-empty file name without '/', '\\' or NUL, \
             not '.' or '..'"
        );
        Error::new(ErrorKind::InvalidArgument, message, None, None)
    }

    /// No segment of `index` was listed (Litestream's `WALNotFoundError`).
    pub fn wal_not_found(generation: &str, index: u64) -> Error {
        let message = format!("wal not found: generation={generation} index={index:016x}");
        Error::new(ErrorKind::WalNotFound, message, Some(index), None)
    }

    /// The next segment of `index` does not start where the `written` bytes so far end.
    pub fn missing_offset(generation: &str, index: u64, written: u64) -> Error {
        let message = format!(
            "missing WAL offset: generation={generation} index={index:016x} offset={written:016x}"
        );
        Error::new(
            ErrorKind::MissingOffset,
            message,
            Some(index),
            Some(written),
        )
    }

    /// Listing the generation's segments failed.
    pub fn listing(generation: &str, failure: &ReplicaFailure) -> Error {
        let message = format!(
            "wal segments: {} (generation={generation})",
            failure.message()
        );
        Error::new(failure.kind(), message, None, None)
    }

    /// The listing went backwards or repeated the position `(index, offset)`.
    pub fn listing_out_of_order(generation: &str, index: u64, offset: u64) -> Error {
        let message = format!(
            "wal segments: listing out of order at index={index:016x} offset={offset:016x} \
             (generation={generation})"
        );
        Error::new(ErrorKind::ReplicaOther, message, Some(index), Some(offset))
    }

    /// Fetching the segment at `(index, offset)` failed.
    pub fn read_segment(
        generation: &str,
        index: u64,
        offset: u64,
        failure: &ReplicaFailure,
    ) -> Error {
        let message = format!(
            "read WAL segment: {} (generation={generation} index={index:016x} offset={offset:016x})",
            failure.message()
        );
        Error::new(failure.kind(), message, Some(index), Some(offset))
    }

    /// The segment's stream at `(index, offset)` failed part way through.
    pub fn copy_segment(generation: &str, index: u64, offset: u64, what: &str) -> Error {
        let message = format!(
            "copy WAL segment: {what} (generation={generation} index={index:016x} offset={offset:016x})"
        );
        Error::new(ErrorKind::ReplicaOther, message, Some(index), Some(offset))
    }

    /// The segment at `(index, offset)` is not a valid LZ4 frame.
    pub fn corrupt_segment(generation: &str, index: u64, offset: u64, what: &str) -> Error {
        let message = format!(
            "corrupt WAL segment: {what} (generation={generation} index={index:016x} offset={offset:016x})"
        );
        Error::new(ErrorKind::Corrupt, message, Some(index), Some(offset))
    }

    /// The WAL file of `index` is not a valid SQLite WAL (see [`crate::core::wal`]); the
    /// offset is the byte in the file where the faulty header or frame starts.
    pub fn corrupt_wal(generation: &str, index: u64, fault: &crate::core::wal::WalFault) -> Error {
        let message =
            format!("corrupt WAL file: {fault} (generation={generation} index={index:016x})");
        Error::new(ErrorKind::Corrupt, message, Some(index), Some(fault.offset))
    }

    /// Writing the WAL file `name` of `index` failed.
    pub fn write_wal(generation: &str, index: u64, name: &str, cause: &std::io::Error) -> Error {
        let message =
            format!("write WAL file {name}: {cause} (generation={generation} index={index:016x})");
        Error::new(ErrorKind::Output, message, Some(index), None)
    }

    /// The downloader was closed.
    pub fn closed() -> Error {
        Error::new(
            ErrorKind::Closed,
            "downloader closed".to_string(),
            None,
            None,
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN: &str = "0000000000000000";

    #[test]
    fn messages_keep_litestreams_shapes() {
        let e = Error::missing_offset(GEN, 0, 0x2050);
        assert_eq!(
            e.message,
            "missing WAL offset: generation=0000000000000000 index=0000000000000000 offset=0000000000002050"
        );
        assert_eq!(
            (e.kind, e.index, e.offset),
            (ErrorKind::MissingOffset, Some(0), Some(0x2050))
        );

        let e = Error::wal_not_found(GEN, 1);
        assert_eq!(
            e.message,
            "wal not found: generation=0000000000000000 index=0000000000000001"
        );
        assert_eq!(
            (e.kind, e.index, e.offset),
            (ErrorKind::WalNotFound, Some(1), None)
        );

        let e = Error::listing(GEN, &ReplicaFailure::Unavailable("marker".into()));
        assert!(
            e.message.starts_with("wal segments: marker"),
            "{}",
            e.message
        );
        assert_eq!(e.kind, ErrorKind::ReplicaUnavailable);

        let e = Error::read_segment(GEN, 2, 0x10, &ReplicaFailure::NotFound("marker".into()));
        assert_eq!(
            e.message,
            "read WAL segment: marker (generation=0000000000000000 index=0000000000000002 offset=0000000000000010)"
        );
        assert_eq!(
            (e.kind, e.index, e.offset),
            (ErrorKind::ReplicaNotFound, Some(2), Some(0x10))
        );

        let e = Error::copy_segment(GEN, 2, 0, "marker");
        assert!(
            e.message.starts_with("copy WAL segment: marker ("),
            "{}",
            e.message
        );
        assert_eq!(e.kind, ErrorKind::ReplicaOther);

        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = Error::write_wal(GEN, 3, "wal-0000000000000003-wal", &io);
        assert_eq!(
            e.message,
            "write WAL file wal-0000000000000003-wal: permission denied \
             (generation=0000000000000000 index=0000000000000003)"
        );
        assert_eq!((e.kind, e.index), (ErrorKind::Output, Some(3)));
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::listing(GEN, &ReplicaFailure::Other("a\nb".into()));
        assert!(!e.message.contains('\n'));
    }
}
