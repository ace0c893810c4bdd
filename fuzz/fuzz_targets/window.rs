//! The ordered window: an arbitrary capacity and an arbitrary sequence of starts, completions
//! and failures (in any order, also late, repeated or for sequence numbers never started:
//! `complete` and `fail` document that those are ignored), head takes and clears.
//!
//! Starts stay within the contract (`start` panics by design when the window is full or the
//! sequence number is not the next one): they are made only when `has_room`, with `next_seq`.
//!
//! Checks, against a model after every operation: never more than the capacity in the window;
//! `has_room`, `len`, `head_seq`, `next_seq`, `head` agree with the model; `take_head` returns
//! the head (the one completed or failed with that sequence number) and nothing while the head
//! is fetching; results for sequence numbers not fetching change nothing.

#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use walrestore::core::error::{Error, ReplicaFailure};
use walrestore::core::window::{Slot, Window};

#[derive(Arbitrary, Debug)]
enum Seq {
    /// `head_seq + n`, wrapping (most land in or near the window).
    Rel(u8),
    /// `head_seq - n - 1`: already left the window.
    Past(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Start,
    /// Start as many as there is room for.
    Fill,
    Complete(Seq, u8),
    Fail(Seq, u8),
    TakeHead,
    /// Take heads while there are any to take.
    Drain,
    Clear,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelSlot {
    Fetching,
    Complete(Vec<u8>),
    Failed(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u32,
    ops: Vec<Op>,
}

fn slot(s: &Slot) -> ModelSlot {
    match s {
        Slot::Fetching => ModelSlot::Fetching,
        Slot::Complete(b) => ModelSlot::Complete(b.clone()),
        Slot::Failed(e) => ModelSlot::Failed(e.message.clone()),
    }
}

struct Model {
    capacity: usize,
    head_seq: u64,
    slots: VecDeque<ModelSlot>,
}

impl Model {
    fn slot_mut(&mut self, seq: u64) -> Option<&mut ModelSlot> {
        let i = seq.checked_sub(self.head_seq)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    fn take_head(&mut self) -> Option<ModelSlot> {
        match self.slots.front() {
            None | Some(ModelSlot::Fetching) => None,
            Some(_) => {
                self.head_seq += 1;
                self.slots.pop_front()
            }
        }
    }
}

fn check(w: &Window, m: &Model) {
    assert!(
        w.len() <= m.capacity,
        "{} in a window of {}",
        w.len(),
        m.capacity
    );
    assert_eq!(w.len(), m.slots.len());
    assert_eq!(w.is_empty(), m.slots.is_empty());
    assert_eq!(w.has_room(), m.slots.len() < m.capacity);
    assert_eq!(w.head_seq(), m.head_seq);
    assert_eq!(w.next_seq(), m.head_seq + m.slots.len() as u64);
    assert_eq!(w.head().map(slot), m.slots.front().cloned());
}

fuzz_target!(|input: Input| {
    let mut w = Window::new(input.capacity);
    let mut m = Model {
        capacity: input.capacity.max(1) as usize,
        head_seq: 0,
        slots: VecDeque::new(),
    };
    check(&w, &m);
    let resolve = |s: &Seq, m: &Model| match s {
        Seq::Rel(n) => m.head_seq.wrapping_add(u64::from(*n)),
        Seq::Past(n) => m.head_seq.wrapping_sub(u64::from(*n) + 1),
        Seq::Raw(x) => *x,
    };
    let mut tag = 0u32;
    for op in &input.ops {
        match op {
            Op::Start => {
                if w.has_room() {
                    w.start(w.next_seq());
                    m.slots.push_back(ModelSlot::Fetching);
                }
            }
            Op::Fill => {
                // Bounded: capacities can be huge.
                let mut n = 0;
                while w.has_room() && n < 64 {
                    w.start(w.next_seq());
                    m.slots.push_back(ModelSlot::Fetching);
                    n += 1;
                }
            }
            Op::Complete(s, len) => {
                let seq = resolve(s, &m);
                tag += 1;
                let mut bytes = tag.to_le_bytes().to_vec();
                bytes.resize(usize::from(*len % 16) + 4, 0xaa);
                w.complete(seq, bytes.clone());
                if let Some(slot @ ModelSlot::Fetching) = m.slot_mut(seq) {
                    *slot = ModelSlot::Complete(bytes);
                }
            }
            Op::Fail(s, n) => {
                let seq = resolve(s, &m);
                tag += 1;
                let failure = ReplicaFailure::Other(format!("failure {tag} ({n})"));
                let error = Error::read_segment("0000000000000000", seq, 0, &failure);
                let message = error.message.clone();
                w.fail(seq, error);
                if let Some(slot @ ModelSlot::Fetching) = m.slot_mut(seq) {
                    *slot = ModelSlot::Failed(message);
                }
            }
            Op::TakeHead => {
                let head = w.head().map(slot);
                let got = w.take_head().as_ref().map(slot);
                assert_eq!(got, m.take_head());
                if got.is_some() {
                    assert_eq!(got, head, "take_head returned something else than head");
                }
            }
            Op::Drain => loop {
                let got = w.take_head().as_ref().map(slot);
                assert_eq!(got, m.take_head());
                if got.is_none() {
                    break;
                }
            },
            Op::Clear => {
                w.clear();
                m.head_seq += m.slots.len() as u64;
                m.slots.clear();
            }
        }
        check(&w, &m);
    }
});
