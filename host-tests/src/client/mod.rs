//! The host side of the WIT `replica-client` interface: the resources the guest polls
//! (`types`), the input stream over a segment body (`stream`), and the `Host*` trait impls
//! (`impl_`), all backed by one `Replica`.

mod impl_;
mod stream;
mod types;

pub use types::{FutureSegment, SegmentListing};

use crate::backend::Replica;
use crate::bindings::replica_client;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// What the replica-client host functions need from the store's data.
pub struct ReplicaClientView<'a> {
    /// Where the client's resources live (shared with WASI, so pollables and streams mix).
    pub table: &'a mut ResourceTable,
    /// The replica behind every call.
    pub replica: &'a Arc<dyn Replica>,
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
