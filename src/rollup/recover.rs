//! Recovery after a restart or a crash: rebuilds the open windows so that no
//! stored event is lost or counted twice.
//!
//! In: the checkpoint (every minute before it is final and written) and the
//! raw events. Out: [`Windows`] holding (1) the current hour, day and month
//! rebuilt from the final child documents before the checkpoint, and (2) every
//! minute from the checkpoint on, rebuilt from `events`. Rollup documents are
//! replacements computed from state, so rewriting them is idempotent.
//!
//! A previous run killed mid-insert may have sent inserts MongoDB applies only after
//! that read (a loaded server answers seconds late). So the minutes stay open after
//! recovery, and [`count_late_writes`] reads `events` once more a little later,
//! counting the events neither the first read nor this run stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::Database;

use super::aggregate::{stored_dimensions, Aggregate};
use super::engine::Rollups;
use super::error::{RollupConfigError, RollupError};
use super::level::Level;
use super::sessions::Sessions;
use super::spec::Spec;
use super::store::{load_checkpoint, save_checkpoint, Checkpoint};
use super::windows::Windows;
use super::RollupConfig;
use crate::event::Event;
use crate::store::CollectionNames;

pub struct Recovered {
    pub windows: Windows,
    pub checkpoint: Option<Checkpoint>,
    pub replayed_events: u64,
    pub loaded_documents: u64,
    /// What [`count_late_writes`] needs; `None` when there was nothing to recover.
    pub late_writes: Option<LateWrites>,
}

/// The events the recovery read counted into open minutes (by `_id`), and from when.
pub struct LateWrites {
    from_ms: i64,
    counted: HashSet<ObjectId>,
}

pub async fn recover(
    db: &Database,
    names: &CollectionNames,
    config: &RollupConfig,
    specs: Vec<Spec>,
    writer: &str,
) -> Result<Recovered, RollupError> {
    let checkpoint = load_checkpoint(db, names, writer)
        .await
        .map_err(RollupError::read("the rollup checkpoint"))?;
    let lateness = (config.allowed_lateness_secs * 1000.0) as i64;
    let idle = (config.idle_finalize_secs * 1000.0) as i64;
    let session_spec = session_spec_index(config, &specs)?;
    let gap = (config.sessions.gap_secs * 1000.0) as i64;

    let Some(cp) = checkpoint else {
        // The clock moves the watermark to now − lateness − idle at the first flush
        // anyway; starting there, and checkpointing it before any event is accepted,
        // lets a run killed before its first flush be recovered like any other.
        let now = chrono::Utc::now().timestamp_millis();
        let start = Level::Minute.bucket_start(now - lateness - idle);
        let mut windows = Windows::new(specs, writer, lateness, idle, start);
        windows.sessions = session_spec.map(|i| Sessions::new(i, gap, i64::MIN));
        let first = Checkpoint {
            minutes_ms: start,
            sessions_ms: None,
            watermark_ms: start,
        };
        save_checkpoint(db, names, writer, first, now).await?;
        tracing::info!("no rollup checkpoint for writer '{writer}': starting fresh (run `mongopulsed backfill` for events stored earlier)");
        return Ok(Recovered {
            windows,
            checkpoint: None,
            replayed_events: 0,
            loaded_documents: 0,
            late_writes: None,
        });
    };

    let first_open = Level::Minute.bucket_start(cp.minutes_ms);
    let mut windows = Windows::new(specs.clone(), writer, lateness, idle, cp.watermark_ms);
    let sessions_from = cp.sessions_ms.map(|s| Level::Minute.bucket_start(s));
    windows.sessions =
        session_spec.map(|i| Sessions::new(i, gap, sessions_from.unwrap_or(first_open)));

    // (1) Parents of the open minutes, from the final children before them.
    let mut loaded = 0u64;
    for parent in [Level::Hour, Level::Day, Level::Month] {
        let Some(child) = parent.child() else {
            continue;
        };
        let from = parent.bucket_start(first_open);
        let to = child.bucket_start(first_open);
        if from >= to {
            continue;
        }
        for (i, spec) in specs.iter().enumerate() {
            let filter = doc! {
                "spec": &spec.name,
                "writer": writer,
                "final": true,
                "timestamp": { "$gte": bson::DateTime::from_millis(from), "$lt": bson::DateTime::from_millis(to) },
            };
            let docs: Vec<Document> = db
                .collection::<Document>(child.collection(names))
                .find(filter)
                .await
                .map_err(RollupError::read(child.collection(names)))?
                .try_collect()
                .await
                .map_err(RollupError::read(child.collection(names)))?;
            for d in &docs {
                let agg = Aggregate::from_document(spec, d)
                    .map_err(RollupError::damaged(child.collection(names)))?;
                let start = d
                    .get_datetime("timestamp")
                    .map_err(RollupError::damaged(child.collection(names)))?
                    .timestamp_millis();
                windows.load_into_parent(
                    parent,
                    i as u16,
                    start,
                    stored_dimensions(spec, d).into(),
                    &agg,
                );
                loaded += 1;
            }
        }
    }

    // (2) Minutes from the checkpoint on, and sessions a gap earlier, from raw events.
    let replay_from = match sessions_from {
        Some(s) if windows.sessions.is_some() => first_open.min(s - gap - 60_000),
        _ => first_open,
    };
    let mut cursor = db
        .collection::<Document>(&names.events)
        // Only the events this daemon accepted: others are in their own writers' rollups.
        .find(doc! { "writer": writer, "timestamp": { "$gte": bson::DateTime::from_millis(replay_from) } })
        .batch_size(5_000)
        .await
        .map_err(RollupError::read("events to recover"))?;
    let mut replayed = 0u64;
    let mut counted = HashSet::new();
    while let Some(d) = cursor
        .try_next()
        .await
        .map_err(RollupError::read("events to recover"))?
    {
        let event = match Event::from_stored(&d) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("skipping an unreadable stored event during recovery: {e}");
                continue;
            }
        };
        if event.timestamp.timestamp_millis() >= first_open {
            windows.apply(&event);
            if let Ok(id) = d.get_object_id("_id") {
                counted.insert(id);
            }
        } else {
            windows.apply_to_sessions(&event);
        }
        replayed += 1;
        if replayed.is_multiple_of(100_000) {
            tracing::info!("recovery: replayed {replayed} events");
        }
    }
    windows.hold_minutes(true);
    Ok(Recovered {
        windows,
        checkpoint: Some(cp),
        replayed_events: replayed,
        loaded_documents: loaded,
        // Held until `count_late_writes` has looked again.
        late_writes: Some(LateWrites {
            from_ms: first_open,
            counted,
        }),
    })
}

