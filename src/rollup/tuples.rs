//! The bound on open dimension tuples (`rollups.max_open_tuples`). Pure.
//!
//! In: the (spec, dimension values) of every window the [`super::windows`]
//! state machine opens or closes, and of every event admitted before it is
//! stored. Out: how many distinct tuples are open, and a refusal for an event
//! that would open one more past the bound.
//!
//! Why: every distinct combination of dimension values costs a window at each
//! level (minute, hour, day, month), and the month window of a tuple stays in
//! memory until its month is final. Without a bound, one client sending a new
//! value in every event (a user id used as a dimension, a random string) grows
//! the daemon's memory without limit. With it, an event that would open a new
//! tuple past the bound is refused before it is stored (so `events` and the
//! rollups still hold the same events), while events of tuples already open
//! keep being accepted.
//!
//! A tuple counts as open while any window holds it or any admitted event
//! still being stored reserves it; reservations make the bound strict under
//! concurrent requests.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap as FastMap};

/// A spec and one combination of its dimension values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TupleKey {
    spec: u16,
    dims: Box<[Option<Box<str>>]>,
}

impl Hash for TupleKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tuple(self.spec, self.dims.iter().map(|d| d.as_deref()), state);
    }
}

/// A dimension value as text, whether borrowed from an event or owned by a window key.
pub trait DimText {
    fn text(&self) -> Option<&str>;
}

impl DimText for Option<Cow<'_, str>> {
    fn text(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl DimText for Option<Box<str>> {
    fn text(&self) -> Option<&str> {
        self.as_deref()
    }
}

/// A borrowed tuple, so looking one up allocates nothing.
struct TupleRef<'a, D> {
    spec: u16,
    dims: &'a [D],
}

impl<D: DimText> Hash for TupleRef<'_, D> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tuple(self.spec, self.dims.iter().map(DimText::text), state);
    }
}

impl<D: DimText> Equivalent<Arc<TupleKey>> for TupleRef<'_, D> {
    fn equivalent(&self, key: &Arc<TupleKey>) -> bool {
        self.spec == key.spec
            && self.dims.len() == key.dims.len()
            && self
                .dims
                .iter()
                .zip(key.dims.iter())
                .all(|(a, b)| a.text() == b.as_deref())
    }
}

impl<D: DimText> TupleRef<'_, D> {
    fn to_owned_key(&self) -> Arc<TupleKey> {
        Arc::new(TupleKey {
            spec: self.spec,
            dims: self.dims.iter().map(|d| d.text().map(Box::from)).collect(),
        })
    }
}

fn hash_tuple<'a, H: Hasher>(
    spec: u16,
    dims: impl Iterator<Item = Option<&'a str>>,
    state: &mut H,
) {
    spec.hash(state);
    for d in dims {
        d.hash(state);
    }
}

#[derive(Debug, Default)]
struct TupleUse {
    /// Windows (any level) holding this tuple.
    windows: u32,
    /// Admitted events of this tuple still being stored.
    reserved: u32,
}

/// Refused: the event would open a new tuple and `limit` are already open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyTuples {
    pub limit: usize,
}

/// The open tuples and their bound.
#[derive(Debug)]
pub struct OpenTuples {
    open: FastMap<Arc<TupleKey>, TupleUse>,
    limit: usize,
}

