//! The exported `downloader` resource: the core's [`Download`] driven by one single-threaded
//! `wasi:io/poll` loop over the listing and the outstanding fetches.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use super::bindings::exports::walrestore::downloader::downloader as wit;
use super::client::{Fetch, FetchEvent, Listing, ListingEvent};
use super::output::WasiOutput;
use super::reactor;
use crate::core::download::{Download, Step};
use crate::core::error::{Error, ErrorKind, ReplicaFailure};
use crate::core::plan::Options;

/// The guest side of the `downloader` resource.
pub struct Downloader {
    state: RefCell<State>,
}

struct State {
    // Host resources first: they drop before the core removes unfinished output.
    listing: Option<Listing>,
    /// Outstanding fetches by sequence number (only those still talking to the host).
    fetches: BTreeMap<u64, Fetch>,
    /// What the last `poll` found ready and is not handled yet, in sequence order: `None` is
    /// the listing, `Some(seq)` a fetch (gone if it ended meanwhile).
    ready: VecDeque<Option<u64>>,
    generation: String,
    download: Download<WasiOutput>,
}

impl State {
    /// Drops every host resource, which cancels the host work behind it.
    fn drop_resources(&mut self) {
        self.listing = None;
        self.fetches.clear();
        self.ready.clear();
    }

    /// Writes what the core can, starting every fetch the window has room for.
    fn step(&mut self) -> Result<Step, Error> {
        let (fetches, generation) = (&mut self.fetches, self.generation.as_str());
        self.download.step(&mut |request| {
            fetches.insert(request.seq, Fetch::start(generation, &request));
        })
    }

    fn pump_listing(&mut self) {
        while let Some(listing) = &mut self.listing {
            match listing.next() {
                None => return,
                Some(ListingEvent::Page(page)) => self.download.listing_page(&page),
                Some(ListingEvent::End) => self.download.listing_end(),
                Some(ListingEvent::Failed(e)) => self.download.listing_failed(&e),
            }
            if let Some((min_index, delay_ms)) = self.download.take_relist() {
                // A transient failure: list again, from where the listing had got to. The
                // failed listing goes first: the host allows one at a time.
                self.listing = None;
                self.listing = Some(Listing::start(&self.generation, min_index, delay_ms));
                continue;
            }
            if !self.download.wants_listing() {
                self.listing = None;
            }
        }
    }

    fn pump_fetch(&mut self, seq: u64) {
        let Some(fetch) = self.fetches.get_mut(&seq) else {
            return;
        };
        let Some(event) = fetch.advance() else {
            return;
        };
        // The host counts a fetch outstanding until its resources are dropped.
        self.fetches.remove(&seq);
        match event {
            FetchEvent::Done(bytes) => self.download.fetch_done(seq, bytes),
            FetchEvent::Failed(failure) => self.download.fetch_failed(seq, &failure),
            FetchEvent::Broken(failure, received) => {
                self.download.fetch_broken(seq, &failure, received);
            }
        }
    }

    fn next(&mut self) -> Result<Option<wit::WalFile>, Error> {
        if self.download.begin()? {
            let options = self.download.options();
            self.listing = Some(Listing::start(&options.generation, options.min_index, 0));
        }
        loop {
            match self.step()? {
                Step::File(file) => {
                    return Ok(Some(wit::WalFile {
                        index: file.index,
                        path: file.name,
                        size: file.size,
                    }));
                }
                Step::End => {
                    self.drop_resources();
                    return Ok(None);
                }
                Step::Wait => {}
            }
            if !self.download.wants_listing() {
                self.listing = None;
            }
            // One ready event at a time, lowest sequence first, each followed by a step: the
            // head is written (and its successor fetch started) as soon as its data is in,
            // not after every other ready stream has been read.
            if let Some(owner) = self.ready.pop_front() {
                match owner {
                    None => self.pump_listing(),
                    Some(seq) => self.pump_fetch(seq),
                }
                continue;
            }
            let mut pollables = Vec::with_capacity(self.fetches.len() + 1);
            let mut owners = Vec::with_capacity(self.fetches.len() + 1);
            if let Some(listing) = &self.listing {
                pollables.push(listing.pollable());
                owners.push(None);
            }
            for (seq, fetch) in &self.fetches {
                if let Some(pollable) = fetch.pollable() {
                    pollables.push(pollable);
                    owners.push(Some(*seq));
                }
            }
            let Some(ready) = reactor::wait(&pollables) else {
                // Unreachable if the core is right; an error beats a trap in `poll`.
                let what = ReplicaFailure::Other(
                    "internal error: waiting with nothing outstanding".into(),
                );
                return Err(Error::listing(&self.download.options().generation, &what));
            };
            drop(pollables);
            // `owners` is in sequence order (the listing first).
            let mut ready = ready;
            ready.sort_unstable();
            self.ready.extend(ready.into_iter().map(|i| owners[i]));
        }
    }
}

fn to_wit(e: Error) -> wit::Error {
    let kind = match e.kind {
        ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
        ErrorKind::WalNotFound => wit::ErrorKind::WalNotFound,
        ErrorKind::MissingOffset => wit::ErrorKind::MissingOffset,
        ErrorKind::ReplicaNotFound => wit::ErrorKind::ReplicaNotFound,
        ErrorKind::ReplicaUnavailable => wit::ErrorKind::ReplicaUnavailable,
        ErrorKind::ReplicaOther => wit::ErrorKind::ReplicaOther,
        ErrorKind::Corrupt => wit::ErrorKind::Corrupt,
        ErrorKind::Output => wit::ErrorKind::Output,
        ErrorKind::Closed => wit::ErrorKind::Closed,
    };
    wit::Error {
        kind,
        message: e.message,
        index: e.index,
        offset: e.offset,
    }
}

impl wit::GuestDownloader for Downloader {
    fn new(options: wit::Options) -> Downloader {
        // Nothing starts and nothing is checked until the first `next`.
        let options = Options {
            generation: options.generation,
            min_index: options.min_index,
            max_index: options.max_index,
            prefix: options.prefix,
            parallelism: options.parallelism,
            verify_wal: options.verify_wal,
            max_wal_size: options.max_wal_size,
            max_attempts: options.max_attempts,
            retry_delay_ms: options.retry_delay_ms,
        };
        Downloader {
            state: RefCell::new(State {
                listing: None,
                fetches: BTreeMap::new(),
                ready: VecDeque::new(),
                generation: options.generation.clone(),
                download: {
                    let mut download = Download::new(options, WasiOutput::open());
                    download.seed_jitter(wasi::random::insecure::get_insecure_random_u64());
                    download
                },
            }),
        }
    }

    fn next(&self) -> Result<Option<wit::WalFile>, wit::Error> {
        let mut state = self.state.borrow_mut();
        let result = state.next();
        if state.download.is_stopped() {
            state.drop_resources();
        }
        result.map_err(to_wit)
    }

    fn count(&self) -> u64 {
        self.state.borrow().download.count()
    }

    fn stats(&self) -> wit::DownloadStats {
        let stats = self.state.borrow().download.stats();
        wit::DownloadStats {
            fetches: stats.fetches,
            retries: stats.retries,
            resumed_bytes: stats.resumed_bytes,
        }
    }

    fn close(&self) -> Result<(), wit::Error> {
        let mut state = self.state.borrow_mut();
        state.drop_resources();
        state.download.close().map_err(to_wit)
    }
}

impl Drop for Downloader {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        state.drop_resources();
        let _ = state.download.close();
    }
}

/// The component's export.
pub struct Component;

impl wit::Guest for Component {
    type Downloader = Downloader;
}
