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
        // Every listing resource is counted (`drop` uncounts it), even one that failed.
        if let Err(e) = self.limits.open_listing() {
            return Ok(self.table.push(SegmentListing::failed(e))?);
        }
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
        start: u64,
    ) -> wasmtime::Result<Resource<FutureSegment>> {
        // Every future is counted (`drop` uncounts it), even one that failed at once.
        let future = match self.limits.start_fetch() {
            Err(e) => FutureSegment::Ready(Err(e)),
            Ok(()) if is_generation_name(&generation) => {
                let fetch = self
                    .replica
                    .fetch_wal_segment(&generation, index, offset, start);
                FutureSegment::Pending(wasmtime_wasi::runtime::spawn(fetch))
            }
            Ok(()) => FutureSegment::Ready(Err(backend::invalid_generation(&generation))),
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
        self.limits.close_listing();
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
        Ok(Some(Ok(
            match result.and_then(|body| self.limits.open_stream(body)) {
                Ok(body) => {
                    // Not a child of the future: the stream may outlive it (see the WIT).
                    let stream: DynInputStream = Box::new(SegmentStream::new(body));
                    Ok(self.table.push(stream)?)
                }
                Err(e) => Err(e.into()),
            },
        )))
    }

    fn drop(&mut self, future: Resource<FutureSegment>) -> wasmtime::Result<()> {
        // Deleting aborts the fetch task if it is still running.
        self.table.delete(future)?;
        self.limits.end_fetch();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Fault, MemReplica, Replica};
    use std::sync::Arc;
    use wasmtime::component::ResourceTable;
    use wasmtime_wasi_io::poll::Pollable;
    use wasmtime_wasi_io::streams::StreamError;
    use wit::{Host, HostFutureWalSegment, HostWalSegmentListing};

    const GEN: &str = "0000000000000000";

    struct Fixture {
        table: ResourceTable,
        replica: Arc<dyn Replica>,
        mem: MemReplica,
        limits: super::super::ClientLimits,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with_limit(64)
        }

        fn with_limit(max_fetches: usize) -> Fixture {
            let mem = MemReplica::new();
            Fixture {
                table: ResourceTable::new(),
                replica: Arc::new(mem.clone()),
                mem,
                limits: super::super::ClientLimits::new(max_fetches),
            }
        }

        fn view(&mut self) -> ReplicaClientView<'_> {
            ReplicaClientView {
                table: &mut self.table,
                replica: &self.replica,
                limits: &mut self.limits,
            }
        }

        /// Calls `get` until it answers, awaiting the future's readiness in between (what
        /// the guest does with `subscribe` and `poll`).
        async fn get(
            &mut self,
            future: &Resource<FutureSegment>,
        ) -> Result<Result<Resource<DynInputStream>, wit::ReplicaError>, ()> {
            loop {
                let borrowed = Resource::new_borrow(future.rep());
                if let Some(result) = self.view().get(borrowed).unwrap() {
                    return result;
                }
                self.table.get_mut(future).unwrap().ready().await;
            }
        }

        /// Reads a stream to its end with reads of at most `size` bytes.
        async fn read_all(
            &mut self,
            stream: &Resource<DynInputStream>,
            size: usize,
        ) -> (Vec<u8>, StreamError) {
            let mut data = Vec::new();
            loop {
                let s = self.table.get_mut(stream).unwrap();
                match s.read(size) {
                    Ok(chunk) if chunk.is_empty() => s.ready().await,
                    Ok(chunk) => {
                        assert!(chunk.len() <= size);
                        data.extend_from_slice(&chunk);
                    }
                    Err(e) => return (data, e),
                }
            }
        }

        async fn list_all(
            &mut self,
            generation: &str,
        ) -> Result<Vec<wit::WalSegmentInfo>, wit::ReplicaError> {
            let listing = self.view().list_wal_segments(generation.into(), 0).unwrap();
            let mut all = Vec::new();
            loop {
                let borrowed = Resource::new_borrow(listing.rep());
                match self.view().next_page(borrowed).unwrap() {
                    None => self.table.get_mut(&listing).unwrap().ready().await,
                    Some(Ok(Some(page))) => all.extend(page),
                    Some(Ok(None)) => break,
                    Some(Err(e)) => {
                        // Every later call returns the same error.
                        let again = self.view().next_page(Resource::new_borrow(listing.rep()));
                        assert!(matches!(again.unwrap(), Some(Err(_))));
                        return Err(e);
                    }
                }
            }
            let again = self.view().next_page(Resource::new_borrow(listing.rep()));
            assert!(
                matches!(again.unwrap(), Some(Ok(None))),
                "complete stays complete"
            );
            HostWalSegmentListing::drop(&mut self.view(), listing).unwrap();
            Ok(all)
        }
    }

    #[tokio::test]
    async fn segment_streams_split_chunks_then_close() {
        let mut f = Fixture::new();
        f.mem.set_chunk_size(7);
        let data: Vec<u8> = (0..100).collect();
        f.mem.insert(GEN, 0, 0, data.clone());
        let future = f.view().fetch_wal_segment(GEN.into(), 0, 0, 0).unwrap();
        let stream = f.get(&future).await.unwrap().unwrap();
        // The result can be taken once.
        assert!(f.get(&future).await.is_err());
        // The stream outlives its future.
        HostFutureWalSegment::drop(&mut f.view(), future).unwrap();
        let (got, end) = f.read_all(&stream, 5).await;
        assert_eq!(got, data);
        assert!(matches!(end, StreamError::Closed), "{end:?}");
        assert_eq!(
            f.mem.stats().outstanding,
            1,
            "the body is alive until dropped"
        );
        f.table.delete(stream).unwrap();
        assert_eq!(f.mem.stats().outstanding, 0);
    }

    #[tokio::test]
    async fn a_stream_failure_carries_the_replica_message() {
        let mut f = Fixture::new();
        f.mem.insert(GEN, 0, 0, vec![1u8; 50]);
        let message = "marker".to_owned();
        f.mem
            .set_fault(0, 0, Fault::MidStream { after: 20, message });
        let future = f.view().fetch_wal_segment(GEN.into(), 0, 0, 0).unwrap();
        let stream = f.get(&future).await.unwrap().unwrap();
        let (got, end) = f.read_all(&stream, 1000).await;
        assert_eq!(got, vec![1u8; 20]);
        match end {
            StreamError::LastOperationFailed(e) => assert_eq!(e.to_string(), "marker"),
            other => panic!("expected last-operation-failed, got {other:?}"),
        }
        let after = f.table.get_mut(&stream).unwrap().read(10);
        assert!(matches!(after, Err(StreamError::Closed)), "{after:?}");
    }

    #[tokio::test]
    async fn fetch_errors_and_invalid_generations_are_replica_errors() {
        let mut f = Fixture::new();
        let future = f.view().fetch_wal_segment(GEN.into(), 3, 0, 0).unwrap();
        let result = f.get(&future).await.unwrap();
        assert!(
            matches!(result, Err(wit::ReplicaError::NotFound(_))),
            "{result:?}"
        );

        let future = f
            .view()
            .fetch_wal_segment("../etc".into(), 0, 0, 0)
            .unwrap();
        let result = f.get(&future).await.unwrap();
        assert!(
            matches!(result, Err(wit::ReplicaError::Other(ref m)) if m.contains("invalid generation"))
        );
        assert_eq!(
            f.mem.stats().fetches,
            1,
            "an invalid generation never reaches the replica"
        );

        let err = f.list_all("0000000000000ZZZ").await.unwrap_err();
        assert!(matches!(err, wit::ReplicaError::Other(ref m) if m.contains("invalid generation")));
    }

    #[tokio::test]
    async fn dropping_a_pending_future_cancels_its_fetch() {
        let mut f = Fixture::new();
        f.mem.insert(GEN, 0, 0, vec![0u8; 10]);
        f.mem
            .set_fault(0, 0, Fault::Delay(std::time::Duration::from_secs(3600)));
        let future = f.view().fetch_wal_segment(GEN.into(), 0, 0, 0).unwrap();
        let borrowed = Resource::new_borrow(future.rep());
        assert!(f.view().get(borrowed).unwrap().is_none(), "still pending");
        assert_eq!(f.mem.stats().outstanding, 1);
        HostFutureWalSegment::drop(&mut f.view(), future).unwrap();
        // The abort is delivered by the runtime: wait for it (a liveness bound).
        for _ in 0..200 {
            if f.mem.stats().outstanding == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(f.mem.stats().outstanding, 0);
    }

    #[tokio::test]
    async fn listings_deliver_every_page_then_complete_or_fail() {
        let mut f = Fixture::new();
        for index in 0..5 {
            f.mem.insert(GEN, index, 0, vec![index as u8]);
        }
        f.mem.set_page_size(2);
        let all = f.list_all(GEN).await.unwrap();
        let indexes: Vec<u64> = all.iter().map(|s| s.index).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
        assert!(all.iter().all(|s| s.size == 1 && s.offset == 0));

        assert!(f.list_all("00000000000000aa").await.unwrap().is_empty());

        f.mem
            .set_list_error(Some(ReplicaError::Unavailable("marker".into())));
        let err = f.list_all(GEN).await.unwrap_err();
        assert!(
            matches!(err, wit::ReplicaError::Unavailable(ref m) if m == "marker"),
            "{err:?}"
        );
    }

    /// A guest that does not keep to its parallelism gets failed fetches, streams and
    /// listings, not more host work; dropping what it holds makes room again.
    #[tokio::test]
    async fn a_guest_past_its_limits_gets_errors_not_host_work() {
        let mut f = Fixture::with_limit(2);
        for index in 0..4 {
            f.mem.insert(GEN, index, 0, vec![index as u8; 10]);
        }
        let is_limit = |r: &Result<Result<Resource<DynInputStream>, wit::ReplicaError>, ()>,
                        what: &str| {
            matches!(r, Ok(Err(wit::ReplicaError::Other(m)))
                if m == &format!("host limit: more than 2 {what} at once"))
        };

        // Two fetches out: a third is refused at once, and starts no fetch.
        let a = f.view().fetch_wal_segment(GEN.into(), 0, 0, 0).unwrap();
        let b = f.view().fetch_wal_segment(GEN.into(), 1, 0, 0).unwrap();
        let c = f.view().fetch_wal_segment(GEN.into(), 2, 0, 0).unwrap();
        let refused = f.get(&c).await;
        assert!(is_limit(&refused, "segment fetches"), "{refused:?}");
        assert_eq!(
            f.mem.stats().fetches,
            2,
            "the refused fetch reached the replica"
        );
        HostFutureWalSegment::drop(&mut f.view(), c).unwrap();

        // Their streams: the futures dropped, two streams open; a third fetch is allowed
        // but its stream is refused.
        let sa = f.get(&a).await.unwrap().unwrap();
        let sb = f.get(&b).await.unwrap().unwrap();
        HostFutureWalSegment::drop(&mut f.view(), a).unwrap();
        HostFutureWalSegment::drop(&mut f.view(), b).unwrap();
        let d = f.view().fetch_wal_segment(GEN.into(), 3, 0, 0).unwrap();
        let refused = f.get(&d).await;
        assert!(is_limit(&refused, "segment streams"), "{refused:?}");
        HostFutureWalSegment::drop(&mut f.view(), d).unwrap();

        // Dropping a stream makes room again.
        f.table.delete(sa).unwrap();
        let e = f.view().fetch_wal_segment(GEN.into(), 3, 0, 0).unwrap();
        let stream = f.get(&e).await.unwrap().unwrap();
        let (data, end) = f.read_all(&stream, 100).await;
        assert_eq!(data, vec![3u8; 10]);
        assert!(matches!(end, StreamError::Closed));
        f.table.delete(sb).unwrap();

        // One listing at a time.
        let first = f.view().list_wal_segments(GEN.into(), 0).unwrap();
        let second = f.view().list_wal_segments(GEN.into(), 0).unwrap();
        let page = f
            .view()
            .next_page(Resource::new_borrow(second.rep()))
            .unwrap();
        assert!(
            matches!(&page, Some(Err(wit::ReplicaError::Other(m)))
                if m == "host limit: more than 1 listings at once"),
            "{page:?}"
        );
        HostWalSegmentListing::drop(&mut f.view(), second).unwrap();
        HostWalSegmentListing::drop(&mut f.view(), first).unwrap();
        assert_eq!(f.list_all(GEN).await.unwrap().len(), 4, "room again");
    }
}
