//! The host side of the WIT `replica-client` interface: the resources the guest polls
//! (`types`), the input stream over a segment body (`stream`), and the `Host*` trait impls
//! (`impl_`), all backed by one `Replica`.

mod impl_;
mod stream;
mod types;

pub use types::{FutureSegment, SegmentListing};

use crate::backend::{Replica, ReplicaError, SegmentBody};
use crate::bindings::replica_client;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::component::{HasData, Linker, ResourceTable};

/// What the replica-client host functions need from the store's data.
pub struct ReplicaClientView<'a> {
    /// Where the client's resources live (shared with WASI, so pollables and streams mix).
    pub table: &'a mut ResourceTable,
    /// The replica behind every call.
    pub replica: &'a Arc<dyn Replica>,
    /// What the guest may hold at once.
    pub limits: &'a mut ClientLimits,
}

/// Caps on the replica work one guest may hold at once: one listing, and `max_fetches`
/// segment fetches and as many segment streams (the download's parallelism). The component
/// keeps within them by construction; a guest that does not gets failed fetches and listings
/// (`host limit: …`), not more tasks, connections or memory on the host.
#[derive(Debug)]
pub struct ClientLimits {
    max_fetches: usize,
    listings: usize,
    futures: usize,
    streams: Arc<AtomicUsize>,
}

impl ClientLimits {
    /// Limits for a download of parallelism `max_fetches` (at least one).
    pub fn new(max_fetches: usize) -> ClientLimits {
        ClientLimits {
            max_fetches: max_fetches.max(1),
            listings: 0,
            futures: 0,
            streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn exceeded(what: &str, max: usize) -> ReplicaError {
        ReplicaError::Other(format!("host limit: more than {max} {what} at once"))
    }

    /// Counts a new listing resource; fails it if another is open.
    fn open_listing(&mut self) -> Result<(), ReplicaError> {
        self.listings += 1;
        if self.listings > 1 {
            return Err(ClientLimits::exceeded("listings", 1));
        }
        Ok(())
    }

    fn close_listing(&mut self) {
        self.listings = self.listings.saturating_sub(1);
    }

    /// Counts a new fetch resource (`future-wal-segment`); fails it if `max_fetches` are out.
    fn start_fetch(&mut self) -> Result<(), ReplicaError> {
        self.futures += 1;
        if self.futures > self.max_fetches {
            return Err(ClientLimits::exceeded("segment fetches", self.max_fetches));
        }
        Ok(())
    }

    fn end_fetch(&mut self) {
        self.futures = self.futures.saturating_sub(1);
    }

    /// `body`, counted as an open segment stream until it is dropped, unless `max_fetches`
    /// are open.
    fn open_stream(&self, body: SegmentBody) -> Result<SegmentBody, ReplicaError> {
        let open = self.streams.fetch_add(1, Ordering::AcqRel);
        let permit = StreamPermit(self.streams.clone());
        if open >= self.max_fetches {
            return Err(ClientLimits::exceeded("segment streams", self.max_fetches));
        }
        Ok(body
            .map(move |item| {
                let _held = &permit;
                item
            })
            .boxed())
    }
}

/// One open segment stream, counted until dropped.
struct StreamPermit(Arc<AtomicUsize>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Implemented by store data that can serve the replica client.
pub trait ReplicaClientState: Send {
    fn replica_client(&mut self) -> ReplicaClientView<'_>;
}

/// `HasData` marker tying the generated `add_to_linker` to `ReplicaClientView`.
struct ReplicaClient;

impl HasData for ReplicaClient {
    type Data<'a> = ReplicaClientView<'a>;
}

/// Adds `walrestore:downloader/replica-client` to the linker (wasi:io is added by
/// `wasmtime_wasi::p2::add_to_linker_async`).
pub fn add_to_linker<T: ReplicaClientState + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    replica_client::add_to_linker::<T, ReplicaClient>(linker, T::replica_client)
}
