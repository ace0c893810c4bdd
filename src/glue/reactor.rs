//! The poll loop's one blocking call: wait until some of the outstanding pollables are ready.
//!
//! Drop order, which the callers' types encode: a pollable is a child of the resource that
//! made it (listing, future, stream) and must be dropped before it, or the host traps.

use wasi::io::poll::{Pollable, poll};

/// Blocks until at least one of `pollables` is ready and returns the positions of the ready
/// ones. `None` when there is nothing to wait for: `wasi:io/poll.poll` traps on an empty list.
pub fn wait(pollables: &[&Pollable]) -> Option<Vec<usize>> {
    if pollables.is_empty() {
        return None;
    }
    Some(poll(pollables).into_iter().map(|i| i as usize).collect())
}
