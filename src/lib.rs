//! walrestore: Litestream's `WALDownloader` (v0.4) as a WebAssembly component.
//!
//! [`core`] is the pure logic, tested natively; `glue` (wasm32 only) binds it to the WIT world
//! `wal-downloader` and drives it with a single-threaded `wasi:io/poll` loop.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod glue;
