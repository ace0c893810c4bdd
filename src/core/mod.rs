//! The pure core of the downloader: planning from the listing, the ordered window of
//! outstanding fetches, and the LZ4-to-file sink. It never names a WASI type, so it compiles
//! and is unit-tested natively.

pub mod download;
pub mod error;
pub mod lz4;
pub mod plan;
pub mod sink;
pub mod wal;
pub mod window;
