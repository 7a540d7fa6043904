//! Group commit of raw events into MongoDB.
//!
//! In: batches of event documents from API requests. Out: for each batch, once
//! MongoDB has acknowledged it, which of its documents were stored. Requests are
//! merged into one unordered `insert` of up to `max_batch_events`, or whatever
//! arrived within `max_batch_delay_ms`. Memory is bounded by a budget of queued
//! events: when it is spent for longer than `enqueue_timeout_ms` the caller gets
//! [`SubmitError::Busy`] and the API answers 503 rather than queueing without bound.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::error::{ErrorKind, NO_WRITES_PERFORMED};
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::metrics::IngestMetrics;
use crate::event::EVENT_ID_FIELD;
use crate::store::Redactor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush when a batch holds this many events…
    pub max_batch_events: usize,
    /// …or when its first event has waited this long.
    pub max_batch_delay_ms: u64,
    /// Events accepted but not yet acknowledged by MongoDB, at most.
    pub max_queued_events: usize,
    /// How long a request may wait for room in the queue before a 503.
    pub enqueue_timeout_ms: u64,
    /// How long one insert may take before its requests get a 503.
    pub write_timeout_ms: u64,
    /// Inserts in flight at once.
    pub concurrent_writes: usize,
    /// `majority`, or a number of nodes such as `1`.
    pub write_concern: String,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_events: 1_000,
            max_batch_delay_ms: 5,
            max_queued_events: 100_000,
            enqueue_timeout_ms: 1_000,
            write_timeout_ms: 5_000,
            concurrent_writes: 2,
            write_concern: "majority".into(),
        }
    }
}

impl WriterConfig {
    pub fn write_concern(&self) -> Result<WriteConcern, String> {
        let w = match self.write_concern.trim() {
            "majority" => Acknowledgment::Majority,
            n => match n.parse::<u32>() {
                Ok(n) if n >= 1 => Acknowledgment::Nodes(n),
                _ => {
                    return Err(format!(
                        "ingest.writer.write_concern must be 'majority' or a number of nodes ≥ 1, got '{n}'"
                    ))
                }
            },
        };
        // `j: true` as well: an event is answered 2xx only once it is in the on-disk
        // journal, so a MongoDB crash right after the answer cannot lose it. `majority`
        // implies it only while the replica set keeps writeConcernMajorityJournalDefault
        // (true by default), and `w: 1` never does (MongoDB manual, "Write Concern", j
        // option). A server that ignored `w: majority`'s journal lost acknowledged events
        // in tests/crash.rs.
        Ok(WriteConcern::builder().w(w).journal(true).build())
    }
}

/// Why a batch was not stored. None of these may be answered with a 2xx.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the ingest queue is full (MongoDB is slower than the incoming traffic); retry later")]
    Busy,
    #[error("MongoDB did not acknowledge the write: {0}")]
    Unavailable(String),
    #[error("the daemon is shutting down")]
    Closed,
}

/// Per-document outcome of a stored batch: the indexes MongoDB refused, with why.
pub type Refused = Vec<(usize, String)>;

struct Job {
    docs: Vec<Document>,
    done: oneshot::Sender<Reply>,
    _room: OwnedSemaphorePermit,
    /// `write_timeout_ms` counts from here, so a request waiting for a write slot
    /// behind inserts MongoDB has not answered is bounded too.
    queued_at: tokio::time::Instant,
}

/// What a batch came to, with its documents handed back: a request whose
/// client went away still learns what was stored (see `ingest::http`).
pub struct Reply {
    pub result: Result<Refused, SubmitError>,
    pub docs: Vec<Document>,
    /// Set when MongoDB had not answered within `write_timeout_ms`: `result` is then
    /// an [`SubmitError::Unavailable`] for the client, but the insert goes on and may
    /// still store the documents. This receiver gets its real outcome (with the
    /// documents) when MongoDB answers, so whoever counts events counts what was in
    /// fact stored.
    pub outcome_later: Option<Queued>,
}

/// A batch in the queue; await it for the [`Reply`].
pub type Queued = oneshot::Receiver<Reply>;

