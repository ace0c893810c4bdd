//! `SegmentStream`: a segment body as a `wasi:io/streams.input-stream`.

use crate::backend::{ReplicaError, SegmentBody};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use wasmtime_wasi_io::streams::{StreamError, StreamResult};

/// Hands out the body's `Bytes` chunks without copying (split when the guest asks for less).
/// End of body is `StreamError::Closed`; an `Err` item is `LastOperationFailed` carrying the
/// replica's message, then `Closed`. The body (and the replica's hold on the fetch) lives until
/// the guest drops the stream resource, even after its end.
pub struct SegmentStream {
    body: SegmentBody,
    /// The body ended or failed: it is not polled again.
    finished: bool,
    /// The unread rest of the current chunk.
    buffered: Bytes,
    /// An item taken from the body by `Pollable::ready`, not yet seen by `read`.
    pending: Option<Option<Result<Bytes, ReplicaError>>>,
}

impl SegmentStream {
    pub fn new(body: SegmentBody) -> SegmentStream {
        SegmentStream {
            body,
            finished: false,
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
                    if self.finished {
                        return Err(StreamError::Closed);
                    }
                    // Non-blocking: an empty read tells the guest to poll `subscribe`.
                    match self.body.next().now_or_never() {
                        Some(item) => item,
                        None => return Ok(Bytes::new()),
                    }
                }
            };
            match item {
                // Empty chunks are skipped: an empty read would mean "not ready yet".
                Some(Ok(chunk)) => self.buffered = chunk,
                Some(Err(e)) => {
                    self.finished = true;
                    return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                        "{}",
                        e.message()
                    )));
                }
                None => {
                    self.finished = true;
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
        if !self.finished {
            // `next` is cancel-safe: `poll` may drop this future.
            self.pending = Some(self.body.next().await);
        }
    }
}
