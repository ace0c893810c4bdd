//! The `Host*` trait impls of `walrestore:downloader/replica-client`: one place to find each
//! WIT function's host code.

use super::ReplicaClientView;
use super::stream::SegmentStream;
use super::types::{FutureSegment, ListingEvent, ListingState, SegmentListing, task_ended};
use crate::backend::{self, ReplicaError, is_generation_name};
use crate::bindings::replica_client as wit;
use futures::StreamExt;
use tokio::sync::mpsc;
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, subscribe};
use wasmtime_wasi_io::streams::DynInputStream;

impl From<ReplicaError> for wit::ReplicaError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::NotFound(m) => wit::ReplicaError::NotFound(m),
            ReplicaError::Unavailable(m) => wit::ReplicaError::Unavailable(m),
            ReplicaError::Other(m) => wit::ReplicaError::Other(m),
        }
    }
}

impl From<backend::WalSegmentInfo> for wit::WalSegmentInfo {
    fn from(s: backend::WalSegmentInfo) -> Self {
        wit::WalSegmentInfo {
            index: s.index,
            offset: s.offset,
            size: s.size,
        }
    }
}

impl wit::Host for ReplicaClientView<'_> {
    fn list_wal_segments(
        &mut self,
        generation: String,
        min_index: u64,
    ) -> wasmtime::Result<Resource<SegmentListing>> {
        // Checked here as well as in the backends: the guest is not trusted to send a name
        // that is safe to join to a path, and a bad one must fail the call, not the host.
        if !is_generation_name(&generation) {
            let listing = SegmentListing::failed(backend::invalid_generation(&generation));
            return Ok(self.table.push(listing)?);
        }
        let mut pages = self.replica.list_wal_segments(&generation, min_index);
        // One page in the channel plus one in the task's hands: prefetch one page ahead.
        let (tx, rx) = mpsc::channel(1);
        let task = wasmtime_wasi::runtime::spawn(async move {
            while let Some(page) = pages.next().await {
                let (event, last) = match page {
                    Ok(page) => (ListingEvent::Page(page), false),
                    Err(e) => (ListingEvent::Failed(e), true),
                };
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
            let _ = tx.send(ListingEvent::Done).await;
        });
        let listing = SegmentListing {
            state: ListingState::Open { rx, ready: None },
            _task: Some(task),
        };
        Ok(self.table.push(listing)?)
    }

    fn fetch_wal_segment(
        &mut self,
        generation: String,
        index: u64,
        offset: u64,
    ) -> wasmtime::Result<Resource<FutureSegment>> {
        let future = if is_generation_name(&generation) {
            let fetch = self.replica.fetch_wal_segment(&generation, index, offset);
            FutureSegment::Pending(wasmtime_wasi::runtime::spawn(fetch))
        } else {
            FutureSegment::Ready(Err(backend::invalid_generation(&generation)))
        };
        Ok(self.table.push(future)?)
    }
}

impl wit::HostWalSegmentListing for ReplicaClientView<'_> {
    fn subscribe(
        &mut self,
        listing: Resource<SegmentListing>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, listing)
    }

    fn next_page(
        &mut self,
        listing: Resource<SegmentListing>,
    ) -> wasmtime::Result<Option<Result<Option<Vec<wit::WalSegmentInfo>>, wit::ReplicaError>>> {
        let listing = self.table.get_mut(&listing)?;
        let event = match &mut listing.state {
            ListingState::Done => return Ok(Some(Ok(None))),
            ListingState::Failed(e) => return Ok(Some(Err(e.clone().into()))),
            ListingState::Open { rx, ready } => match ready.take() {
                Some(event) => event,
                None => match rx.try_recv() {
                    Ok(event) => event,
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                    Err(mpsc::error::TryRecvError::Disconnected) => task_ended(),
                },
            },
        };
        Ok(Some(match event {
            ListingEvent::Page(page) => Ok(Some(page.into_iter().map(Into::into).collect())),
            ListingEvent::Done => {
                listing.state = ListingState::Done;
                listing._task = None;
                Ok(None)
            }
            ListingEvent::Failed(e) => {
                listing.state = ListingState::Failed(e.clone());
                listing._task = None;
                Err(e.into())
            }
        }))
    }

    fn drop(&mut self, listing: Resource<SegmentListing>) -> wasmtime::Result<()> {
        // Deleting aborts the listing task (its handle aborts on drop).
        self.table.delete(listing)?;
        Ok(())
    }
}

impl wit::HostFutureWalSegment for ReplicaClientView<'_> {
    fn subscribe(
        &mut self,
        future: Resource<FutureSegment>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, future)
    }

    fn get(
        &mut self,
        future: Resource<FutureSegment>,
    ) -> wasmtime::Result<Option<Result<Result<Resource<DynInputStream>, wit::ReplicaError>, ()>>>
    {
        let future = self.table.get_mut(&future)?;
        future.poll_now();
        let result = match std::mem::replace(future, FutureSegment::Consumed) {
            FutureSegment::Ready(result) => result,
            FutureSegment::Consumed => return Ok(Some(Err(()))),
            pending @ FutureSegment::Pending(_) => {
                *future = pending;
                return Ok(None);
            }
        };
        Ok(Some(Ok(match result {
            Ok(body) => {
                // Not a child of the future: the stream may outlive it (see the WIT).
                let stream: DynInputStream = Box::new(SegmentStream::new(body));
                Ok(self.table.push(stream)?)
            }
            Err(e) => Err(e.into()),
        })))
    }

    fn drop(&mut self, future: Resource<FutureSegment>) -> wasmtime::Result<()> {
        // Deleting aborts the fetch task if it is still running.
        self.table.delete(future)?;
        Ok(())
    }
}
