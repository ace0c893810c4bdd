//! The ordered window: at most `parallelism` segments are in it at once, from the moment their
//! fetch starts until their data is written to the output (the head leaves when its data is
//! taken to be written), so completed-but-unwritten data counts against the bound. Segments enter in global (index, offset) order and leave from the
//! head, which is always in the window: the download can never wait on itself.

use std::collections::VecDeque;

use super::error::Error;

/// The state of one segment in the window.
#[derive(Debug)]
pub enum Slot {
    /// Its fetch is under way.
    Fetching,
    /// Its compressed bytes have all arrived.
    Complete(Vec<u8>),
    /// Its fetch failed; reported when it reaches the head.
    Failed(Error),
}

/// The segments whose fetch started and whose data is not written yet, by sequence number.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    /// Sequence number of `slots[0]`, the head: the lowest unwritten segment.
    head_seq: u64,
    slots: VecDeque<Slot>,
}

impl Window {
    /// An empty window that holds at most `capacity` (at least one) segments.
    pub fn new(capacity: u32) -> Window {
        Window {
            capacity: usize::try_from(capacity.max(1)).unwrap_or(usize::MAX),
            head_seq: 0,
            slots: VecDeque::new(),
        }
    }

    /// Whether another fetch may start.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.capacity
    }

    /// How many segments are in the window.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The sequence number of the head (the next segment to write), whether or not it started.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// The sequence number the next started fetch must have.
    pub fn next_seq(&self) -> u64 {
        self.head_seq + self.slots.len() as u64
    }

    /// Records that the fetch of `seq` started. Fetches start in sequence order.
    pub fn start(&mut self, seq: u64) {
        assert!(self.has_room(), "window is full");
        assert_eq!(seq, self.next_seq(), "fetches start in sequence order");
        self.slots.push_back(Slot::Fetching);
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        self.slots.get_mut(i)
    }

    /// Records the compressed bytes of `seq`. Ignored if `seq` is not fetching.
    pub fn complete(&mut self, seq: u64, bytes: Vec<u8>) {
        if let Some(slot @ Slot::Fetching) = self.slot_mut(seq) {
            *slot = Slot::Complete(bytes);
        }
    }

    /// Records that the fetch of `seq` failed. Ignored if `seq` is not fetching.
    pub fn fail(&mut self, seq: u64, error: Error) {
        if let Some(slot @ Slot::Fetching) = self.slot_mut(seq) {
            *slot = Slot::Failed(error);
        }
    }

    /// The head's state, if its fetch started.
    pub fn head(&self) -> Option<&Slot> {
        self.slots.front()
    }

    /// Removes the head, which must not be fetching, and returns its state; the next segment
    /// becomes the head.
    pub fn take_head(&mut self) -> Option<Slot> {
        if matches!(self.slots.front(), None | Some(Slot::Fetching)) {
            return None;
        }
        self.head_seq += 1;
        self.slots.pop_front()
    }

    /// Empties the window (after an error or on close), dropping any buffered data.
    pub fn clear(&mut self) {
        self.head_seq += self.slots.len() as u64;
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let mut w = Window::new(3);
        for seq in 0..3 {
            assert!(w.has_room());
            w.start(seq);
        }
        assert!(!w.has_room());
        // Completed but unwritten data still counts.
        w.complete(2, vec![2]);
        w.complete(1, vec![1]);
        assert!(!w.has_room());
        // Nothing leaves before the head.
        assert!(w.take_head().is_none());
        assert!(matches!(w.head(), Some(Slot::Fetching)));
        w.complete(0, vec![0]);
        let order: Vec<Vec<u8>> = std::iter::from_fn(|| match w.take_head() {
            Some(Slot::Complete(b)) => Some(b),
            _ => None,
        })
        .collect();
        assert_eq!(order, vec![vec![0], vec![1], vec![2]]);
        assert!(w.is_empty());
        assert_eq!(w.head_seq(), 3);
        assert_eq!(w.next_seq(), 3);
    }

    #[test]
    fn failure_waits_for_its_turn() {
        let mut w = Window::new(2);
        w.start(0);
        w.start(1);
        w.fail(1, Error::closed());
        assert!(w.take_head().is_none());
        w.complete(0, vec![7]);
        assert!(matches!(w.take_head(), Some(Slot::Complete(_))));
        assert!(matches!(w.take_head(), Some(Slot::Failed(_))));
        // A late result for a segment no longer in the window is ignored.
        w.complete(1, vec![1]);
        assert!(w.head().is_none());
    }

    #[test]
    fn head_always_fits() {
        let mut w = Window::new(1);
        w.start(0);
        assert!(!w.has_room());
        w.complete(0, vec![]);
        assert!(w.take_head().is_some());
        assert!(w.has_room());
        w.start(1);
    }

    #[test]
    #[should_panic(expected = "sequence order")]
    fn out_of_order_start_panics() {
        let mut w = Window::new(4);
        w.start(1);
    }

    #[test]
    fn clear_moves_past_everything() {
        let mut w = Window::new(4);
        w.start(0);
        w.start(1);
        w.clear();
        assert!(w.is_empty());
        assert_eq!(w.next_seq(), 2);
    }
}