/// What the writer task and its inserts share.
struct Shared {
    collection: Collection<Document>,
    write_concern: WriteConcern,
    config: WriterConfig,
    metrics: Arc<IngestMetrics>,
    room: Arc<Semaphore>,
    redactor: Redactor,
}

/// Handle for submitting batches; cheap to clone. When every handle is
/// dropped the writer flushes what it holds and its task ends.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Writer {
    pub fn start(
        collection: Collection<Document>,
        config: WriterConfig,
        metrics: Arc<IngestMetrics>,
        redactor: Redactor,
    ) -> Result<(Writer, JoinHandle<()>), String> {
        let write_concern = config.write_concern()?;
        if config.max_batch_events == 0
            || config.max_queued_events == 0
            || config.concurrent_writes == 0
        {
            return Err("ingest.writer.max_batch_events, max_queued_events and concurrent_writes must be at least 1".into());
        }
        let (tx, rx) = mpsc::channel(config.max_queued_events.min(65_536));
        let shared = Arc::new(Shared {
            collection,
            write_concern,
            room: Arc::new(Semaphore::new(config.max_queued_events)),
            config,
            metrics,
            redactor,
        });
        let task = tokio::spawn(run(rx, shared.clone()));
        Ok((Writer { jobs: tx, shared }, task))
    }

    /// Stores `docs`; returns once MongoDB acknowledged them (or refused some).
    pub async fn submit(&self, docs: Vec<Document>) -> Result<Refused, SubmitError> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        match self.enqueue(docs).await?.await {
            Ok(reply) => reply.result,
            Err(_) => Err(SubmitError::Closed),
        }
    }

    /// Which of these event ids (each with its event's time) `events` holds already,
    /// whoever stored them. Matching the exact time lets a time-series collection read
    /// only the buckets of those times; bounded by `write_timeout_ms`.
    pub async fn stored_ids(
        &self,
        wanted: &[(&str, i64)],
    ) -> Result<HashSet<(String, i64)>, String> {
        if wanted.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<&str> = wanted.iter().map(|(id, _)| *id).collect();
        let times: Vec<bson::DateTime> = wanted
            .iter()
            .map(|(_, ms)| bson::DateTime::from_millis(*ms))
            .collect();
        let filter = doc! { EVENT_ID_FIELD: { "$in": ids }, "timestamp": { "$in": times } };
        let lookup = async {
            let cursor = self
                .shared
                .collection
                .find(filter)
                .projection(doc! { EVENT_ID_FIELD: 1, "timestamp": 1 })
                .await?;
            cursor.try_collect::<Vec<Document>>().await
        };
        // The filter matches any id with any of the times: keep the pairs asked for.
        let asked: HashSet<(&str, i64)> = wanted.iter().copied().collect();
        let wait = Duration::from_millis(self.shared.config.write_timeout_ms);
        match tokio::time::timeout(wait, lookup).await {
            Ok(Ok(found)) => Ok(found
                .iter()
                .filter_map(|d| {
                    let id = d.get_str(EVENT_ID_FIELD).ok()?;
                    let ms = d.get_datetime("timestamp").ok()?.timestamp_millis();
                    asked.contains(&(id, ms)).then(|| (id.to_string(), ms))
                })
                .collect()),
            Ok(Err(e)) => Err(self.shared.redactor.clean(&e.to_string())),
            Err(_) => Err(format!("no answer within {} ms", wait.as_millis())),
        }
    }

    /// Queues `docs` once there is room; the receiver gets the [`Reply`] even
    /// if the caller stops waiting.
    pub async fn enqueue(&self, docs: Vec<Document>) -> Result<Queued, SubmitError> {
        let config = &self.shared.config;
        let n = u32::try_from(docs.len().min(config.max_queued_events)).unwrap_or(u32::MAX);
        let wait = Duration::from_millis(config.enqueue_timeout_ms);
        let room = match tokio::time::timeout(wait, self.shared.room.clone().acquire_many_owned(n))
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(SubmitError::Closed),
            Err(_) => return Err(SubmitError::Busy),
        };
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job {
                docs,
                done,
                _room: room,
                queued_at: tokio::time::Instant::now(),
            })
            .await
            .map_err(|_| SubmitError::Closed)?;
        Ok(result)
    }

    /// Events queued or being written.
    pub fn queued(&self) -> usize {
        self.shared.config.max_queued_events - self.shared.room.available_permits()
    }
}

