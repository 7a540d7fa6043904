//! Group commit of raw events into MongoDB.
//!
//! In: batches of event documents from API requests. Out: for each batch, once
//! MongoDB has acknowledged it, which of its documents were stored. Requests are
//! merged into one unordered `insert` of up to `max_batch_events`, or whatever
//! arrived within `max_batch_delay_ms`. Memory is bounded by a budget of queued
//! events: when it is spent for longer than `enqueue_timeout_ms` the caller gets
//! [`SubmitError::Busy`] and the API answers 503 rather than queueing without bound.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::metrics::IngestMetrics;
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
    /// No answer in time: the write's outcome is not known yet (see [`Reply::later`]).
    #[error("MongoDB sent no answer within {0} ms")]
    Unanswered(u128),
    #[error("the daemon is shutting down")]
    Closed,
}

/// Per-document outcome of a stored batch: the indexes MongoDB refused, with why.
pub type Refused = Vec<(usize, String)>;

struct Job {
    docs: Vec<Document>,
    done: oneshot::Sender<Reply>,
    _room: OwnedSemaphorePermit,
}

/// What a batch came to, with its documents handed back: a request whose
/// client went away still learns what was stored (see `ingest::http`).
pub struct Reply {
    pub result: Result<Refused, SubmitError>,
    pub docs: Vec<Document>,
    /// Set when MongoDB did not answer within `write_timeout_ms` (`result` is then
    /// [`SubmitError::Unanswered`]): the insert was sent and may still be applied, so it
    /// is not abandoned. Its final reply (never itself `later`) comes on this channel,
    /// for whoever must count exactly what was stored.
    pub later: Option<Queued>,
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
            })
            .await
            .map_err(|_| SubmitError::Closed)?;
        Ok(result)
    }

    /// How long a request waits for its batch's answer before the API answers 503.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.config.write_timeout_ms)
    }

    /// Events queued or being written.
    pub fn queued(&self) -> usize {
        self.shared.config.max_queued_events - self.shared.room.available_permits()
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    let config = &shared.config;
    let in_flight = Arc::new(Semaphore::new(config.concurrent_writes));
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
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            write_batch(jobs, &shared).await;
            drop(slot);
        });
    }
    // Every handle is gone: wait for the writes still in flight.
    let _ = in_flight
        .acquire_many(config.concurrent_writes as u32)
        .await;
}

/// How long a failed batch is looked up for (see [`stored_anyway`]) before it is taken
/// as not stored; bounded so that a shutdown with MongoDB gone still ends.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(60);

/// The ids of `docs` that are in `events` after an insert failed with an unknown outcome.
/// Asked when MongoDB answers again, and once more a little later: a server that was
/// paused may apply the insert it had read only after answering a newer connection.
async fn stored_anyway(shared: &Shared, docs: &[Document]) -> HashSet<ObjectId> {
    let ids: Vec<ObjectId> = docs
        .iter()
        .filter_map(|d| d.get_object_id("_id").ok())
        .collect();
    let mut found = HashSet::new();
    let give_up = Instant::now() + LOOKUP_PATIENCE;
    for pass in 0..2 {
        if pass == 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        loop {
            let lookup = async {
                let cursor = shared
                    .collection
                    .find(doc! { "_id": { "$in": &ids } })
                    .projection(doc! { "_id": 1 })
                    .await?;
                cursor.try_collect::<Vec<Document>>().await
            };
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(stored)) => {
                    found.extend(stored.iter().filter_map(|d| d.get_object_id("_id").ok()));
                    break;
                }
                _ if Instant::now() > give_up => {
                    tracing::warn!(
                        events = ids.len(),
                        "cannot tell which events of a failed insert MongoDB stored; they are not counted (a backfill of their minutes recounts them)"
                    );
                    return found;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    found
}

async fn write_batch(jobs: Vec<Job>, shared: &Shared) {
    let metrics = &shared.metrics;
    let timeout = Duration::from_millis(shared.config.write_timeout_ms);
    let sizes: Vec<usize> = jobs.iter().map(|j| j.docs.len()).collect();
    let total: usize = sizes.iter().sum();
    let mut docs = Vec::with_capacity(total);
    let mut replies: Vec<(oneshot::Sender<Reply>, OwnedSemaphorePermit)> =
        Vec::with_capacity(jobs.len());
    for job in jobs {
        docs.extend(job.docs);
        replies.push((job.done, job._room));
    }
    // Our own ids (what the driver would generate), so that after a failure whose
    // outcome is unknown the batch can be looked up to see what MongoDB stored.
    for d in &mut docs {
        if !d.contains_key("_id") {
            d.insert("_id", ObjectId::new());
        }
    }
    metrics.batch_size.observe(total as f64);
    let started = Instant::now();
    let insert = shared
        .collection
        .insert_many(docs.as_slice())
        .ordered(false)
        .write_concern(shared.write_concern.clone())
        .into_future();
    let mut insert = std::pin::pin!(insert);
    let outcome = match tokio::time::timeout(timeout, insert.as_mut()).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // The insert was sent: MongoDB may still apply it (a paused or overloaded
            // server answers late). Dropping it here would leave stored events nobody
            // counts, so the requests get their 503 now and the insert goes on; its
            // outcome is handed over on `later` for the rollups to count what was stored.
            // The queue budget (`room`) stays taken until then: memory remains bounded.
            tracing::warn!(
                events = total,
                "MongoDB did not answer an insert into events within {} ms; answering 503 and waiting for its outcome",
                timeout.as_millis()
            );
            replies = replies
                .into_iter()
                .map(|(done, room)| {
                    let (later_done, later) = oneshot::channel();
                    let _ = done.send(Reply {
                        result: Err(SubmitError::Unanswered(timeout.as_millis())),
                        docs: Vec::new(),
                        later: Some(later),
                    });
                    (later_done, room)
                })
                .collect();
            insert.await
        }
    };
    metrics.observe_write(started.elapsed().as_secs_f64());

    // Index of each refused document in the merged batch, or a batch-wide failure.
    let result: Result<Refused, SubmitError> = match outcome {
        Ok(_) => Ok(Vec::new()),
        Err(e) => match e.kind.as_ref() {
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
            _ => {
                // A network error or an interrupted connection says nothing about what
                // the server did with an insert it may have read: look the batch up.
                let why = shared.redactor.clean(&e.to_string());
                let found = stored_anyway(shared, &docs).await;
                if found.is_empty() {
                    Err(SubmitError::Unavailable(why))
                } else {
                    tracing::warn!(
                        events = total,
                        stored = found.len(),
                        "an insert into events failed ({why}) but MongoDB stored part of it; those events are counted"
                    );
                    Ok(docs
                        .iter()
                        .enumerate()
                        .filter(|(_, d)| {
                            !d.get_object_id("_id").is_ok_and(|id| found.contains(&id))
                        })
                        .map(|(i, _)| {
                            (
                                i,
                                format!("MongoDB did not store the event ({why}); retry it"),
                            )
                        })
                        .collect())
                }
            }
        },
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

    // Hand each request its share, with indexes relative to its own documents.
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
            later: None,
        });
    }
}
