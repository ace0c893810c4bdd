//! `SegmentStream`: a segment body as a `wasi:io/streams.input-stream`.

use crate::backend::{ReplicaError, SegmentBody};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use wasmtime_wasi_io::streams::{StreamError, StreamResult};

/// Hands out the body's `Bytes` chunks without copying (split when the guest asks for less).
/// End of body is `StreamError::Closed`; an `Err` item is `LastOperationFailed` carrying the
/// replica's message, then `Closed`. Dropping it drops the body, which cancels the fetch.
pub struct SegmentStream {
    /// `None` once the body ended or failed.
    body: Option<SegmentBody>,
    /// The unread rest of the current chunk.
    buffered: Bytes,
    /// An item taken from the body by `Pollable::ready`, not yet seen by `read`.
    pending: Option<Option<Result<Bytes, ReplicaError>>>,
}

impl SegmentStream {
    pub fn new(body: SegmentBody) -> SegmentStream {
        SegmentStream {
            body: Some(body),
            buffered: Bytes::new(),
            pending: None,
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::streams::InputStream for SegmentStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        loop {
            if !self.buffered.is_empty() {
                let n = size.min(self.buffered.len());
                return Ok(self.buffered.split_to(n));
            }
            let item = match self.pending.take() {
                Some(item) => item,
                None => {
                    let Some(body) = &mut self.body else {
                        return Err(StreamError::Closed);
                    };
                    // Non-blocking: an empty read tells the guest to poll `subscribe`.
                    match body.next().now_or_never() {
                        Some(item) => item,
                        None => return Ok(Bytes::new()),
                    }
                }
            };
            match item {
                // Empty chunks are skipped: an empty read would mean "not ready yet".
                Some(Ok(chunk)) => self.buffered = chunk,
                Some(Err(e)) => {
                    self.body = None;
                    return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                        "{}",
                        e.message()
                    )));
                }
                None => {
                    self.body = None;
                    return Err(StreamError::Closed);
                }
            }
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for SegmentStream {
    async fn ready(&mut self) {
        if !self.buffered.is_empty() || self.pending.is_some() {
            return;
        }
        if let Some(body) = &mut self.body {
            // `next` is cancel-safe: `poll` may drop this future.
            self.pending = Some(body.next().await);
        }
    }
}