/// Batches whose outcome is not settled yet (insert or lookup), at most: a bound no
/// real queue reaches, counted so that a shutdown can wait for them.
const UNSETTLED_MAX: u32 = 1 << 20;

/// How long a shutdown waits for lookups of inserts with an unknown outcome.
const SHUTDOWN_LOOKUP_WAIT: Duration = Duration::from_secs(60);

async fn run(mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    let config = &shared.config;
    let in_flight = Arc::new(Semaphore::new(config.concurrent_writes));
    let unsettled = Arc::new(Semaphore::new(UNSETTLED_MAX as usize));
    let delay = Duration::from_millis(config.max_batch_delay_ms);
    while let Some(first) = rx.recv().await {
        let mut size = first.docs.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + delay;
        while size < config.max_batch_events {
            tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => {
                        size += job.docs.len();
                        jobs.push(job);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        shared
            .metrics
            .queue_depth
            .set((config.max_queued_events - shared.room.available_permits()) as i64);
        // The oldest request's bound covers the whole batch.
        let answer_by = jobs
            .iter()
            .map(|j| j.queued_at)
            .min()
            .unwrap_or_else(tokio::time::Instant::now)
            + Duration::from_millis(config.write_timeout_ms);
        let slot = match tokio::time::timeout_at(answer_by, in_flight.clone().acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => break,
            Err(_) => {
                // Every slot holds an insert MongoDB has not answered: these were never
                // sent, so they are certainly not stored.
                shared.metrics.writes_failed.inc();
                let sizes = jobs.iter().map(|j| j.docs.len()).collect();
                let mut replies = Vec::with_capacity(jobs.len());
                let mut docs = Vec::with_capacity(size);
                for job in jobs {
                    docs.extend(job.docs);
                    replies.push((job.done, job._room));
                }
                let why = format!(
                    "no answer within {} ms (MongoDB has not answered the writes before these)",
                    config.write_timeout_ms
                );
                hand_out(Err(SubmitError::Unavailable(why)), replies, sizes, docs);
                continue;
            }
        };
        let shared = shared.clone();
        let unsettled = unsettled.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            write_batch(jobs, answer_by, &shared, slot).await;
            drop(unsettled);
        });
    }
    // Every handle is gone: wait for the writes still in flight, then (for a while)
    // for the lookups of those whose outcome is unknown, so that what they find is
    // counted before the last flush.
    let _ = in_flight
        .acquire_many(config.concurrent_writes as u32)
        .await;
    if tokio::time::timeout(SHUTDOWN_LOOKUP_WAIT, unsettled.acquire_many(UNSETTLED_MAX))
        .await
        .is_err()
    {
        tracing::warn!(
            "stopping while inserts with an unknown outcome are still looked up; their minutes stay open in the checkpoint, so the next start recounts them from events"
        );
    }
}

