//! Execution. In: a collection and a final pipeline (generated from a plan, or
//! a user's checked pipeline). Out: the documents MongoDB returns, bounded by
//! `maxTimeMS` and a row limit, or an error that says what to change; and the
//! pipeline as text, for the panel's query inspector.

use std::time::Duration;

use bson::{Bson, Document};
use futures_util::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::Database;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ExecError {
    #[error("the query took longer than {seconds} s and was stopped: narrow the time range, group by fewer dimensions, or raise queryTimeoutSeconds in the data source")]
    Timeout { seconds: f64 },
    #[error("MongoDB refused the query: {0}")]
    Refused(String),
    #[error("MongoDB could not be reached: {0}")]
    Unreachable(String),
}

/// Rows of one aggregation, and whether the row limit cut it short.
pub struct Fetched {
    pub rows: Vec<Document>,
    pub truncated: bool,
}

pub async fn aggregate(
    db: &Database,
    collection: &str,
    pipeline: Vec<Document>,
    max_time: Duration,
    limit: usize,
) -> Result<Fetched, ExecError> {
    let classify = |e: mongodb::error::Error| match e.kind.as_ref() {
        ErrorKind::Command(c) if c.code == 50 => ExecError::Timeout {
            seconds: max_time.as_secs_f64(),
        },
        ErrorKind::Command(c) => {
            ExecError::Refused(format!("{} (code {} {})", c.message, c.code, c.code_name))
        }
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. } => ExecError::Unreachable(e.to_string()),
        _ => ExecError::Refused(e.to_string()),
    };
    let run = async {
        let mut cursor = db
            .collection::<Document>(collection)
            .aggregate(pipeline)
            .max_time(max_time)
            .batch_size(10_000)
            .await
            .map_err(classify)?;
        let mut rows = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(classify)? {
            if rows.len() == limit {
                return Ok(Fetched {
                    rows,
                    truncated: true,
                });
            }
            rows.push(d);
        }
        Ok(Fetched {
            rows,
            truncated: false,
        })
    };
    // maxTimeMS bounds the server; this bounds the wait for it (and the network).
    match tokio::time::timeout(max_time + Duration::from_secs(2), run).await {
        Ok(r) => r,
        Err(_) => Err(ExecError::Timeout {
            seconds: max_time.as_secs_f64(),
        }),
    }
}

/// The pipeline as relaxed extended JSON, for `executedQueryString`.
pub fn pipeline_text(collection: &str, pipeline: &[Document]) -> String {
    let stages: Vec<serde_json::Value> = pipeline
        .iter()
        .map(|d| Bson::Document(d.clone()).into_relaxed_extjson())
        .collect();
    format!(
        "db.{collection}.aggregate({})",
        serde_json::to_string_pretty(&stages).unwrap_or_default()
    )
}
