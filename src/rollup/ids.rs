//! The deduplication ledger: which event ids the open minutes hold.
//!
//! In: the id keys ([`crate::event::Event::id_key`]) of events as they are
//! admitted, stored, given back, or replayed by recovery. Out: whether an
//! event with an id is new, already stored, or being stored right now.
//!
//! It is kept per minute and forgotten with the minute: an event whose minute is
//! final is refused as late anyway, and `rollup::record` then asks `events`
//! whether its id was stored. So the ledger's memory is the ids of the open
//! minutes (16 bytes each, plus the map's overhead), and its window is exactly the
//! time a minute stays open.

use std::collections::HashMap;

/// What the ledger knows of one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdState {
    /// Admitted and being written: a second copy must wait for the outcome.
    InFlight,
    /// Stored in `events` and counted.
    Stored,
}

#[derive(Debug, Default)]
pub struct IdLedger {
    minutes: HashMap<i64, HashMap<u128, IdState>>,
    len: usize,
}

impl IdLedger {
    pub fn get(&self, minute: i64, key: u128) -> Option<IdState> {
        self.minutes.get(&minute)?.get(&key).copied()
    }

    pub fn set(&mut self, minute: i64, key: u128, state: IdState) {
        if self
            .minutes
            .entry(minute)
            .or_default()
            .insert(key, state)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Forgets an id admitted but not stored (a stored one stays).
    pub fn release(&mut self, minute: i64, key: u128) {
        let Some(ids) = self.minutes.get_mut(&minute) else {
            return;
        };
        if ids.get(&key) == Some(&IdState::InFlight) {
            ids.remove(&key);
            self.len -= 1;
            if ids.is_empty() {
                self.minutes.remove(&minute);
            }
        }
    }

    /// Forgets the minutes `is_open` says are final.
    pub fn retain_minutes(&mut self, mut is_open: impl FnMut(i64) -> bool) {
        let len = &mut self.len;
        self.minutes.retain(|minute, ids| {
            let keep = is_open(*minute);
            if !keep {
                *len -= ids.len();
            }
            keep
        });
    }

    /// Ids held, for `/metrics`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_in_flight_then_stored_and_forgotten_with_its_minute() {
        let mut l = IdLedger::default();
        assert_eq!(l.get(0, 7), None);
        l.set(0, 7, IdState::InFlight);
        assert_eq!(l.get(0, 7), Some(IdState::InFlight));
        assert_eq!(l.get(60_000, 7), None, "ids are per minute");
        l.set(0, 7, IdState::Stored);
        assert_eq!(l.len(), 1);
        l.release(0, 7);
        assert_eq!(l.get(0, 7), Some(IdState::Stored), "a stored id stays");
        l.set(60_000, 8, IdState::InFlight);
        l.release(60_000, 8);
        assert_eq!(l.get(60_000, 8), None, "a write that failed frees its id");
        l.retain_minutes(|m| m > 0);
        assert_eq!((l.get(0, 7), l.len()), (None, 0));
    }
}
