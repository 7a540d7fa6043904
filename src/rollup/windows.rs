//! The window state machine: minute tumbling windows on event time, merged
//! upwards into hours, days and months. Pure: no clock, no I/O. The driver
//! (`engine.rs`) passes the time in and writes what [`Windows::flush`] returns.
//!
//! Watermark W = max(min(newest event time, now) − lateness, now − lateness −
//! idle). A minute window [s, s+60 s) becomes final once s + 60 s ≤ W and no
//! admitted event for it is still being stored. An event whose window is final
//! is late: [`Windows::admit`] refuses it before it is stored, so `events` and
//! the rollups always hold the same events. An hour is final once W passed its
//! end and all its minutes are final; days and months likewise.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bson::RawDocumentBuf;
use hashbrown::{Equivalent, HashMap as FastMap};

use super::aggregate::{dimension_values, dims_digest, Aggregate};
use super::ids::{IdLedger, IdState};
use super::level::{Level, MINUTE_MS};
use super::sessions::Sessions;
use super::spec::Spec;
use super::tuples::{OpenTuples, TooManyTuples, TupleKey};
use crate::event::{short_eq, Event};

/// Identifies a window: spec, level bucket start and dimension tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowKey {
    pub spec: u16,
    pub start: i64,
    pub dims: Box<[Option<Box<str>>]>,
}

impl Hash for WindowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(
            self.spec,
            self.start,
            self.dims.iter().map(|d| d.as_deref()),
            state,
        );
    }
}

/// A borrowed key, so looking up a window for an event allocates nothing.
struct KeyRef<'a, 'b> {
    spec: u16,
    start: i64,
    dims: &'a [Option<Cow<'b, str>>],
}

impl Hash for KeyRef<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(
            self.spec,
            self.start,
            self.dims.iter().map(|d| d.as_deref()),
            state,
        );
    }
}

impl Equivalent<WindowKey> for KeyRef<'_, '_> {
    fn equivalent(&self, key: &WindowKey) -> bool {
        self.spec == key.spec
            && self.start == key.start
            && self.dims.len() == key.dims.len()
            && self
                .dims
                .iter()
                .zip(key.dims.iter())
                .all(|(a, b)| match (a, b) {
                    // Dimension values are short: an inline loop beats a call to memcmp.
                    (Some(a), Some(b)) => short_eq(a, b),
                    (None, None) => true,
                    _ => false,
                })
    }
}

impl KeyRef<'_, '_> {
    fn to_owned_key(&self) -> WindowKey {
        WindowKey {
            spec: self.spec,
            start: self.start,
            dims: self
                .dims
                .iter()
                .map(|d| d.as_deref().map(Box::from))
                .collect(),
        }
    }
}

fn hash_key<'a, H: Hasher>(
    spec: u16,
    start: i64,
    dims: impl Iterator<Item = Option<&'a str>>,
    state: &mut H,
) {
    spec.hash(state);
    start.hash(state);
    for d in dims {
        d.hash(state);
    }
}

#[derive(Debug)]
pub struct Window {
    pub agg: Aggregate,
    /// Changed since last flushed.
    dirty: bool,
    /// Closed; removed once its final document is written.
    is_final: bool,
    /// Bumped on every change, so a write that raced a change is not taken as current.
    version: u64,
    /// The tuple's part of the document id, worked out at the first flush.
    dims_digest: Option<[u8; 8]>,
}

/// An event refused because its window is already final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Late {
    pub window_start_ms: i64,
    pub watermark_ms: i64,
}

/// Why an event was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Late(Late),
    /// Its id is stored already, in an open minute: it is not stored or counted again.
    Duplicate,
    /// Its id belongs to an event being stored right now; the outcome is not known yet.
    InFlight,
    /// It would open a new dimension tuple past `rollups.max_open_tuples`.
    TooManyTuples(TooManyTuples),
}

/// An admission when only its event's time and id key are left (see `record.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub ms: i64,
    pub id: Option<u128>,
}

impl Admission {
    pub fn of(event: &Event) -> Admission {
        Admission {
            ms: event.timestamp.timestamp_millis(),
            id: event.id_key(),
        }
    }
}

