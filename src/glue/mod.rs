//! WIT glue and the wasi:io poll loop (wasm32 only): typed wrappers over the replica client,
//! the output directory, and the exported `downloader` resource driving the core.

mod bindings;
mod client;
mod downloader;
mod output;
mod reactor;

use downloader::Component;

bindings::export!(Component with_types_in bindings);