/// After `wait`, counts the events of `writer` in the minutes recovery rebuilt that
/// neither the recovery read (`late`) nor this process stored (its ids carry this
/// process's bytes), then lets those minutes become final. Retries while MongoDB does
/// not answer; the minutes stay open meanwhile, and a restart recovers them again.
pub async fn count_late_writes(
    rollups: Arc<Rollups>,
    db: Database,
    names: CollectionNames,
    writer: String,
    late: LateWrites,
    wait: Duration,
    redactor: crate::store::Redactor,
) {
    tokio::time::sleep(wait).await;
    let ours = ObjectId::new().bytes()[4..9].to_vec();
    let mut backoff = Duration::from_millis(500);
    loop {
        let read = async {
            let mut cursor = db
                .collection::<Document>(&names.events)
                .find(doc! { "writer": &writer, "timestamp": { "$gte": bson::DateTime::from_millis(late.from_ms) } })
                .batch_size(5_000)
                .await?;
            let mut found = Vec::new();
            while let Some(d) = cursor.try_next().await? {
                let Ok(id) = d.get_object_id("_id") else {
                    continue;
                };
                if !late.counted.contains(&id) && id.bytes()[4..9] != ours[..] {
                    found.push(d);
                }
            }
            Ok::<_, mongodb::error::Error>(found)
        };
        match read.await {
            Ok(found) => {
                let events: Vec<Event> = found
                    .iter()
                    .filter_map(|d| Event::from_stored(d).ok())
                    .collect();
                if !events.is_empty() {
                    tracing::warn!(
                        events = events.len(),
                        "recovery: the previous run's last inserts were stored after the recovery read; they are counted now"
                    );
                }
                rollups.count_late(&events);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "recovery: cannot read events to count the previous run's last inserts ({}); minutes stay open, retrying in {} ms",
                    redactor.clean(&e.to_string()),
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub fn session_spec_index(
    config: &RollupConfig,
    specs: &[Spec],
) -> Result<Option<u16>, RollupConfigError> {
    if !config.sessions.enabled {
        return Ok(None);
    }
    specs
        .iter()
        .position(|s| s.name == config.sessions.spec)
        .map(|i| Some(i as u16))
        .ok_or_else(|| RollupConfigError::UnknownSessionSpec(config.sessions.spec.clone()))
}