/// A document to write, and what to mark once it is written.
#[derive(Debug)]
pub struct Pending {
    pub level: Level,
    pub key: WindowKey,
    pub version: u64,
    pub is_final: bool,
    pub doc: RawDocumentBuf,
}

#[derive(Debug, Default)]
pub struct FlushBatch {
    pub rollups: Vec<Pending>,
    pub sessions: Vec<Pending>,
}

/// Counters since creation, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub finalized_minutes: u64,
    pub late: u64,
}

pub struct Windows {
    specs: Vec<Spec>,
    writer: String,
    lateness_ms: i64,
    idle_ms: i64,
    levels: [FastMap<WindowKey, Window>; 4],
    /// Non-final child windows per (spec, parent bucket start), for hour, day, month.
    open_children: [HashMap<(u16, i64), u32>; 4],
    /// Admitted events not yet recorded or released, per minute start.
    pending: HashMap<i64, u32>,
    /// No minute becomes final while set: after a restart, the previous run's last
    /// inserts may still be stored after recovery read `events` (see `recover.rs`).
    held: bool,
    max_event_ms: i64,
    watermark_ms: i64,
    version: u64,
    /// End of the newest minute written final, for the materialization lag.
    newest_final_end_ms: Option<i64>,
    /// Distinct (spec, dimension tuple) held by any window or admission.
    tuples: OpenTuples,
    /// Ids of the events in open minutes (see `ids.rs`).
    ids: IdLedger,
    pub stats: WindowStats,
    pub sessions: Option<Sessions>,
}

impl Windows {
    pub fn new(
        specs: Vec<Spec>,
        writer: &str,
        lateness_ms: i64,
        idle_ms: i64,
        start_watermark_ms: i64,
    ) -> Windows {
        Windows {
            specs,
            writer: writer.to_string(),
            lateness_ms,
            idle_ms,
            levels: Default::default(),
            open_children: Default::default(),
            pending: HashMap::new(),
            held: false,
            max_event_ms: i64::MIN,
            watermark_ms: start_watermark_ms,
            version: 0,
            newest_final_end_ms: None,
            tuples: OpenTuples::new(usize::MAX),
            ids: IdLedger::default(),
            stats: WindowStats::default(),
            sessions: None,
        }
    }

    /// Holds every minute open (or lets them close again): see `held`.
    pub fn hold_minutes(&mut self, held: bool) {
        self.held = held;
    }

    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    pub fn newest_final_end_ms(&self) -> Option<i64> {
        self.newest_final_end_ms
    }

    /// Bounds the dimension tuples live events may open (`usize::MAX`: none).
    pub fn set_max_open_tuples(&mut self, limit: usize) {
        self.tuples.set_limit(limit);
    }

    pub fn max_open_tuples(&self) -> usize {
        self.tuples.limit()
    }

    /// Distinct (spec, dimension tuple) open at any level or reserved.
    pub fn open_tuples(&self) -> usize {
        self.tuples.len()
    }

    pub fn open_windows(&self, level: Level) -> usize {
        self.levels[level.index()].len()
    }

    /// Approximate heap bytes of all windows of a level.
    pub fn heap_size(&self, level: Level) -> usize {
        self.levels[level.index()]
            .iter()
            .map(|(k, w)| {
                w.agg.heap_size()
                    + k.dims
                        .iter()
                        .map(|d| d.as_ref().map_or(16, |s| s.len() + 16))
                        .sum::<usize>()
                    + 48
            })
            .sum()
    }

    /// Event ids held for deduplication, for `/metrics`.
    pub fn ids_held(&self) -> usize {
        self.ids.len()
    }

    /// Reserves room for an event about to be stored, or says it is late.
    pub fn admit(&mut self, event_ms: i64) -> Result<(), Late> {
        let start = Level::Minute.bucket_start(event_ms);
        // A window held open by events still being stored is not final yet.
        if start + MINUTE_MS <= self.watermark_ms && !self.pending.contains_key(&start) {
            self.stats.late += 1;
            return Err(Late {
                window_start_ms: start,
                watermark_ms: self.watermark_ms,
            });
        }
        *self.pending.entry(start).or_insert(0) += 1;
        Ok(())
    }