/// Inserts one batch and hands out its outcome. `slot` is held while the insert is
/// in flight; a lookup of what an insert with an unknown outcome stored is only
/// reads, so it does not keep other batches from being written.
async fn write_batch(
    jobs: Vec<Job>,
    answer_by: tokio::time::Instant,
    shared: &Shared,
    slot: OwnedSemaphorePermit,
) {
    let metrics = &shared.metrics;
    let timeout = Duration::from_millis(shared.config.write_timeout_ms);
    let sizes: Vec<usize> = jobs.iter().map(|j| j.docs.len()).collect();
    let total: usize = sizes.iter().sum();
    let mut docs = Vec::with_capacity(total);
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        docs.extend(job.docs);
        replies.push((job.done, job._room));
    }
    // Our own ids (the driver would make the same kind), so that a batch whose outcome
    // is unknown can be looked up to see what MongoDB stored.
    for d in &mut docs {
        if !d.contains_key("_id") {
            d.insert("_id", ObjectId::new());
        }
    }
    metrics.batch_size.observe(total as f64);
    let started = Instant::now();
    // The insert (and, when its outcome is unknown, the lookup of what it stored)
    // borrows `docs`, so it lives in this block; `docs` is handed back after.
    let (result, replies) = {
        let outcome = async {
            let inserted = shared
                .collection
                .insert_many(docs.as_slice())
                .ordered(false)
                .write_concern(shared.write_concern.clone())
                .await;
            drop(slot);
            metrics.observe_write(started.elapsed().as_secs_f64());
            insert_result(inserted, &docs, shared).await
        };
        tokio::pin!(outcome);
        match tokio::time::timeout_at(answer_by, &mut outcome).await {
            Ok(result) => (result, replies),
            Err(_) => {
                // The insert is on its way and MongoDB may still apply it: answer the
                // requests now (a 503, so nothing unstored is ever acknowledged), but
                // wait for the real outcome before saying what was stored. Dropping the
                // insert here would leave stored events that nobody counts. The write
                // slot and the queue room stay taken meanwhile: that is the
                // backpressure while MongoDB does not answer.
                metrics.writes_timed_out.inc();
                tracing::warn!(
                    events = total,
                    "insert into events got no answer within {} ms: its requests get a 503, and what it stores is counted when MongoDB answers",
                    timeout.as_millis()
                );
                let mut later = Vec::with_capacity(replies.len());
                for (done, room) in replies {
                    let (outcome_tx, outcome_rx) = oneshot::channel();
                    let _ = done.send(Reply {
                        result: Err(SubmitError::Unavailable(format!(
                            "no answer within {} ms",
                            timeout.as_millis()
                        ))),
                        docs: Vec::new(),
                        outcome_later: Some(outcome_rx),
                    });
                    later.push((outcome_tx, room));
                }
                metrics.writes_unanswered.inc();
                let result = outcome.await;
                metrics.writes_unanswered.dec();
                (result, later)
            }
        }
    };
    match &result {
        Ok(_) => {
            metrics.writes_ok.inc();
        }
        Err(e) => {
            metrics.writes_failed.inc();
            tracing::warn!(events = total, "insert into events failed: {e}");
        }
    }
    hand_out(result, replies, sizes, docs);
}

/// Index of each refused document in the merged batch, or a batch-wide failure.
async fn insert_result(
    outcome: mongodb::error::Result<mongodb::results::InsertManyResult>,
    docs: &[Document],
    shared: &Shared,
) -> Result<Refused, SubmitError> {
    let e = match outcome {
        Ok(_) => return Ok(Vec::new()),
        Err(e) => e,
    };
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) if m.write_concern_error.is_none() => Ok(m
            .write_errors
            .iter()
            .flatten()
            .map(|w| {
                (
                    w.index,
                    format!("MongoDB refused the event: {} (code {})", w.message, w.code),
                )
            })
            .collect()),
        // The connection broke (or was cut by the driver while MongoDB was paused)
        // after the insert may have been read: the server may have applied it, or may
        // still apply it once it runs again. Only a lookup can tell what to count.
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
            if !e.contains_label(NO_WRITES_PERFORMED) =>
        {
            let why = shared.redactor.clean(&e.to_string());
            shared.metrics.writes_looked_up.inc();
            let found = stored_anyway(shared, docs).await;
            shared.metrics.writes_looked_up.dec();
            if found.is_empty() {
                return Err(SubmitError::Unavailable(why));
            }
            tracing::warn!(
                events = docs.len(),
                stored = found.len(),
                "an insert into events failed ({why}) but MongoDB stored part of it: those events are accepted and counted"
            );
            Ok(docs
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.get_object_id("_id").is_ok_and(|id| found.contains(&id)))
                .map(|(i, _)| {
                    (
                        i,
                        format!("MongoDB did not store the event ({why}); retry it"),
                    )
                })
                .collect())
        }
        _ => Err(SubmitError::Unavailable(
            shared.redactor.clean(&e.to_string()),
        )),
    }
}

