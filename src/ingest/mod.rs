//! Event ingest: the HTTP events API of the daemon.
//!
//! In: `POST /v1/events` bodies (JSON object, JSON array or NDJSON; gzip or
//! zstd). Out: valid events stored in the `events` time-series collection
//! (acknowledged by MongoDB before the request is answered), refused events in
//! `dead_letters` with their reason, and a response listing both.
//!
//! Stages: [`decode`] (body → event bytes) → [`event`] (bytes → validated
//! event) → [`writer`] (group commit) ; [`http`] wires them to axum, [`auth`]
//! guards the door.

pub mod auth;
pub mod dead_letters;
pub mod decode;
pub mod event;
pub mod http;
pub mod json;
pub mod metrics;
pub mod writer;

use chrono::{DateTime, Utc};

pub use decode::{BodyError, Format};
pub use event::{Event, Limits, Rejection, Validator};

/// A request body, decoded and validated.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    /// Valid events with their index in the request.
    pub events: Vec<(usize, Event<'a>)>,
    /// Refused events with their raw bytes (for `dead_letters`).
    pub rejected: Vec<(Rejection, &'a [u8])>,
}

/// Splits and validates a decompressed body. This is the whole CPU cost of
/// accepting events before storage, and what `benches/ingest_decode.rs` measures.
pub fn parse_body<'a>(
    validator: &Validator,
    body: &'a [u8],
    format: Format,
    now: DateTime<Utc>,
) -> Result<Parsed<'a>, BodyError> {
    let items = decode::split(body, format, validator.limits.max_events_per_request)?;
    let mut parsed = Parsed {
        events: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
    };
    for (index, bytes) in items.into_iter().enumerate() {
        match validator.event(index, bytes, now) {
            Ok(e) => parsed.events.push((index, e)),
            Err(r) => parsed.rejected.push((r, bytes)),
        }
    }
    Ok(parsed)
}
