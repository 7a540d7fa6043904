//! Rollup I/O: idempotent replacement of rollup documents, indexes and TTLs,
//! and the daemon's checkpoint.

use std::time::Duration;

use bson::RawDocumentBuf;
use bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::bson_writer::{self, BsonWriter};
use super::error::RollupError;
use super::level::Level;
use crate::store::CollectionNames;

/// Days each rollup level is kept; 0 keeps it forever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelTtl {
    pub minute_days: f64,
    pub hour_days: f64,
    pub day_days: f64,
    pub month_days: f64,
}

impl Default for LevelTtl {
    fn default() -> Self {
        LevelTtl {
            minute_days: 30.0,
            hour_days: 365.0,
            day_days: 1825.0,
            month_days: 0.0,
        }
    }
}

impl LevelTtl {
    pub fn days(&self, level: Level) -> f64 {
        match level {
            Level::Minute => self.minute_days,
            Level::Hour => self.hour_days,
            Level::Day => self.day_days,
            Level::Month => self.month_days,
        }
    }
}

/// Replaces (or inserts) documents by `_id` in one round trip per 500, each
/// acknowledged only once a majority has it in the on-disk journal.
///
/// A rollup (or checkpoint) the server acknowledged is never written again, so it must
/// survive a MongoDB crash: with the server's default `w: 1, j: false` an acknowledged
/// write may still be lost (MongoDB manual, "Write Concern", j option), and
/// tests/crash.rs saw minutes counted short after a `kill -9` of the database.
pub async fn replace_all(
    db: &Database,
    collection: &str,
    docs: Vec<RawDocumentBuf>,
) -> Result<(), RollupError> {
    let failed = |problem: String| RollupError::Write {
        collection: collection.to_string(),
        problem,
    };
    for chunk in docs.chunks(500) {
        // The command is written as bytes too: each document is copied in once, not
        // rebuilt as a tree and serialised again.
        let size: usize = chunk.iter().map(|d| d.as_bytes().len() + 96).sum();
        let mut w = BsonWriter::new(size + 128);
        w.str("update", collection);
        w.begin_array("updates");
        let mut key = String::new();
        for (i, d) in chunk.iter().enumerate() {
            w.begin_document(bson_writer::index(i, &mut key));
            w.begin_document("q");
            // Every id here is a string: `document_id`'s and the checkpoint's.
            let id = d
                .get_str("_id")
                .map_err(|e| failed(format!("a document without a string _id: {e}")))?;
            w.str("_id", id);
            w.end();
            w.document("u", d);
            w.bool("upsert", true);
            w.end();
        }
        w.end();
        w.bool("ordered", false);
        w.begin_document("writeConcern");
        w.str("w", "majority");
        w.bool("j", true);
        w.end();
        let command = w.finish();
        let reply = db
            .run_raw_command(command)
            .await
            .map_err(|e| failed(format!("{e}; the flush is retried")))?;
        // The writes were applied but not made durable as asked: not stored, for us.
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(failed(format!(
                "MongoDB applied the writes but could not make them durable: {}; check the replica set's health",
                wce.get_str("errmsg").unwrap_or("no message")
            )));
        }
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(Bson::Document(first)) = errors.first() {
                return Err(failed(format!(
                    "{} of {} documents refused, e.g. {}",
                    errors.len(),
                    chunk.len(),
                    first.get_str("errmsg").unwrap_or("no message")
                )));
            }
        }
    }
    Ok(())
}

/// `doc` as the bytes [`replace_all`] writes, for documents built as a [`Document`].
pub fn raw(collection: &str, doc: &Document) -> Result<RawDocumentBuf, RollupError> {
    RawDocumentBuf::from_document(doc).map_err(|e| RollupError::Write {
        collection: collection.to_string(),
        problem: format!("the document cannot be encoded as BSON: {e}"),
    })
}

/// Indexes the query engine relies on, and one TTL index per level.
pub async fn ensure_rollup_indexes(
    db: &Database,
    names: &CollectionNames,
    ttl: &LevelTtl,
) -> mongodb::error::Result<Vec<String>> {
    let mut report = Vec::new();
    for level in Level::ALL {
        let name = level.collection(names);
        let coll = db.collection::<Document>(name);
        let have = coll.list_index_names().await.unwrap_or_default();
        let mut wanted = vec![
            IndexModel::builder()
                .keys(doc! { "spec": 1, "dimensions.eventType": 1, "timestamp": 1 })
                .options(
                    IndexOptions::builder()
                        .name("spec_type_time".to_string())
                        .build(),
                )
                .build(),
            IndexModel::builder()
                .keys(doc! { "spec": 1, "writer": 1, "timestamp": 1 })
                .options(
                    IndexOptions::builder()
                        .name("spec_writer_time".to_string())
                        .build(),
                )
                .build(),
        ];
        let days = ttl.days(level);
        if days > 0.0 {
            wanted.push(
                IndexModel::builder()
                    .keys(doc! { "timestamp": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("timestamp_ttl".to_string())
                            .expire_after(Duration::from_secs_f64(days * 86_400.0))
                            .build(),
                    )
                    .build(),
            );
        }
        let missing: Vec<IndexModel> = wanted
            .into_iter()
            .filter(|m| {
                m.options
                    .as_ref()
                    .and_then(|o| o.name.as_ref())
                    .is_some_and(|n| !have.contains(n))
            })
            .collect();
        if !missing.is_empty() {
            let n = missing.len();
            coll.create_indexes(missing).await?;
            report.push(format!("created {n} index(es) on {name}"));
        }
    }
    let sessions = db.collection::<Document>(&names.sessions);
    if !sessions
        .list_index_names()
        .await
        .unwrap_or_default()
        .iter()
        .any(|n| n == "spec_time")
    {
        sessions
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "spec": 1, "timestamp": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("spec_time".to_string())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        report.push(format!("created index on {}", names.sessions));
    }
    Ok(report)
}

/// Where a writer's rollups stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every minute before this is final and written.
    pub minutes_ms: i64,
    /// Every session bucket before this is final and written.
    pub sessions_ms: Option<i64>,
    pub watermark_ms: i64,
}

fn checkpoint_id(writer: &str) -> String {
    format!("rollups:{writer}")
}

pub async fn load_checkpoint(
    db: &Database,
    names: &CollectionNames,
    writer: &str,
) -> mongodb::error::Result<Option<Checkpoint>> {
    let found = db
        .collection::<Document>(&names.checkpoints)
        .find_one(doc! { "_id": checkpoint_id(writer) })
        .await?;
    Ok(found.and_then(|d| {
        Some(Checkpoint {
            minutes_ms: d.get_datetime("minutes").ok()?.timestamp_millis(),
            sessions_ms: d
                .get_datetime("sessions")
                .ok()
                .map(|s| s.timestamp_millis()),
            watermark_ms: d.get_datetime("watermark").ok()?.timestamp_millis(),
        })
    }))
}

pub async fn save_checkpoint(
    db: &Database,
    names: &CollectionNames,
    writer: &str,
    cp: Checkpoint,
    now_ms: i64,
) -> Result<(), RollupError> {
    let date = |ms: i64| bson::DateTime::from_millis(ms);
    let mut d = doc! {
        "_id": checkpoint_id(writer),
        "writer": writer,
        "minutes": date(cp.minutes_ms),
        "watermark": date(cp.watermark_ms),
        "updatedAt": date(now_ms),
    };
    if let Some(s) = cp.sessions_ms {
        d.insert("sessions", date(s));
    }
    replace_all(db, &names.checkpoints, vec![raw(&names.checkpoints, &d)?]).await
}