    /// Admits an event about to be stored: its minute must not be final, and
    /// each of its tuples must be open already or fit under the bound. On
    /// success, the tuples it reserved (give them back with [`Windows::unreserve`]
    /// once the event is counted or known not stored; the minute's admission
    /// is given back by [`Windows::record`] or [`Windows::release`]).
    pub fn admit_event(
        &mut self,
        event: &Event,
        reserved: &mut Vec<Arc<TupleKey>>,
    ) -> Result<(), Refused> {
        let ms = event.timestamp.timestamp_millis();
        let minute = Level::Minute.bucket_start(ms);
        let id = event.id_key();
        if let Some(key) = id {
            match self.ids.get(minute, key) {
                Some(IdState::Stored) => return Err(Refused::Duplicate),
                Some(IdState::InFlight) => return Err(Refused::InFlight),
                None => {}
            }
        }
        self.admit(ms).map_err(Refused::Late)?;
        let first = reserved.len();
        for (i, spec) in self.specs.iter().enumerate() {
            if !spec.covers(&event.event_type) {
                continue;
            }
            match self
                .tuples
                .reserve(i as u16, &dimension_values(spec, event)[..])
            {
                Ok(key) => reserved.push(key),
                Err(e) => {
                    for key in reserved.drain(first..) {
                        self.tuples.unreserve(&key);
                    }
                    self.release(ms, None);
                    return Err(Refused::TooManyTuples(e));
                }
            }
        }
        if let Some(key) = id {
            self.ids.set(minute, key, IdState::InFlight);
        }
        Ok(())
    }

    /// Gives back tuple reservations made by [`Windows::admit_event`].
    pub fn unreserve(&mut self, reserved: &[Arc<TupleKey>]) {
        for key in reserved {
            self.tuples.unreserve(key);
        }
    }

