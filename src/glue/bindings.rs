//! The WIT bindings of the `wal-downloader` world; wasi:io types are the `wasi` crate's, so
//! pollables and streams from the replica client work with `wasi::io::poll::poll`.

wit_bindgen::generate!({
    world: "wal-downloader",
    path: "wit",
    with: {
        "wasi:io/poll@0.2.12": wasi::io::poll,
        "wasi:io/streams@0.2.12": wasi::io::streams,
        "wasi:io/error@0.2.12": wasi::io::error,
    },
});
