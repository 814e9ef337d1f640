//! The bounded window of probes awaiting an answer: what retries and the
//! silent states need, kept for at most `capacity` probes at a time however
//! large the scan, so memory stays fixed.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fate {
    #[default]
    Pending,
    Answered,
    /// Every attempt went unanswered (or its host timed out).
    Silent,
    /// Unanswered after as many attempts as the scan allows for now: not
    /// retried unless an answer raises that number (nmap's bench), decided
    /// silent when the window needs its slot or nothing else is left.
    Benched,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Slot {
    pub fate: Fate,
    /// Attempts sent so far.
    pub tries: u8,
    /// The retry timeout when the last attempt went out, in ms (at most
    /// 65 s): how long an answer to it is still awaited once the probe is
    /// given up.
    pub patience_ms: u16,
    /// When the last attempt went out, in ms since the scan started.
    pub sent_ms: u32,
}

/// Probes `base..head` of the scan order, indexed modulo the capacity, and
/// their attempts in send order (probe, send time). An attempt is overdue
/// after the *current* retry timeout, as in nmap: probes sent before the
/// round trip was measured (with the 1 s initial timeout) do not hold up
/// the retries of those sent after.
pub(super) struct Window {
    slots: Vec<Slot>,
    pub base: u64,
    pub head: u64,
    attempts: VecDeque<(u64, u32)>,
}

impl Window {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            slots: vec![Slot::default(); capacity.max(1)],
            base: 0,
            head: 0,
            attempts: VecDeque::new(),
        }
    }

    pub(super) fn has_room(&self) -> bool {
        self.head - self.base < self.slots.len() as u64
    }

    /// Bytes the window holds at most (for the documentation and the log).
    pub(super) fn memory(&self) -> usize {
        self.slots.len() * (size_of::<Slot>() + size_of::<(u64, u32)>())
    }

    /// The slot of probe `i`, while it is in the window.
    pub(super) fn get(&mut self, i: u64) -> Option<&mut Slot> {
        if i < self.base || i >= self.head {
            return None;
        }
        let n = self.slots.len() as u64;
        Some(&mut self.slots[(i % n) as usize])
    }

    /// Opens the next probe's slot; its first attempt goes out now, with
    /// `patience_ms` the retry timeout.
    pub(super) fn push(&mut self, now_ms: u32, patience_ms: u16) -> u64 {
        let i = self.head;
        self.head += 1;
        *self.get(i).expect("room was checked") = Slot {
            fate: Fate::Pending,
            tries: 1,
            patience_ms,
            sent_ms: now_ms,
        };
        self.attempts.push_back((i, now_ms));
        i
    }

    /// Decides probe `i` (if it is still in the window).
    pub(super) fn decide(&mut self, i: u64, fate: Fate) {
        if let Some(slot) = self.get(i) {
            slot.fate = fate;
        }
    }

    /// Records a retransmission of probe `i`.
    pub(super) fn resend(&mut self, i: u64, now_ms: u32, patience_ms: u16) {
        if let Some(slot) = self.get(i) {
            slot.tries += 1;
            slot.sent_ms = now_ms;
            slot.patience_ms = patience_ms;
            self.attempts.push_back((i, now_ms));
        }
    }

    /// The next pending probe unanswered for `timeout_ms`, if any.
    pub(super) fn next_overdue(&mut self, now_ms: u32, timeout_ms: u32) -> Option<(u64, Slot)> {
        while let Some(&(i, sent)) = self.attempts.front() {
            if sent.saturating_add(timeout_ms) > now_ms {
                return None;
            }
            self.attempts.pop_front();
            if let Some(slot) = self.get(i).filter(|s| s.fate == Fate::Pending).copied() {
                return Some((i, slot));
            }
        }
        None
    }

    /// When the next attempt becomes overdue at `timeout_ms`, if any waits.
    pub(super) fn next_deadline(&self, timeout_ms: u32) -> Option<u32> {
        self.attempts
            .front()
            .map(|&(_, sent)| sent.saturating_add(timeout_ms))
    }

    /// Frees the slots of decided probes at the start of the window.
    pub(super) fn advance(&mut self) {
        while self.base < self.head {
            let n = self.slots.len() as u64;
            if matches!(
                self.slots[(self.base % n) as usize].fate,
                Fate::Pending | Fate::Benched
            ) {
                break;
            }
            self.base += 1;
        }
    }

    /// The first probe of the window, when it is on the bench.
    pub(super) fn benched_base(&mut self) -> Option<(u64, Slot)> {
        let base = self.base;
        self.get(base)
            .filter(|s| s.fate == Fate::Benched)
            .map(|s| (base, *s))
    }

    /// The benched probes of the window, oldest first (a copy: the caller
    /// may decide them as it goes).
    pub(super) fn benched(&self) -> Vec<(u64, Slot)> {
        let n = self.slots.len() as u64;
        (self.base..self.head)
            .map(|i| (i, self.slots[(i % n) as usize]))
            .filter(|(_, s)| s.fate == Fate::Benched)
            .collect()
    }

    /// Whether no attempt awaits its timeout.
    pub(super) fn nothing_in_flight(&self) -> bool {
        self.attempts.is_empty()
    }

    /// Whether every opened probe is decided.
    pub(super) fn settled(&self) -> bool {
        self.base == self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_and_retries() {
        let mut w = Window::new(3);
        for _ in 0..3 {
            w.push(0, 1000);
        }
        assert!(!w.has_room());
        assert_eq!(w.next_overdue(99, 100), None);
        assert_eq!(w.next_deadline(100), Some(100));
        w.get(1).unwrap().fate = Fate::Answered;
        // Sent with a 1 s timeout, overdue at the current 100 ms one.
        assert_eq!(
            w.next_overdue(100, 100).map(|(i, s)| (i, s.tries)),
            Some((0, 1))
        );
        // Probe 1 was answered: skipped. Probe 2 is overdue too.
        assert_eq!(w.next_overdue(100, 100).map(|(i, _)| i), Some(2));
        w.resend(0, 100, 100);
        assert_eq!(w.get(0).unwrap().tries, 2);
        assert_eq!(w.get(0).unwrap().patience_ms, 100);
        w.advance();
        assert_eq!(w.base, 0, "probe 0 still pending");
        w.get(0).unwrap().fate = Fate::Silent;
        w.get(2).unwrap().fate = Fate::Silent;
        w.advance();
        assert!(w.settled() && w.has_room());
        assert_eq!(w.get(1).map(|s| s.fate), None, "out of the window");
        assert_eq!(
            w.next_overdue(1000, 100),
            None,
            "decided probes are not retried"
        );
    }

    #[test]
    fn benched_probes_hold_their_place_until_decided() {
        let mut w = Window::new(2);
        w.push(0, 100);
        w.push(0, 100);
        assert_eq!(w.next_overdue(100, 100).map(|(i, _)| i), Some(0));
        w.decide(0, Fate::Benched);
        w.decide(1, Fate::Answered);
        w.advance();
        assert_eq!(w.base, 0, "a benched probe is not decided");
        assert!(!w.has_room());
        assert_eq!(w.benched_base().map(|(i, s)| (i, s.tries)), Some((0, 1)));
        assert_eq!(w.benched().iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0]);
        w.decide(0, Fate::Silent);
        assert_eq!(w.benched_base(), None);
        w.advance();
        assert!(w.settled());
        assert!(!w.nothing_in_flight(), "probe 1's attempt is still queued");
        assert_eq!(w.next_overdue(100, 100), None);
        assert!(w.nothing_in_flight());
    }
}