impl OpenTuples {
    /// `limit`: most tuples open at once (`usize::MAX`: no bound, as in backfill).
    pub fn new(limit: usize) -> OpenTuples {
        OpenTuples {
            open: FastMap::new(),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Holds a tuple for an event about to be stored; refused when the tuple
    /// is not open and the bound is reached.
    pub fn reserve<D: DimText>(
        &mut self,
        spec: u16,
        dims: &[D],
    ) -> Result<Arc<TupleKey>, TooManyTuples> {
        let query = TupleRef { spec, dims };
        if let Some((key, used)) = self.open.get_key_value_mut(&query) {
            used.reserved += 1;
            return Ok(key.clone());
        }
        if self.open.len() >= self.limit {
            return Err(TooManyTuples { limit: self.limit });
        }
        let key = query.to_owned_key();
        self.open.insert(
            key.clone(),
            TupleUse {
                windows: 0,
                reserved: 1,
            },
        );
        Ok(key)
    }

    /// Gives back a reservation (the event was counted or not stored).
    pub fn unreserve(&mut self, key: &Arc<TupleKey>) {
        if let Some(used) = self.open.get_mut(key) {
            used.reserved = used.reserved.saturating_sub(1);
            if used.reserved == 0 && used.windows == 0 {
                self.open.remove(key);
            }
        }
    }

    /// A window of this tuple was opened. Never refused: the events it holds
    /// are stored already (live events were admitted; recovery replays stored ones).
    pub fn window_opened<D: DimText>(&mut self, spec: u16, dims: &[D]) {
        let query = TupleRef { spec, dims };
        match self.open.get_mut(&query) {
            Some(used) => used.windows += 1,
            None => {
                self.open.insert(
                    query.to_owned_key(),
                    TupleUse {
                        windows: 1,
                        reserved: 0,
                    },
                );
            }
        }
    }

    /// A window of this tuple was written final and dropped.
    pub fn window_closed<D: DimText>(&mut self, spec: u16, dims: &[D]) {
        let query = TupleRef { spec, dims };
        let Some(used) = self.open.get_mut(&query) else {
            return;
        };
        used.windows = used.windows.saturating_sub(1);
        if used.windows == 0 && used.reserved == 0 {
            self.open.remove(&query);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(v: &str) -> Vec<Option<Cow<'_, str>>> {
        vec![Some(Cow::Borrowed("page_view")), Some(Cow::Borrowed(v))]
    }

    #[test]
    fn a_new_tuple_past_the_bound_is_refused_and_open_ones_still_pass() {
        let mut t = OpenTuples::new(2);
        let a = t.reserve(0, &dims("FR")).unwrap();
        let b = t.reserve(0, &dims("DE")).unwrap();
        assert_eq!(t.reserve(0, &dims("US")), Err(TooManyTuples { limit: 2 }));
        // The same values under another spec are another tuple.
        assert!(t.reserve(1, &dims("FR")).is_err());
        let again = t.reserve(0, &dims("FR")).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(t.len(), 2);
        t.unreserve(&a);
        t.unreserve(&again);
        t.unreserve(&b);
        assert!(t.is_empty(), "reservations alone hold tuples open");
        assert!(t.reserve(0, &dims("US")).is_ok());
    }

    #[test]
    fn windows_hold_a_tuple_until_the_last_one_closes() {
        let mut t = OpenTuples::new(1);
        let r = t.reserve(0, &dims("FR")).unwrap();
        let owned: Vec<Option<Box<str>>> = vec![Some("page_view".into()), Some("FR".into())];
        t.window_opened(0, &dims("FR")); // minute
        t.window_opened(0, &owned); // hour
        t.unreserve(&r);
        assert_eq!(t.len(), 1);
        assert!(t.reserve(0, &dims("DE")).is_err());
        t.window_closed(0, &owned);
        assert_eq!(t.len(), 1, "the hour window still holds it");
        t.window_closed(0, &dims("FR"));
        assert!(t.is_empty());
        assert!(t.reserve(0, &dims("DE")).is_ok());
    }

    #[test]
    fn windows_open_past_the_bound_are_counted_not_refused() {
        // Recovery replays stored events whatever the bound.
        let mut t = OpenTuples::new(1);
        t.window_opened(0, &dims("FR"));
        t.window_opened(0, &dims("DE"));
        assert_eq!(t.len(), 2);
        assert!(t.reserve(0, &dims("US")).is_err());
        assert!(t.reserve(0, &dims("DE")).is_ok());
    }
}
