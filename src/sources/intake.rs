//! The message path every broker source shares.
//!
//! In: one broker message (its body, where it came from, whether the broker says
//! it was delivered before). Out: [`Settled::Ack`] once every event of it is stored
//! (or was already: a duplicate) or dead-lettered, so the source may acknowledge
//! it; [`Settled::Unacked`] when the daemon stops first, so the broker redelivers it.
//! While MongoDB is slow or down the message is retried here, unacknowledged,
//! with a growing pause: a source whose every slot holds such a message takes no
//! more, which is the backpressure.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::Document;
use chrono::Utc;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{stopped, OutcomeLabel, SourceMetrics};
use crate::event::Event;
use crate::ingest::dead_letters::DeadLetters;
use crate::ingest::decode::{self, BodyError, Format};
use crate::ingest::http::{refusal_rejection, EventsState};
use crate::ingest::record::{Recorded, Refusal};
use crate::ingest::{parse_body, Rejection};

pub struct Intake {
    /// What `POST /v1/events` uses: validator, writer, recorder, dead letters, readiness.
    pub events: Arc<EventsState>,
    pub metrics: Arc<SourceMetrics>,
    /// `events.dead_letters`, keeping whole messages (`DeadLetters::keeping`).
    pub dead_letters: DeadLetters,
    /// Messages waiting per source, so an outage is logged once.
    pub waiting: Mutex<HashMap<String, usize>>,
    /// Dead letters per source since it last logged some, so a stream of them
    /// (a backlog gone past the lateness) is one line every few seconds.
    pub dead_lettered: Mutex<HashMap<String, DeadLetterLog>>,
    /// True once the previous run's last inserts, which MongoDB may apply after this
    /// run started (a killed daemon's, on a loaded server), had their time to land:
    /// a redelivered message is looked up only then, or its copy could be missed.
    pub late_writes_read: watch::Receiver<bool>,
}

/// One message as a source hands it over.
pub struct Message<'a> {
    /// The configured source name.
    pub source: &'a str,
    pub body: &'a [u8],
    /// `<source>:<coordinate>`, the same at every delivery of this message; its
    /// events without an id get `<id_prefix>#<index>`.
    pub id_prefix: String,
    /// Where it came from, kept with its dead letters (`origin`).
    pub origin: Document,
    /// The broker says it was delivered before: its events may have been stored by
    /// a daemon that died (or lost its partition) before acknowledging, so they are
    /// looked up in `events`, whichever daemon stored them.
    pub redelivered: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    Ack,
    Unacked,
}

/// Why a message must wait: nothing of it is lost, it is tried again.
struct Wait(String);

/// When a source last logged its dead letters, and how many it kept since.
#[derive(Default)]
pub struct DeadLetterLog {
    logged_at: Option<Instant>,
    unlogged: usize,
}

/// At most one dead-letter line per source this often.
const DEAD_LETTER_LOG_EVERY: Duration = Duration::from_secs(10);

/// Pauses between two tries of one message: 100 ms doubling to 5 s.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

