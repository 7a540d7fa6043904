//! The async driver around the pure [`Windows`]: owns the clock and the I/O.
//!
//! In: events admitted and stored through [`super::record`], and a timer. Out: every
//! `flush_interval` the changed windows written to the rollup collections and
//! `sessions`, then the checkpoint. Recovery (`recover.rs`) builds the
//! starting [`Windows`] from the checkpoint and the raw events.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bson::RawDocumentBuf;
use chrono::Utc;
use mongodb::Database;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::error::RollupError;
use super::level::Level;
use super::store::{replace_all, save_checkpoint, Checkpoint};
use super::tuples::TupleKey;
use super::windows::{Admission, FlushBatch, Refused, Windows};
use crate::event::Event;
use crate::store::CollectionNames;

pub struct RollupMetrics {
    pub late_dropped: Counter,
    pub finalized_minutes: Counter,
    pub documents_written: Counter,
    pub flush_failures: Counter,
    pub flush_seconds: Histogram,
    /// The in-memory part of a flush: building the changed buckets' documents.
    pub flush_build_seconds: Histogram,
    /// Buckets (rollup and session documents) per flush.
    pub flush_buckets: Histogram,
    pub open_minute_windows: Gauge,
    pub open_sessions: Gauge,
    /// Distinct (spec, dimension tuple) in memory, bounded by `rollups.max_open_tuples`.
    pub open_tuples: Gauge,
    /// The bound itself, so a dashboard can show how close the daemon is.
    pub max_open_tuples: Gauge,
    /// Events refused because they would open a tuple past the bound.
    pub tuple_limit_refused: Counter,
    /// Events not stored again because their id was stored already.
    pub duplicates: Counter,
    /// Event ids the open minutes hold for deduplication.
    pub ids_held: Gauge,
    /// now − end of the newest final minute, in seconds.
    pub materialization_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl RollupMetrics {
    pub fn register(registry: &mut Registry) -> RollupMetrics {
        let m = RollupMetrics {
            late_dropped: Counter::default(),
            finalized_minutes: Counter::default(),
            documents_written: Counter::default(),
            flush_failures: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            flush_build_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            flush_buckets: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            open_minute_windows: Gauge::default(),
            open_sessions: Gauge::default(),
            open_tuples: Gauge::default(),
            max_open_tuples: Gauge::default(),
            tuple_limit_refused: Counter::default(),
            duplicates: Counter::default(),
            ids_held: Gauge::default(),
            materialization_lag: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("rollup");
        r.register(
            "late_dropped",
            "Events refused because their minute was already final",
            m.late_dropped.clone(),
        );
        r.register(
            "finalized_minutes",
            "Minute windows written final",
            m.finalized_minutes.clone(),
        );
        r.register(
            "documents_written",
            "Rollup and session documents written",
            m.documents_written.clone(),
        );
        r.register(
            "flush_failures",
            "Flushes that could not write to MongoDB (retried)",
            m.flush_failures.clone(),
        );
        r.register(
            "flush_duration_seconds",
            "Time to write one flush",
            m.flush_seconds.clone(),
        );
        r.register(
            "flush_build_duration_seconds",
            "Time to build the documents of one flush (in memory, before writing)",
            m.flush_build_seconds.clone(),
        );
        r.register(
            "flush_buckets",
            "Rollup and session documents per flush",
            m.flush_buckets.clone(),
        );
        r.register(
            "open_minute_windows",
            "Minute windows in memory",
            m.open_minute_windows.clone(),
        );
        r.register(
            "open_sessions",
            "Sessions in progress",
            m.open_sessions.clone(),
        );
        r.register(
            "open_tuples",
            "Distinct dimension tuples held in memory (minute to month windows and events being stored)",
            m.open_tuples.clone(),
        );
        r.register(
            "max_open_tuples",
            "The bound on open dimension tuples (rollups.max_open_tuples)",
            m.max_open_tuples.clone(),
        );
        r.register(
            "tuple_limit_refused",
            "Events refused because they would open a dimension tuple past rollups.max_open_tuples",
            m.tuple_limit_refused.clone(),
        );
        r.register(
            "duplicates",
            "Events not stored or counted again because an event with their id was stored already",
            m.duplicates.clone(),
        );
        r.register(
            "ids_held",
            "Event ids held in memory for deduplication (those of the open minutes)",
            m.ids_held.clone(),
        );
        r.register(
            "materialization_lag_seconds",
            "Now minus the end of the newest final minute",
            m.materialization_lag.clone(),
        );
        m
    }
}

pub struct Rollups {
    windows: Mutex<Windows>,
    db: Database,
    names: CollectionNames,
    writer: String,
    pub metrics: RollupMetrics,
    last_finalized: AtomicI64,
    /// When the last flush was written (epoch ms, 0: none yet): partial minutes hold
    /// every event stored before it.
    last_flush_ms: AtomicI64,
    /// When a tuple-limit refusal was last logged (epoch ms): one line a minute at most.
    last_tuple_warning_ms: AtomicI64,
    /// Serialises flushes (the timer and the final flush at shutdown).
    flushing: tokio::sync::Mutex<()>,
    /// Every minute before this is final and written; the alert engine waits on it.
    final_until: tokio::sync::watch::Sender<i64>,
}

impl Rollups {
    pub fn new(
        windows: Windows,
        db: Database,
        names: CollectionNames,
        writer: &str,
        metrics: RollupMetrics,
        final_until: tokio::sync::watch::Sender<i64>,
    ) -> Rollups {
        metrics.open_tuples.set(windows.open_tuples() as i64);
        metrics
            .max_open_tuples
            .set(i64::try_from(windows.max_open_tuples()).unwrap_or(i64::MAX));
        Rollups {
            last_tuple_warning_ms: AtomicI64::new(i64::MIN),
            final_until,
            windows: Mutex::new(windows),
            db,
            names,
            writer: writer.to_string(),
            metrics,
            last_finalized: AtomicI64::new(0),
            last_flush_ms: AtomicI64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        // A panic while holding the lock would be a bug in pure code; keep serving.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits events about to be stored; `Some(why)` for those refused. The
    /// tuples the admitted ones reserved are pushed on `reserved`: give them
    /// back with [`Rollups::unreserve`] once the events are settled.
    pub(super) fn admit<'a, 'e: 'a>(
        &self,
        events: impl Iterator<Item = &'a Event<'e>>,
        reserved: &mut Vec<Arc<TupleKey>>,
    ) -> Vec<Option<Refused>> {
        let mut w = self.lock();
        let out: Vec<Option<Refused>> = events.map(|e| w.admit_event(e, reserved).err()).collect();
        let open = w.open_tuples();
        self.metrics.ids_held.set(w.ids_held() as i64);
        drop(w);
        let late = out
            .iter()
            .filter(|r| matches!(r, Some(Refused::Late(_))))
            .count();
        let too_many = out
            .iter()
            .filter(|r| matches!(r, Some(Refused::TooManyTuples(_))))
            .count();
        self.metrics.late_dropped.inc_by(late as u64);
        self.metrics.open_tuples.set(open as i64);
        if too_many > 0 {
            self.metrics.tuple_limit_refused.inc_by(too_many as u64);
            self.warn_tuple_limit(too_many, open);
        }
        out
    }

    /// One line a minute at most: a client flooding new tuples must not flood the log too.
    fn warn_tuple_limit(&self, refused: usize, open: usize) {
        let now = Utc::now().timestamp_millis();
        let last = self.last_tuple_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 60_000
            || self
                .last_tuple_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::warn!(
            refused,
            open_tuples = open,
            "events refused (429): they would open new dimension tuples past rollups.max_open_tuples; \
             events of open tuples are still accepted. Move high-cardinality values (user ids, \
             request ids) out of the spec's dimensions, or raise rollups.max_open_tuples \
             (see rollup_tuple_limit_refused in /metrics; logged at most once a minute)"
        );
    }

    /// Gives back tuple reservations of settled events.
    pub(super) fn unreserve(&self, reserved: &[Arc<TupleKey>]) {
        if reserved.is_empty() {
            return;
        }
        let mut w = self.lock();
        w.unreserve(reserved);
        let open = w.open_tuples();
        drop(w);
        self.metrics.open_tuples.set(open as i64);
    }

    /// Records admitted events MongoDB has stored.
    pub(super) fn stored<'a>(&self, events: impl IntoIterator<Item = &'a Event<'a>>) {
        let mut w = self.lock();
        for e in events {
            w.record(e);
        }
    }

    /// Counts events a previous run stored after recovery read `events`, then lets
    /// the minutes recovery held open become final.
    pub(super) fn count_late(&self, events: &[Event]) {
        let mut w = self.lock();
        for e in events {
            w.apply(e);
        }
        w.hold_minutes(false);
    }

    /// Gives back admissions (when only their times and ids are left).
    pub(super) fn release(&self, admissions: &[Admission]) {
        let mut w = self.lock();
        for a in admissions {
            w.release(a.ms, a.id);
        }
    }

    /// Gives back admissions of events that were not stored.
    pub(super) fn not_stored<'a>(&self, events: impl IntoIterator<Item = &'a Event<'a>>) {
        let mut w = self.lock();
        for e in events {
            w.release(e.timestamp.timestamp_millis(), e.id_key());
        }
    }

    /// Flushes on a timer until `stop` resolves, then flushes once more.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let started = Instant::now();
                    match self.flush_once(Utc::now().timestamp_millis()).await {
                        Err(e) => tracing::warn!("rollup flush failed, will retry: {e}"),
                        Ok(buckets) => {
                            let took = started.elapsed();
                            if took > interval {
                                tracing::warn!(
                                    took_ms = took.as_millis() as u64,
                                    buckets,
                                    interval_ms = interval.as_millis() as u64,
                                    "rollup flush took longer than its interval; rollups lag behind \
                                     (raise rollups.flush_interval_ms or spread the load over more daemons)"
                                );
                            }
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
        if let Err(e) = self.flush_once(Utc::now().timestamp_millis()).await {
            tracing::warn!("last rollup flush failed; recovery will rebuild from events: {e}");
        }
    }

    /// Advances the watermark, writes what changed, then the checkpoint.
    pub async fn flush_once(&self, now_ms: i64) -> Result<usize, RollupError> {
        let _one_at_a_time = self.flushing.lock().await;
        let started = Instant::now();
        let mut batch = {
            let mut w = self.lock();
            w.advance(now_ms);
            w.flush(now_ms)
        };
        self.metrics
            .flush_build_seconds
            .observe(started.elapsed().as_secs_f64());
        let written = batch.rollups.len() + batch.sessions.len();
        self.metrics.flush_buckets.observe(written as f64);
        match self.write(&mut batch).await {
            Ok(()) => {
                let (cp, finalized, newest, open, sessions, tuples) = {
                    let mut w = self.lock();
                    w.commit(&batch);
                    let cp = Checkpoint {
                        minutes_ms: w.checkpoint_ms(),
                        sessions_ms: w.sessions_checkpoint_ms(),
                        watermark_ms: w.watermark_ms(),
                    };
                    (
                        cp,
                        w.stats.finalized_minutes,
                        w.newest_final_end_ms(),
                        w.open_windows(Level::Minute),
                        w.sessions.as_ref().map_or(0, |s| s.open_sessions()),
                        w.open_tuples(),
                    )
                };
                let before = self
                    .last_finalized
                    .swap(finalized as i64, Ordering::Relaxed);
                self.metrics
                    .finalized_minutes
                    .inc_by((finalized as i64 - before).max(0) as u64);
                self.metrics.documents_written.inc_by(written as u64);
                self.last_flush_ms.fetch_max(now_ms, Ordering::Relaxed);
                self.metrics.open_minute_windows.set(open as i64);
                self.metrics.open_sessions.set(sessions as i64);
                self.metrics.open_tuples.set(tuples as i64);
                if let Some(end) = newest {
                    self.metrics
                        .materialization_lag
                        .set((now_ms - end) as f64 / 1000.0);
                }
                if written > 0 && cp.watermark_ms > i64::MIN / 2 {
                    save_checkpoint(&self.db, &self.names, &self.writer, cp, now_ms).await?;
                }
                if cp.minutes_ms > i64::MIN / 2 && cp.minutes_ms < i64::MAX / 2 {
                    self.final_until.send_if_modified(|v| {
                        let changed = cp.minutes_ms > *v;
                        *v = (*v).max(cp.minutes_ms);
                        changed
                    });
                }
                self.metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(written)
            }
            Err(e) => {
                self.lock().abandon(&batch);
                self.metrics.flush_failures.inc();
                Err(e)
            }
        }
    }

    /// Writes the batch's documents, taking them out of it: what stays is
    /// what commit and abandon read (keys, versions, finality), and a copy of
    /// every document cost as much as building it.
    async fn write(&self, batch: &mut FlushBatch) -> Result<(), RollupError> {
        let mut by_level: [Vec<RawDocumentBuf>; 4] = Default::default();
        for p in &mut batch.rollups {
            by_level[p.level.index()].push(std::mem::take(&mut p.doc));
        }
        for level in Level::ALL {
            let docs = std::mem::take(&mut by_level[level.index()]);
            if !docs.is_empty() {
                replace_all(&self.db, level.collection(&self.names), docs).await?;
            }
        }
        if !batch.sessions.is_empty() {
            let docs = batch
                .sessions
                .iter_mut()
                .map(|p| std::mem::take(&mut p.doc))
                .collect();
            replace_all(&self.db, &self.names.sessions, docs).await?;
        }
        Ok(())
    }

    /// Seconds from the end of the newest final minute to `now`, if any.
    pub fn materialization_lag_secs(&self, now_ms: i64) -> Option<f64> {
        self.lock()
            .newest_final_end_ms()
            .map(|end| (now_ms - end) as f64 / 1000.0)
    }

    /// Seconds since the last successful flush, if any: how far partial minutes
    /// may be behind the events already stored.
    pub fn partial_lag_secs(&self, now_ms: i64) -> Option<f64> {
        let last = self.last_flush_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (now_ms - last).max(0) as f64 / 1000.0)
    }
}
