//! Refused events, kept with their reason so nobody has to guess what was lost.
//!
//! In: rejections with the raw bytes of each event. Out: documents in
//! `dead_letters` (`receivedAt`, `index`, `path`, `reason`, `kind`, `apiKey`,
//! `raw` cut to `max_raw_bytes`, `rawBytes`, `rawTruncated`).

use std::time::Duration;

use bson::{doc, Document};
use chrono::{DateTime, Utc};
use mongodb::Collection;

use super::validate::Rejection;

#[derive(Clone)]
pub struct DeadLetters {
    collection: Collection<Document>,
    max_raw_bytes: usize,
    timeout: Duration,
}

impl DeadLetters {
    pub fn new(collection: Collection<Document>, max_raw_bytes: usize, timeout: Duration) -> Self {
        DeadLetters {
            collection,
            max_raw_bytes,
            timeout,
        }
    }

    pub fn document(
        &self,
        r: &Rejection,
        raw: &[u8],
        key: Option<&str>,
        at: DateTime<Utc>,
    ) -> Document {
        let text = String::from_utf8_lossy(raw);
        let cut = floor_char_boundary(&text, self.max_raw_bytes);
        doc! {
            "receivedAt": bson::DateTime::from_millis(at.timestamp_millis()),
            "index": r.index as i64,
            "path": &r.path,
            "reason": &r.reason,
            "kind": r.kind,
            "apiKey": key,
            "raw": &text[..cut],
            "rawBytes": raw.len() as i64,
            "rawTruncated": cut < text.len(),
        }
    }

    /// The same collection, keeping raw payloads up to `max_raw_bytes`: a broker
    /// message is acknowledged once dead-lettered, so its dead letter must keep all
    /// of it (an HTTP client still has its body).
    pub fn keeping(&self, max_raw_bytes: usize) -> DeadLetters {
        DeadLetters {
            max_raw_bytes,
            ..self.clone()
        }
    }

    /// Stores the documents; on failure says why, so the caller can count it.
    pub async fn store(&self, docs: Vec<Document>) -> Result<(), String> {
        if docs.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(
            self.timeout,
            self.collection.insert_many(docs).ordered(false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}