impl Intake {
    /// Takes a message until it can be acknowledged, or until `stop`.
    pub async fn settle(&self, m: &Message<'_>, stop: &mut watch::Receiver<bool>) -> Settled {
        let label = SourceMetrics::label(m.source);
        let mut pause = FIRST_PAUSE;
        let mut waiting = false;
        let settled = loop {
            match self.take(m).await {
                Ok(()) => break Settled::Ack,
                Err(Wait(why)) => {
                    self.metrics.retries.get_or_create(&label).inc();
                    if !waiting {
                        self.start_waiting(m.source, &why);
                        waiting = true;
                    }
                }
            }
            if *stop.borrow() {
                break Settled::Unacked;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(stop) => break Settled::Unacked,
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        };
        if waiting {
            self.stop_waiting(m.source);
        }
        settled
    }

    /// One line when a source's first message starts waiting, not one per message.
    fn start_waiting(&self, source: &str, why: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let n = waiting.entry(source.to_string()).or_insert(0);
        if *n == 0 {
            tracing::warn!(
                source,
                "messages cannot be stored yet and stay unacknowledged (no more are taken once every slot waits): {why}; retrying"
            );
        }
        *n += 1;
    }

    fn stop_waiting(&self, source: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = waiting.get_mut(source) {
            *n -= 1;
            if *n == 0 {
                tracing::info!(source, "no message of this source is waiting any more");
            }
        }
    }

    async fn take(&self, m: &Message<'_>) -> Result<(), Wait> {
        let state = &self.events;
        state.readiness.accepting().map_err(Wait)?;
        let Some(recorder) = state.recorder.get() else {
            return Err(Wait("rebuilding rollup windows".into()));
        };
        let now = Utc::now();
        let format = body_format(m.body);
        let mut parsed = match parse_body(&state.validator, m.body, format, now) {
            Ok(p) => p,
            Err(e) => {
                let kind = match e {
                    BodyError::TooLarge { .. } | BodyError::TooManyEvents { .. } => "too_large",
                    _ => "malformed_body",
                };
                let r = Rejection {
                    index: 0,
                    path: String::new(),
                    reason: e.to_string(),
                    kind,
                };
                return self.dead_letter(m, vec![(r, m.body)], now).await;
            }
        };
        for (index, event) in &mut parsed.events {
            if event.id.is_none() {
                event.id = Some(format!("{}#{index}", m.id_prefix).into());
            }
        }
        let mut duplicates = 0;
        if m.redelivered {
            // A closed channel: the rollups never started, and nothing is stored anyway.
            if !*self.late_writes_read.borrow() && self.late_writes_read.has_changed().is_ok() {
                return Err(Wait(
                    "a redelivered message waits until the previous run's last inserts had their time to land (ingest.writer.write_timeout_ms)".into(),
                ));
            }
            let stored = self.stored_before(&parsed.events).await?;
            let before = parsed.events.len();
            parsed.events.retain(|(_, e)| {
                let ms = e.timestamp.timestamp_millis();
                !e.id
                    .as_deref()
                    .is_some_and(|id| stored.contains(&(id.to_string(), ms)))
            });
            duplicates += before - parsed.events.len();
        }
        let recorded = recorder
            .clone()
            .record(parsed.events, &state.writer, &state.writer_id)
            .await
            .map_err(|e| Wait(e.to_string()))?;
        let Recorded {
            stored,
            refused,
            duplicates: found,
        } = recorded;
        duplicates += found.len();
        state.metrics.accepted.inc_by(stored.len() as u64);
        self.count(m.source, "stored", stored.len());
        self.count(m.source, "duplicate", duplicates);
        if refused.iter().any(|(_, r)| matches!(r, Refusal::InFlight)) {
            // A copy of this message is being stored right now; once it is answered
            // this one's events are duplicates.
            return Err(Wait("an earlier delivery of it is being stored".into()));
        }
        let mut rejected = parsed.rejected;
        if !refused.is_empty() {
            let items = decode::split(m.body, format, usize::MAX).unwrap_or_default();
            for (index, refusal) in refused {
                let raw = items.get(index).copied().unwrap_or_default();
                rejected.push((refusal_rejection(index, refusal), raw));
            }
        }
        if rejected.is_empty() {
            return Ok(());
        }
        rejected.sort_by_key(|(r, _)| r.index);
        self.dead_letter(m, rejected, now).await
    }

    /// The ids among `events` that `events` holds already, by whoever stored them.
    async fn stored_before(
        &self,
        events: &[(usize, Event<'_>)],
    ) -> Result<HashSet<(String, i64)>, Wait> {
        let wanted: Vec<(&str, i64)> = events
            .iter()
            .filter_map(|(_, e)| Some((e.id.as_deref()?, e.timestamp.timestamp_millis())))
            .collect();
        self.events.writer.stored_ids(&wanted).await.map_err(|why| {
            Wait(format!(
                "could not tell whether a redelivered message was stored before: {why}"
            ))
        })
    }

    /// Keeps refused events with the message's coordinates; the message may then be
    /// acknowledged, so a poison message never stalls its queue or partition.
    async fn dead_letter(
        &self,
        m: &Message<'_>,
        rejected: Vec<(Rejection, &[u8])>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), Wait> {
        let state = &self.events;
        let docs = rejected
            .iter()
            .map(|(r, raw)| {
                state.metrics.reject(r.kind);
                let mut d = self.dead_letters.document(r, raw, None, now);
                d.insert("origin", m.origin.clone());
                d
            })
            .collect();
        state.dead_letters.store(docs).await.map_err(|e| {
            Wait(format!(
                "could not store its refused events in dead_letters: {e}"
            ))
        })?;
        self.count(m.source, "dead_letter", rejected.len());
        if let Some((newest, _)) = rejected.first() {
            self.log_dead_letters(m.source, newest);
        }
        Ok(())
    }

    /// Events of a source go to `dead_letters` unseen by any client: say so in the
    /// log, the first time and then at most every [`DEAD_LETTER_LOG_EVERY`].
    fn log_dead_letters(&self, source: &str, newest: &Rejection) {
        let mut logs = self.dead_lettered.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(source.to_string()).or_default();
        log.unlogged += 1;
        if log
            .logged_at
            .is_some_and(|at| at.elapsed() < DEAD_LETTER_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            source,
            "{} message(s) with refused events went to dead_letters since the last such line (the latest: {} at '{}': {})",
            log.unlogged,
            newest.kind,
            newest.path,
            newest.reason
        );
        log.logged_at = Some(Instant::now());
        log.unlogged = 0;
    }

    fn count(&self, source: &str, outcome: &'static str, n: usize) {
        if n > 0 {
            self.metrics
                .events
                .get_or_create(&OutcomeLabel {
                    source: source.to_string(),
                    outcome,
                })
                .inc_by(n as u64);
        }
    }
}

/// A broker message carries no `Content-Type` we can trust: an array is JSON, and
/// so is a body that is one JSON value (even over several lines); anything else
/// with lines is NDJSON.
pub fn body_format(body: &[u8]) -> Format {
    let trimmed = body.trim_ascii();
    if trimmed.first() == Some(&b'[') || !trimmed.contains(&b'\n') {
        return Format::Json;
    }
    match serde_json::from_slice::<&RawValue>(trimmed) {
        Ok(_) => Format::Json,
        Err(_) => Format::Ndjson,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_event_an_array_or_ndjson() {
        assert_eq!(body_format(br#" {"a": 1} "#), Format::Json);
        assert_eq!(body_format(b"{\n  \"a\": 1\n}\n"), Format::Json);
        assert_eq!(body_format(b"[{\"a\": 1},\n{\"a\": 2}]"), Format::Json);
        assert_eq!(body_format(b"{\"a\": 1}\n{\"a\": 2}\n"), Format::Ndjson);
        assert_eq!(body_format(b"not json\nat all"), Format::Ndjson);
    }
}
