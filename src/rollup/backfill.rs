//! `mongopulsed backfill`: recompute rollups of a time range from raw events.
//!
//! In: a range [from, to) (widened to whole minutes), optionally one spec.
//! Out: this writer's minute documents of the range replaced (and those of
//! minutes without events removed), then every hour, day and month touching
//! the range recomputed from its children. Deterministic, so safe to re-run.
//! Works an hour at a time to bound memory; shows progress.

use std::collections::HashMap;

use bson::{doc, Document, RawDocumentBuf};
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mongodb::Database;

use super::aggregate::{dims_digest, stored_dimensions, Aggregate};
use super::error::RollupError;
use super::level::{Level, HOUR_MS, MINUTE_MS};
use super::spec::Spec;
use super::store::{load_checkpoint, raw, replace_all};
use super::windows::Windows;
use crate::event::Event;
use crate::store::CollectionNames;

pub struct BackfillRequest {
    pub from_ms: i64,
    pub to_ms: i64,
    pub specs: Vec<Spec>,
    pub writer: String,
    /// Buckets ending at or before this are written final.
    pub final_before_ms: i64,
    pub force: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub events: u64,
    pub minute_documents: u64,
    pub upper_documents: u64,
}

pub async fn backfill(
    db: &Database,
    names: &CollectionNames,
    req: BackfillRequest,
) -> Result<BackfillReport, RollupError> {
    let from = Level::Minute.bucket_start(req.from_ms);
    let to = Level::Minute.bucket_start(req.to_ms + MINUTE_MS - 1);
    if from >= to {
        return Err(RollupError::BadRange("--from must be before --to".into()));
    }
    if let Some(cp) = load_checkpoint(db, names, &req.writer)
        .await
        .map_err(RollupError::read("the rollup checkpoint"))?
    {
        if to > cp.minutes_ms && !req.force {
            return Err(RollupError::BadRange(format!(
                "the range reaches {}, past what the running daemon has finalised (checkpoint {}); end the range there, or stop the daemon and pass --force",
                fmt(to),
                fmt(cp.minutes_ms)
            )));
        }
    }
    let events = db.collection::<Document>(&names.events);
    // This writer's events only: other daemons' events are in their own rollups.
    let range = doc! { "writer": &req.writer, "timestamp": { "$gte": bson::DateTime::from_millis(from), "$lt": bson::DateTime::from_millis(to) } };
    let total = events
        .count_documents(range.clone())
        .await
        .map_err(RollupError::read("events (counting them)"))?;
    let progress = progress_bar(total);
    progress.set_message(format!("{} → {}", fmt(from), fmt(to)));

    let mut report = BackfillReport::default();
    let mut hour = Level::Hour.bucket_start(from);
    while hour < to {
        let lo = hour.max(from);
        let hi = (hour + HOUR_MS).min(to);
        let mut windows = Windows::new(req.specs.clone(), &req.writer, 0, 0, i64::MIN);
        let mut cursor = events
            .find(doc! { "writer": &req.writer, "timestamp": { "$gte": bson::DateTime::from_millis(lo), "$lt": bson::DateTime::from_millis(hi) } })
            .batch_size(5_000)
            .await
            .map_err(RollupError::read("events"))?;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(RollupError::read("events"))?
        {
            match Event::from_stored(&d) {
                Ok(e) => windows.apply(&e),
                Err(e) => tracing::warn!("skipping an unreadable stored event: {e}"),
            }
            report.events += 1;
            progress.inc(1);
        }
        // Minutes: drop this writer's documents in the slice, write the recomputed ones.
        let minutes = Level::Minute.collection(names);
        for spec in &req.specs {
            db.collection::<Document>(minutes)
                .delete_many(doc! {
                    "spec": &spec.name, "writer": &req.writer,
                    "timestamp": { "$gte": bson::DateTime::from_millis(lo), "$lt": bson::DateTime::from_millis(hi) },
                })
                .await
                .map_err(RollupError::clear(minutes))?;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let docs: Vec<RawDocumentBuf> = windows
            .flush(now)
            .rollups
            .into_iter()
            .filter(|p| p.level == Level::Minute)
            .map(|p| {
                // Final as the request says, not as the backfill's own clock would.
                let end = Level::Minute.bucket_end(p.key.start);
                let mut d = p.doc.to_document().map_err(|e| RollupError::Write {
                    collection: minutes.to_string(),
                    problem: format!("a rebuilt document cannot be read back: {e}"),
                })?;
                d.insert("final", end <= req.final_before_ms);
                raw(minutes, &d)
            })
            .collect::<Result<_, _>>()?;
        report.minute_documents += docs.len() as u64;
        replace_all(db, minutes, docs).await?;
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            // No bar without a terminal: say where we are once per hour of data.
            tracing::info!(
                "backfill: {} done, {}/{} events",
                fmt(hi),
                report.events,
                total
            );
        }
        hour += HOUR_MS;
    }

    // Hours, days and months that touch the range, each from its children.
    for level in [Level::Hour, Level::Day, Level::Month] {
        let mut start = level.bucket_start(from);
        while start < to {
            let end = level.bucket_end(start);
            for spec in &req.specs {
                report.upper_documents += rebuild_bucket(
                    db,
                    names,
                    spec,
                    &req.writer,
                    level,
                    start,
                    end <= req.final_before_ms,
                )
                .await?;
            }
            start = end;
        }
    }
    progress.finish_with_message(format!(
        "{} events → {} minute and {} hour/day/month documents",
        report.events, report.minute_documents, report.upper_documents
    ));
    Ok(report)
}

/// Replaces one writer's documents of `level` at `start` with the merge of its children.
async fn rebuild_bucket(
    db: &Database,
    names: &CollectionNames,
    spec: &Spec,
    writer: &str,
    level: Level,
    start: i64,
    is_final: bool,
) -> Result<u64, RollupError> {
    let Some(child) = level.child() else {
        return Ok(0);
    };
    let end = level.bucket_end(start);
    let range = doc! { "$gte": bson::DateTime::from_millis(start), "$lt": bson::DateTime::from_millis(end) };
    let children: Vec<Document> = db
        .collection::<Document>(child.collection(names))
        .find(doc! { "spec": &spec.name, "writer": writer, "timestamp": range.clone() })
        .await
        .map_err(RollupError::read(child.collection(names)))?
        .try_collect()
        .await
        .map_err(RollupError::read(child.collection(names)))?;
    let mut merged: HashMap<Vec<Option<Box<str>>>, Aggregate> = HashMap::new();
    for d in &children {
        let agg = Aggregate::from_document(spec, d)
            .map_err(RollupError::damaged(child.collection(names)))?;
        merged
            .entry(stored_dimensions(spec, d))
            .or_insert_with(|| Aggregate::new(spec))
            .merge(&agg);
    }
    let coll = level.collection(names);
    db.collection::<Document>(coll)
        .delete_many(doc! { "spec": &spec.name, "writer": writer, "timestamp": range })
        .await
        .map_err(RollupError::clear(coll))?;
    let now = chrono::Utc::now().timestamp_millis();
    let docs: Vec<RawDocumentBuf> = merged
        .iter()
        .map(|(dims, agg)| {
            let digest = dims_digest(dims);
            agg.to_document(spec, level, start, dims, &digest, writer, is_final, now)
        })
        .collect();
    let n = docs.len() as u64;
    replace_all(db, coll, docs).await?;
    Ok(n)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn fmt(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
