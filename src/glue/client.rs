//! Typed wrappers over the replica client's resources. Each keeps its pollable in the first
//! field: Rust drops fields in declaration order, so the child pollable goes before its parent
//! (listing, future or stream), which the host requires. Dropping a wrapper cancels the host
//! work behind it.

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::Pollable;
use wasi::io::streams::{InputStream, StreamError};

use super::bindings::walrestore::downloader::replica_client::{
    self as rc, FutureWalSegment, ReplicaError, WalSegmentListing,
};
use crate::core::download::{FetchFailure, FetchRequest};
use crate::core::error::ReplicaFailure;
use crate::core::plan::SegmentInfo;

fn failure(e: ReplicaError) -> ReplicaFailure {
    match e {
        ReplicaError::NotFound(m) => ReplicaFailure::NotFound(m),
        ReplicaError::Unavailable(m) => ReplicaFailure::Unavailable(m),
        ReplicaError::Other(m) => ReplicaFailure::Other(m),
    }
}

/// What a listing delivered.
pub enum ListingEvent {
    /// The next page (possibly empty).
    Page(Vec<SegmentInfo>),
    /// The listing is complete.
    End,
    /// The listing failed.
    Failed(ReplicaFailure),
}

/// Milliseconds as the nanoseconds `wasi:clocks` counts in.
fn nanos(ms: u32) -> u64 {
    u64::from(ms) * 1_000_000
}

/// A listing of one generation's WAL segments: running, or waiting out a backoff first.
pub enum Listing {
    Waiting {
        timer: Pollable,
        generation: String,
        min_index: u64,
    },
    Running {
        pollable: Pollable,
        listing: WalSegmentListing,
    },
}

impl Listing {
    /// Starts listing `generation` from `min_index` after `delay_ms`.
    pub fn start(generation: &str, min_index: u64, delay_ms: u32) -> Listing {
        if delay_ms > 0 {
            return Listing::Waiting {
                timer: subscribe_duration(nanos(delay_ms)),
                generation: generation.to_owned(),
                min_index,
            };
        }
        let listing = rc::list_wal_segments(generation, min_index);
        Listing::Running {
            pollable: listing.subscribe(),
            listing,
        }
    }

    /// Ready when the next page (or the end) is available, or the backoff is over.
    pub fn pollable(&self) -> &Pollable {
        match self {
            Listing::Waiting { timer, .. } => timer,
            Listing::Running { pollable, .. } => pollable,
        }
    }

    /// Takes the next page without blocking; `None` when it is not available yet.
    pub fn next(&mut self) -> Option<ListingEvent> {
        if let Listing::Waiting {
            timer,
            generation,
            min_index,
        } = self
        {
            if !timer.ready() {
                return None;
            }
            let (generation, min_index) = (generation.clone(), *min_index);
            *self = Listing::start(&generation, min_index, 0);
        }
        let Listing::Running { listing, .. } = self else {
            return None;
        };
        Some(match listing.next_page()? {
            Ok(Some(page)) => ListingEvent::Page(
                page.into_iter()
                    .map(|s| SegmentInfo {
                        index: s.index,
                        offset: s.offset,
                        size: s.size,
                    })
                    .collect(),
            ),
            Ok(None) => ListingEvent::End,
            Err(e) => ListingEvent::Failed(failure(e)),
        })
    }
}

/// How a fetch ended.
pub enum FetchEvent {
    /// All the segment's compressed bytes (from the request's `start`).
    Done(Vec<u8>),
    /// The fetch failed.
    Failed(FetchFailure),
    /// The stream broke after delivering these bytes (from the request's `start`).
    Broken(FetchFailure, Vec<u8>),
}

enum FetchState {
    /// Waiting out the backoff before a retry.
    Waiting {
        timer: Pollable,
        generation: String,
        request: FetchRequest,
    },
    /// Waiting for the host's answer.
    Pending {
        pollable: Pollable,
        future: FutureWalSegment,
    },
    /// Reading the segment's stream.
    Reading {
        pollable: Pollable,
        stream: InputStream,
        buf: Vec<u8>,
    },
    /// Between states, or ended.
    Over,
}

