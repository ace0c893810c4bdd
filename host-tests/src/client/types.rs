//! The replica client's resources, as they live in the `ResourceTable`. Each owns the tokio
//! task doing its work (`AbortOnDropJoinHandle`), so dropping the resource cancels the work.

use crate::backend::{ReplicaError, SegmentBody, WalSegmentInfo};
use futures::FutureExt;
use tokio::sync::mpsc;
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

/// The pending result of a segment fetch (`future-wal-segment`).
pub enum FutureSegment {
    /// The fetch is running on its task.
    Pending(AbortOnDropJoinHandle<Result<SegmentBody, ReplicaError>>),
    /// The fetch finished; `get` has not taken the result yet.
    Ready(Result<SegmentBody, ReplicaError>),
    /// `get` took the result.
    Consumed,
}

impl FutureSegment {
    /// Moves a finished task's result into `Ready` without waiting.
    pub fn poll_now(&mut self) {
        if let FutureSegment::Pending(handle) = self
            && let Some(result) = (&mut **handle).now_or_never()
        {
            *self = FutureSegment::Ready(join_result(result));
        }
    }
}

fn join_result(
    r: Result<Result<SegmentBody, ReplicaError>, tokio::task::JoinError>,
) -> Result<SegmentBody, ReplicaError> {
    // A panic in a backend is reported to the guest as a failed fetch, not a host crash.
    r.unwrap_or_else(|e| Err(ReplicaError::Other(format!("fetch task failed: {e}"))))
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for FutureSegment {
    async fn ready(&mut self) {
        if let FutureSegment::Pending(handle) = self {
            // Awaiting `&mut JoinHandle` is cancel-safe: `poll` may drop this future.
            let result = join_result((&mut **handle).await);
            *self = FutureSegment::Ready(result);
        }
    }
}

/// One message from a listing's task.
pub(super) enum ListingEvent {
    Page(Vec<WalSegmentInfo>),
    Done,
    Failed(ReplicaError),
}

/// A listing in progress (`wal-segment-listing`): a task reads pages from the replica into a
/// channel of one page, so the next page is fetched while the guest works on the current one.
pub struct SegmentListing {
    pub(super) state: ListingState,
    /// The task feeding `state`'s channel; `None` once the listing has ended.
    pub(super) _task: Option<AbortOnDropJoinHandle<()>>,
}

pub(super) enum ListingState {
    /// Pages may still come; `ready` holds one taken from the channel by `Pollable::ready`.
    Open {
        rx: mpsc::Receiver<ListingEvent>,
        ready: Option<ListingEvent>,
    },
    /// Every page was delivered.
    Done,
    /// The listing failed; every later `next-page` returns this.
    Failed(ReplicaError),
}

impl SegmentListing {
    /// A listing that already failed (e.g. the guest sent an invalid generation).
    pub fn failed(e: ReplicaError) -> SegmentListing {
        SegmentListing {
            state: ListingState::Failed(e),
            _task: None,
        }
    }
}

/// The event a listing reports when its task ended without saying how (it panicked).
pub(super) fn task_ended() -> ListingEvent {
    ListingEvent::Failed(ReplicaError::Other(
        "listing task ended before the listing completed".to_owned(),
    ))
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for SegmentListing {
    async fn ready(&mut self) {
        if let ListingState::Open { rx, ready } = &mut self.state
            && ready.is_none()
        {
            // `recv` is cancel-safe: nothing is lost if `poll` drops this future.
            *ready = Some(rx.recv().await.unwrap_or_else(task_ended));
        }
    }
}