/// How long the events of an insert with an unknown outcome are looked for once
/// MongoDB answers again, unless all are found sooner. A server that was paused or
/// overloaded may apply an insert it had read before after it answered newer
/// connections: on a busy machine SecantusDB applied one more than 2 s after our
/// first lookup. Meanwhile the events' admissions hold their minutes open (they
/// cannot become final without them) and their ids stay in flight (a client's retry
/// is refused, not stored twice); what is not found by then is taken as not stored.
const LOOKUP_SETTLE: Duration = Duration::from_secs(30);

/// How long the lookup keeps trying while MongoDB does not answer at all, so that
/// the task ends even if MongoDB never comes back.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(15 * 60);

const LOOKUP_EVERY: Duration = Duration::from_secs(1);

/// The ids of `docs` found in `events` after an insert failed with an unknown outcome
/// (see [`LOOKUP_SETTLE`]). The time range lets a time-series collection (which has no
/// `_id` index) read only the buckets of the batch's minutes.
async fn stored_anyway(shared: &Shared, docs: &[Document]) -> HashSet<ObjectId> {
    let ids: Vec<ObjectId> = docs
        .iter()
        .filter_map(|d| d.get_object_id("_id").ok())
        .collect();
    let times: Vec<bson::DateTime> = docs
        .iter()
        .filter_map(|d| d.get_datetime("timestamp").ok().copied())
        .collect();
    let mut filter = doc! { "_id": { "$in": &ids } };
    if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) {
        filter.insert("timestamp", doc! { "$gte": *first, "$lte": *last });
    }
    let mut found = HashSet::new();
    let give_up = Instant::now() + LOOKUP_PATIENCE;
    let mut settled_at: Option<Instant> = None;
    loop {
        let lookup = async {
            // Majority: only what is as durable as an acknowledged insert is answered
            // 2xx and counted (an applied insert may still be rolled back).
            let cursor = shared
                .collection
                .find(filter.clone())
                .projection(doc! { "_id": 1 })
                .read_concern(ReadConcern::majority())
                .await?;
            cursor.try_collect::<Vec<Document>>().await
        };
        if let Ok(Ok(stored)) = tokio::time::timeout(Duration::from_secs(5), lookup).await {
            found.extend(stored.iter().filter_map(|d| d.get_object_id("_id").ok()));
            if found.len() >= ids.len() {
                return found;
            }
            settled_at.get_or_insert_with(|| Instant::now() + LOOKUP_SETTLE);
        }
        let now = Instant::now();
        match settled_at {
            Some(at) if now >= at => {
                tracing::warn!(
                    events = ids.len(),
                    stored = found.len(),
                    "the rest of an insert with an unknown outcome was not found in events {} s after MongoDB answered again: taken as not stored (its clients got a 503 and may retry)",
                    LOOKUP_SETTLE.as_secs()
                );
                return found;
            }
            None if now >= give_up => {
                tracing::warn!(
                    events = ids.len(),
                    "cannot tell which events of a failed insert MongoDB stored (no answer for {} minutes); they are not counted until a backfill of their minutes recounts them",
                    LOOKUP_PATIENCE.as_secs() / 60
                );
                return found;
            }
            _ => tokio::time::sleep(LOOKUP_EVERY).await,
        }
    }
}

/// Hands each request its share of `result`, with indexes relative to its own
/// documents, and its documents back.
fn hand_out(
    result: Result<Refused, SubmitError>,
    replies: Vec<(oneshot::Sender<Reply>, OwnedSemaphorePermit)>,
    sizes: Vec<usize>,
    docs: Vec<Document>,
) {
    let mut docs = docs.into_iter();
    let mut offset = 0;
    for ((done, room), size) in replies.into_iter().zip(sizes) {
        let share = result.as_ref().map(|refused| {
            refused
                .iter()
                .filter(|(i, _)| (offset..offset + size).contains(i))
                .map(|(i, why)| (i - offset, why.clone()))
                .collect()
        });
        offset += size;
        drop(room);
        let _ = done.send(Reply {
            result: share.map_err(Clone::clone),
            docs: docs.by_ref().take(size).collect(),
            outcome_later: None,
        });
    }
}