/// One segment fetch, from the call that starts it until its stream ends.
pub struct Fetch {
    size: u64,
    state: FetchState,
}

const READ_SLACK: u64 = 64 << 10;
/// Most bytes asked of the host per read. Each read arrives in a fresh buffer that is then
/// copied into the segment's, so this bounds the transient second copy: a host that holds the
/// whole segment would otherwise hand it over in one piece and the guest would briefly hold it
/// twice, breaking the memory bound (tests/memory.rs).
const READ_MAX: u64 = 1 << 20;
/// The listed size is the host's word: preallocate no more than this on it.
const MAX_PREALLOC: u64 = 64 << 20;

impl Fetch {
    /// Starts fetching the segment of `request`, after its delay.
    pub fn start(generation: &str, request: &FetchRequest) -> Fetch {
        let size = request.size.saturating_sub(request.start);
        if request.delay_ms > 0 {
            let state = FetchState::Waiting {
                timer: subscribe_duration(nanos(request.delay_ms)),
                generation: generation.to_owned(),
                request: FetchRequest {
                    delay_ms: 0,
                    ..*request
                },
            };
            return Fetch { size, state };
        }
        let future =
            rc::fetch_wal_segment(generation, request.index, request.offset, request.start);
        Fetch {
            size,
            state: FetchState::Pending {
                pollable: future.subscribe(),
                future,
            },
        }
    }

    /// Ready when the fetch can make progress.
    pub fn pollable(&self) -> Option<&Pollable> {
        match &self.state {
            FetchState::Pending { pollable, .. } | FetchState::Reading { pollable, .. } => {
                Some(pollable)
            }
            FetchState::Waiting { timer, .. } => Some(timer),
            FetchState::Over => None,
        }
    }

    /// Makes what progress is possible without blocking; `Some` once the fetch has ended. The
    /// stream is dropped as soon as it ends.
    pub fn advance(&mut self) -> Option<FetchEvent> {
        if let FetchState::Waiting {
            timer,
            generation,
            request,
        } = &self.state
        {
            if !timer.ready() {
                return None;
            }
            let (generation, request) = (generation.clone(), *request);
            *self = Fetch::start(&generation, &request);
        }
        if let FetchState::Pending { future, .. } = &self.state {
            let stream = match future.get()? {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return self.end(FetchEvent::Failed(FetchFailure::Replica(failure(e))));
                }
                Err(()) => {
                    let what = "the segment's result was already taken".to_string();
                    return self.end(FetchEvent::Failed(FetchFailure::Replica(
                        ReplicaFailure::Other(what),
                    )));
                }
            };
            // The future's pollable goes before the future; the stream outlives both.
            self.state = FetchState::Over;
            let capacity = usize::try_from(self.size.min(MAX_PREALLOC)).unwrap_or(0);
            self.state = FetchState::Reading {
                pollable: stream.subscribe(),
                stream,
                buf: Vec::with_capacity(capacity),
            };
        }
        let FetchState::Reading { stream, buf, .. } = &mut self.state else {
            return None;
        };
        loop {
            let remaining = self.size.saturating_sub(buf.len() as u64);
            let len = (remaining + READ_SLACK).min(READ_MAX);
            match stream.read(len) {
                // An empty read is not the end: wait on the pollable.
                Ok(chunk) if chunk.is_empty() => return None,
                Ok(chunk) if buf.is_empty() && chunk.len() >= buf.capacity() => *buf = chunk,
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(StreamError::Closed) => {
                    let bytes = std::mem::take(buf);
                    return self.end(FetchEvent::Done(bytes));
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    let what = e.to_debug_string();
                    let received = std::mem::take(buf);
                    return self.end(FetchEvent::Broken(FetchFailure::Stream(what), received));
                }
            }
        }
    }

    fn end(&mut self, event: FetchEvent) -> Option<FetchEvent> {
        // Drops the pollable, then the future or stream (field order).
        self.state = FetchState::Over;
        Some(event)
    }
}