    /// Gives back an admission whose event was not stored (with its id key, if any).
    pub fn release(&mut self, event_ms: i64, id: Option<u128>) {
        let start = Level::Minute.bucket_start(event_ms);
        if let Some(key) = id {
            self.ids.release(start, key);
        }
        if let Some(n) = self.pending.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&start);
            }
        }
    }

    /// Adds an admitted event once it is stored.
    pub fn record(&mut self, event: &Event) {
        let ms = event.timestamp.timestamp_millis();
        self.release(ms, None);
        self.apply(event);
    }

    /// Adds an event without admission (recovery and backfill).
    pub fn apply(&mut self, event: &Event) {
        let ms = event.timestamp.timestamp_millis();
        self.max_event_ms = self.max_event_ms.max(ms);
        let start = Level::Minute.bucket_start(ms);
        if let Some(key) = event.id_key() {
            self.ids.set(start, key, IdState::Stored);
        }
        self.version += 1;
        let version = self.version;
        for (i, spec) in self.specs.iter().enumerate() {
            if !spec.covers(&event.event_type) {
                continue;
            }
            let dims = dimension_values(spec, event);
            let query = KeyRef {
                spec: i as u16,
                start,
                dims: &dims,
            };
            let minutes = &mut self.levels[0];
            let window = match minutes.get_mut(&query) {
                Some(w) => w,
                None => {
                    let hour = Level::Hour.bucket_start(start);
                    *self.open_children[Level::Hour.index()]
                        .entry((i as u16, hour))
                        .or_insert(0) += 1;
                    self.tuples.window_opened(i as u16, &dims[..]);
                    minutes.entry(query.to_owned_key()).or_insert(Window {
                        agg: Aggregate::new(spec),
                        dirty: true,
                        is_final: false,
                        version,
                        dims_digest: None,
                    })
                }
            };
            window.agg.record(spec, event);
            window.dirty = true;
            window.version = version;
        }
        if let Some(s) = &mut self.sessions {
            s.record(&self.specs, event);
        }
    }

    /// Adds an event to session state only (recovery, before the first open minute).
    pub fn apply_to_sessions(&mut self, event: &Event) {
        if let Some(s) = &mut self.sessions {
            s.record(&self.specs, event);
        }
    }

    /// Merges a stored child bucket into its parent window (recovery): `level`
    /// is the parent's level.
    pub fn load_into_parent(
        &mut self,
        level: Level,
        spec: u16,
        child_start: i64,
        dims: Box<[Option<Box<str>>]>,
        agg: &Aggregate,
    ) {
        let key = WindowKey {
            spec,
            start: level.bucket_start(child_start),
            dims,
        };
        let spec_ref = &self.specs[spec as usize];
        let windows = &mut self.levels[level.index()];
        if !windows.contains_key(&key) {
            self.tuples.window_opened(spec, &key.dims[..]);
            // A window open again after a restart counts as an open child of its parent.
            if let Some(parent) = level.parent() {
                *self.open_children[parent.index()]
                    .entry((spec, parent.bucket_start(key.start)))
                    .or_insert(0) += 1;
            }
        }
        let w = windows.entry(key).or_insert_with(|| Window {
            agg: Aggregate::new(spec_ref),
            dirty: false,
            is_final: false,
            version: 0,
            dims_digest: None,
        });
        w.agg.merge(agg);
    }

    /// Moves the watermark and closes what it passed.
    pub fn advance(&mut self, now_ms: i64) {
        let by_events = if self.max_event_ms == i64::MIN {
            i64::MIN
        } else {
            self.max_event_ms.min(now_ms) - self.lateness_ms
        };
        let by_clock = now_ms - self.lateness_ms - self.idle_ms;
        self.watermark_ms = self.watermark_ms.max(by_events).max(by_clock);
        let w = self.watermark_ms;
        // An id is forgotten with its minute: a copy arriving later is refused as
        // late, and `rollup::record` looks its id up in `events`.
        let (held, pending) = (self.held, &self.pending);
        self.ids
            .retain_minutes(|m| held || m + MINUTE_MS > w || pending.contains_key(&m));

        for level in Level::ALL {
            let closing: Vec<WindowKey> = self.levels[level.index()]
                .iter()
                .filter(|(k, win)| {
                    !win.is_final
                        && level.bucket_end(k.start) <= w
                        && match level {
                            Level::Minute => !self.held && !self.pending.contains_key(&k.start),
                            _ => {
                                self.open_children[level.index()].get(&(k.spec, k.start)).copied().unwrap_or(0) == 0
                                    // A minute with events still being stored may have no window yet.
                                    && !self.pending.keys().any(|m| level.bucket_start(*m) == k.start)
                            }
                        }
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in closing {
                self.version += 1;
                let version = self.version;
                // The level and its parent are borrowed apart, so the closing
                // window merges into its parent without a copy.
                let (this, above) = self.levels.split_at_mut(level.index() + 1);
                let Some(win) = this[level.index()].get_mut(&key) else {
                    continue;
                };
                win.is_final = true;
                win.dirty = true;
                win.version = version;
                if level == Level::Minute {
                    self.stats.finalized_minutes += 1;
                }
                let Some(parent) = level.parent() else {
                    continue;
                };
                let parent_start = parent.bucket_start(key.start);
                if let Some(n) =
                    self.open_children[parent.index()].get_mut(&(key.spec, parent_start))
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.open_children[parent.index()].remove(&(key.spec, parent_start));
                    }
                }
                let parent_key = WindowKey {
                    spec: key.spec,
                    start: parent_start,
                    dims: key.dims.clone(),
                };
                let spec = &self.specs[key.spec as usize];
                let windows = &mut above[0];
                let p = match windows.get_mut(&parent_key) {
                    Some(p) => p,
                    None => {
                        if let Some(g) = parent.parent() {
                            *self.open_children[g.index()]
                                .entry((key.spec, g.bucket_start(parent_start)))
                                .or_insert(0) += 1;
                        }
                        self.tuples.window_opened(key.spec, &parent_key.dims[..]);
                        windows.entry(parent_key).or_insert(Window {
                            agg: Aggregate::new(spec),
                            dirty: true,
                            is_final: false,
                            version,
                            dims_digest: None,
                        })
                    }
                };
                p.agg.merge(&win.agg);
                p.dirty = true;
                p.version = version;
            }
        }
        if let Some(s) = &mut self.sessions {
            s.advance(&self.specs, w);
        }
    }

    /// Documents for every window changed since the last flush, partial or final.
    pub fn flush(&mut self, now_ms: i64) -> FlushBatch {
        let mut batch = FlushBatch::default();
        for level in Level::ALL {
            for (key, win) in self.levels[level.index()]
                .iter_mut()
                .filter(|(_, w)| w.dirty)
            {
                win.dirty = false;
                let spec = &self.specs[key.spec as usize];
                let digest = *win
                    .dims_digest
                    .get_or_insert_with(|| dims_digest(&key.dims));
                batch.rollups.push(Pending {
                    level,
                    key: key.clone(),
                    version: win.version,
                    is_final: win.is_final,
                    doc: win.agg.to_document(
                        spec,
                        level,
                        key.start,
                        &key.dims,
                        &digest,
                        &self.writer,
                        win.is_final,
                        now_ms,
                    ),
                });
            }
        }
        if let Some(s) = &mut self.sessions {
            batch.sessions = s.flush(&self.specs, &self.writer, now_ms);
        }
        batch
    }

    /// The batch is stored: forget final windows that did not change since.
    pub fn commit(&mut self, batch: &FlushBatch) {
        for p in &batch.rollups {
            let windows = &mut self.levels[p.level.index()];
            if p.is_final && windows.get(&p.key).is_some_and(|w| w.version == p.version) {
                windows.remove(&p.key);
                self.tuples.window_closed(p.key.spec, &p.key.dims[..]);
                if p.level == Level::Minute {
                    let end = Level::Minute.bucket_end(p.key.start);
                    self.newest_final_end_ms =
                        Some(self.newest_final_end_ms.map_or(end, |e| e.max(end)));
                }
            }
        }
        if let Some(s) = &mut self.sessions {
            s.commit(&batch.sessions);
        }
    }

    /// The batch was not stored: write those windows again next time.
    pub fn abandon(&mut self, batch: &FlushBatch) {
        for p in &batch.rollups {
            if let Some(w) = self.levels[p.level.index()].get_mut(&p.key) {
                w.dirty = true;
            }
        }
        if let Some(s) = &mut self.sessions {
            s.abandon(&batch.sessions);
        }
    }

    /// Every minute before this instant is final and written (call after a commit).
    pub fn checkpoint_ms(&self) -> i64 {
        let earliest_open = self.levels[0]
            .keys()
            .map(|k| k.start)
            .min()
            .unwrap_or(i64::MAX);
        // A minute with events still being stored may have no window yet; a
        // crash now must still replay it.
        let earliest_pending = self.pending.keys().copied().min().unwrap_or(i64::MAX);
        self.watermark_ms.min(earliest_open).min(earliest_pending)
    }

    /// Every session bucket before this instant is final and written.
    pub fn sessions_checkpoint_ms(&self) -> Option<i64> {
        self.sessions.as_ref().map(Sessions::checkpoint_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Limits, Validator};
    use crate::rollup::spec::{Spec, SpecConfig};
    use chrono::{TimeZone, Utc};

    const T0: i64 = 1_733_754_600_000; // 2024-12-09T14:30:00Z

    fn spec() -> Spec {
        Spec::new(&SpecConfig {
            dimensions: vec!["eventType".into(), "country".into()],
            ..SpecConfig::default()
        })
        .unwrap()
    }

    fn event_json(ms: i64, country: &str, load: f64) -> String {
        format!(
            r#"{{"timestamp": {ms}, "metadata": {{"eventType": "page_view", "dimensions": {{"country": "{country}", "userId": "u{ms}"}}}}, "metrics": {{"pageLoadTime": {load}}}}}"#
        )
    }

    fn feed(w: &mut Windows, ms: i64, country: &str, load: f64) -> Result<(), Late> {
        let text = event_json(ms, country, load);
        let v = Validator {
            limits: Limits::default(),
            max_age: chrono::Duration::days(3650),
        };
        let now = Utc.timestamp_millis_opt(ms).unwrap();
        let e = v.event(0, text.as_bytes(), now).unwrap();
        w.admit(ms)?;
        w.record(&e);
        Ok(())
    }

    fn docs(b: &FlushBatch, level: Level) -> Vec<bson::Document> {
        b.rollups
            .iter()
            .filter(|p| p.level == level)
            .map(|p| p.doc.to_document().unwrap())
            .collect()
    }

    #[test]
    fn minute_becomes_final_after_lateness_and_feeds_the_hour() {
        let mut w = Windows::new(vec![spec()], "w1", 120_000, 3_600_000, i64::MIN);
        feed(&mut w, T0 + 1_000, "FR", 100.0).unwrap();
        feed(&mut w, T0 + 2_000, "FR", 300.0).unwrap();
        feed(&mut w, T0 + 3_000, "DE", 50.0).unwrap();
        w.advance(T0 + 3_000);
        let b = w.flush(T0 + 3_000);
        let minutes = docs(&b, Level::Minute);
        assert_eq!(minutes.len(), 2);
        assert!(minutes.iter().all(|d| !d.get_bool("final").unwrap()));
        w.commit(&b);
        assert_eq!(
            w.open_windows(Level::Minute),
            2,
            "partial windows stay open"
        );

        // An event 3 minutes later pushes the watermark past the first minute's end + lateness.
        feed(&mut w, T0 + 181_000, "FR", 10.0).unwrap();
        w.advance(T0 + 181_000);
        let b = w.flush(T0 + 181_000);
        let finals: Vec<_> = docs(&b, Level::Minute)
            .into_iter()
            .filter(|d| d.get_bool("final").unwrap())
            .collect();
        assert_eq!(finals.len(), 2);
        let fr = finals
            .iter()
            .find(|d| {
                d.get_document("dimensions")
                    .unwrap()
                    .get_str("country")
                    .unwrap()
                    == "FR"
            })
            .unwrap();
        let m = fr.get_document("metrics").unwrap();
        assert_eq!(m.get_i64("count").unwrap(), 2);
        let plt = m.get_document("pageLoadTime").unwrap();
        assert_eq!(
            (
                plt.get_f64("sum").unwrap(),
                plt.get_f64("min").unwrap(),
                plt.get_f64("max").unwrap()
            ),
            (400.0, 100.0, 300.0)
        );
        let hours = docs(&b, Level::Hour);
        assert_eq!(
            hours.len(),
            2,
            "each finalized minute updates its hour (partial)"
        );
        assert!(hours.iter().all(|d| !d.get_bool("final").unwrap()));
        w.commit(&b);
        assert_eq!(w.open_windows(Level::Minute), 1);
        // Bounded by the watermark: minutes before it are final and written.
        assert_eq!(w.checkpoint_ms(), T0 + 61_000);

        // Too late for the first minute now.
        assert_eq!(
            feed(&mut w, T0 + 5_000, "FR", 1.0),
            Err(Late {
                window_start_ms: T0,
                watermark_ms: T0 + 61_000
            })
        );
    }

    #[test]
    fn pending_admissions_hold_a_window_open() {
        let mut w = Windows::new(vec![spec()], "w1", 0, 3_600_000, i64::MIN);
        w.admit(T0 + 1_000).unwrap();
        feed(&mut w, T0 + 120_000, "FR", 1.0).unwrap();
        w.advance(T0 + 120_000);
        // The first minute is past the watermark but not final while its event is in flight.
        assert!(w.admit(T0 + 2_000).is_ok());
        w.release(T0 + 2_000, None);
        w.release(T0 + 1_000, None);
        w.advance(T0 + 120_000);
        assert!(w.admit(T0 + 2_000).is_err());
    }

    #[test]
    fn held_minutes_stay_open_and_count_what_is_applied_meanwhile() {
        let mut w = Windows::new(vec![spec()], "w1", 0, 3_600_000, i64::MIN);
        feed(&mut w, T0 + 1_000, "FR", 1.0).unwrap();
        w.hold_minutes(true);
        // Two minutes on: the first is past the watermark, and held.
        feed(&mut w, T0 + 120_000, "DE", 1.0).unwrap();
        w.advance(T0 + 120_000);
        let b = w.flush(T0 + 120_000);
        assert!(docs(&b, Level::Minute)
            .iter()
            .all(|d| !d.get_bool("final").unwrap()));
        w.commit(&b);
        // A previous run's event, found after the recovery read: counted in its minute.
        let text = event_json(T0 + 2_000, "FR", 2.0);
        let late = Validator {
            limits: Limits::default(),
            max_age: chrono::Duration::days(3650),
        }
        .event(
            0,
            text.as_bytes(),
            Utc.timestamp_millis_opt(T0 + 2_000).unwrap(),
        )
        .unwrap();
        w.apply(&late);
        w.hold_minutes(false);
        w.advance(T0 + 120_000);
        let b = w.flush(T0 + 120_000);
        let minute = docs(&b, Level::Minute)
            .into_iter()
            .find(|d| d.get_datetime("timestamp").unwrap().timestamp_millis() == T0)
            .unwrap();
        assert!(minute.get_bool("final").unwrap());
        assert_eq!(
            minute
                .get_document("metrics")
                .unwrap()
                .get_i64("count")
                .unwrap(),
            2
        );
    }

    #[test]
    fn idle_stream_still_finalizes_by_the_clock() {
        let mut w = Windows::new(vec![spec()], "w1", 120_000, 60_000, i64::MIN);
        feed(&mut w, T0, "FR", 1.0).unwrap();
        w.advance(T0 + 60_000 + 120_000 + 60_000);
        let b = w.flush(0);
        assert!(docs(&b, Level::Minute)[0].get_bool("final").unwrap());
    }

    #[test]
    fn failed_write_is_retried() {
        let mut w = Windows::new(vec![spec()], "w1", 0, 0, i64::MIN);
        feed(&mut w, T0, "FR", 1.0).unwrap();
        w.advance(T0 + 60_000);
        let b = w.flush(0);
        w.abandon(&b);
        let again = w.flush(0);
        assert_eq!(again.rollups.len(), b.rollups.len());
        w.commit(&again);
        assert_eq!(w.open_windows(Level::Minute), 0);
    }

    fn parsed(ms: i64, country: &str) -> Event<'static> {
        let text: &'static str = Box::leak(event_json(ms, country, 1.0).into_boxed_str());
        let v = Validator {
            limits: Limits::default(),
            max_age: chrono::Duration::days(3650),
        };
        v.event(0, text.as_bytes(), Utc.timestamp_millis_opt(ms).unwrap())
            .unwrap()
    }

    #[test]
    fn new_tuples_past_the_bound_are_refused_until_every_level_has_closed() {
        let mut w = Windows::new(vec![spec()], "w1", 0, 0, i64::MIN);
        w.set_max_open_tuples(2);
        let mut reserved = Vec::new();
        for country in ["FR", "DE"] {
            let e = parsed(T0, country);
            w.admit_event(&e, &mut reserved).unwrap();
            w.record(&e);
        }
        let us = parsed(T0 + 1_000, "US");
        assert_eq!(
            w.admit_event(&us, &mut reserved),
            Err(Refused::TooManyTuples(TooManyTuples { limit: 2 }))
        );
        // A refused event holds neither its minute nor a tuple.
        assert_eq!(reserved.len(), 2);
        let fr = parsed(T0 + 2_000, "FR");
        w.admit_event(&fr, &mut reserved).unwrap();
        w.record(&fr);
        w.unreserve(&reserved);
        reserved.clear();
        assert_eq!(w.open_tuples(), 2, "the windows hold them");

        // The minute is final and written: the hour, day and month still hold the tuples.
        w.advance(T0 + 2 * MINUTE_MS);
        let b = w.flush(0);
        w.commit(&b);
        assert_eq!(w.open_windows(Level::Minute), 0);
        assert_eq!(w.open_tuples(), 2);
        assert!(w
            .admit_event(&parsed(T0 + 2 * MINUTE_MS, "US"), &mut reserved)
            .is_err());
        // Once the month is final and written, nothing holds them.
        let after_month = T0 + 40 * 24 * 3_600_000;
        for _ in 0..4 {
            w.advance(after_month);
            let b = w.flush(0);
            w.commit(&b);
        }
        assert_eq!(w.open_tuples(), 0);
        assert!(w
            .admit_event(&parsed(after_month, "US"), &mut reserved)
            .is_ok());
    }
}
