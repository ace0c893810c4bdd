//! Host bindings for the `walrestore:downloader/wal-downloader` world.
//!
//! `wasi:io` comes from wasmtime-wasi, so the pollables and input streams our replica client
//! hands out are the same resources the guest polls and reads with `wasi:io`; the two client
//! resources are our own host types (`crate::client::types`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "walrestore:downloader/wal-downloader",
    // Every replica-client call returns at once (the work runs on tokio tasks owned by the
    // resources), so the imports are synchronous; they may trap on a bad resource handle.
    imports: { default: trappable },
    // The guest's `next` blocks on `wasi:io/poll`, which is async on the host.
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "walrestore:downloader/replica-client.wal-segment-listing": crate::client::SegmentListing,
        "walrestore:downloader/replica-client.future-wal-segment": crate::client::FutureSegment,
    },
});

pub use exports::walrestore::downloader::downloader;
pub use walrestore::downloader::replica_client;
