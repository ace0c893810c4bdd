//! WIT glue and the wasi:io poll loop (wasm32 only).
