//! The events endpoint: `POST /v1/events`.
//!
//! In: HTTP requests. Out: JSON answers; a 2xx only for events MongoDB has
//! acknowledged. Statuses: 200 (all or some accepted; the rest listed), 422 (none
//! valid), 400/413/415 (the body as a whole), 401, 409 (every event is a copy of
//! one an unanswered request is storing), 429 (rate limit, or every
//! event would open a dimension tuple past `rollups.max_open_tuples`) and 503
//! (with `Retry-After`). Events with an id (their own, or derived from the
//! request's `Idempotency-Key`) that is stored already count as accepted and are
//! not stored again (`duplicates` in the answer).
//! The daemon's other routes are in `daemon::http`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;

use super::auth::{presented_key, Auth, Verdict};
use super::dead_letters::DeadLetters;
use super::decode::{self, BodyError, Format};
use super::metrics::{IngestMetrics, StatusLabel};
use super::record::{NotRecorded, Recorder, Refusal};
use super::validate::check_event_id;
use super::writer::Writer;
use super::{parse_body, Rejection, Validator};
use crate::store::readiness::Readiness;

pub struct EventsState {
    pub validator: Validator,
    pub writer: Writer,
    pub auth: Arc<Auth>,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<IngestMetrics>,
    pub readiness: Arc<Readiness>,
    /// Seconds a client is told to wait after a 503.
    pub retry_after_secs: u64,
    /// Stored with every raw event, so recovery and backfill rebuild only this daemon's rollups.
    pub writer_id: String,
    /// Set once recovery has rebuilt the rollup windows; events are refused
    /// (503) until then, so none is both replayed and recorded live.
    pub recorder: Arc<OnceLock<Arc<dyn Recorder>>>,
}

pub fn router(state: Arc<EventsState>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .with_state(state)
}

async fn post_events(
    State(state): State<Arc<EventsState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = accept(&state, &headers, body).await;
    state
        .metrics
        .requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "accepted": 0, "error": message.into() })),
    )
        .into_response()
}

fn retry_later(seconds: u64, message: impl Into<String>) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    r
}

fn body_status(e: &BodyError) -> StatusCode {
    match e {
        BodyError::TooLarge { .. } | BodyError::TooManyEvents { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        BodyError::BadCompression { .. }
        | BodyError::Empty
        | BodyError::BadJson(_)
        | BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
    }
}

async fn accept(state: &EventsState, headers: &HeaderMap, body: Body) -> Response {
    let key = match state.auth.check(presented_key(headers), Instant::now()) {
        Verdict::Allowed { key } => key,
        Verdict::Unauthorized => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "a valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        Verdict::Limited { retry_after } => {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this API key is over its rate limit; retry in {seconds} s or send larger batches"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return r;
        }
    };
    if let Err(why) = state.readiness.accepting() {
        return retry_later(
            state.retry_after_secs,
            format!("not ready to store events: {why}"),
        );
    }
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let format = match Format::from_content_type(header_text(header::CONTENT_TYPE)) {
        Ok(f) => f,
        Err(e) => return error(body_status(&e), e.to_string()),
    };
    let limit = state.validator.limits.max_body_bytes;
    let compressed = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return error(body_status(&e), e.to_string()),
    };
    let raw = match decode::decompress(&compressed, header_text(header::CONTENT_ENCODING), limit) {
        Ok(raw) => raw,
        Err(e) => return error(body_status(&e), e.to_string()),
    };
    let idempotency_key = match header_text(header::HeaderName::from_static(IDEMPOTENCY_KEY)) {
        None if headers.contains_key(IDEMPOTENCY_KEY) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the Idempotency-Key header must be printable text",
            )
        }
        None => None,
        Some(k) => match check_event_id(k) {
            Ok(()) => Some(k),
            Err(why) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("bad Idempotency-Key header: {why}; send a unique key per batch (a UUID, say) and the same key when retrying it"),
                )
            }
        },
    };
    let now = Utc::now();
    let parsed = match parse_body(&state.validator, &raw, format, now) {
        Ok(p) => p,
        Err(e) => {
            if let BodyError::BadJson(_) = e {
                let r = Rejection {
                    index: 0,
                    path: String::new(),
                    reason: e.to_string(),
                    kind: "malformed_body",
                };
                state.metrics.reject(r.kind);
                record_dead_letters(state, &[(r, &raw[..])], key.as_deref(), now).await;
            }
            return error(body_status(&e), e.to_string());
        }
    };

    let Some(recorder) = state.recorder.get() else {
        return retry_later(
            state.retry_after_secs,
            "not ready to store events: rebuilding rollup windows",
        );
    };
    let mut rejected = parsed.rejected;
    let mut events = parsed.events;
    if let Some(key) = idempotency_key {
        give_ids(&mut events, key);
    }
    let recorded = match recorder
        .clone()
        .record(events, &state.writer, &state.writer_id)
        .await
    {
        Ok(r) => r,
        Err(
            e @ (NotRecorded::Write(_) | NotRecorded::ShuttingDown | NotRecorded::Unanswered(_)),
        ) => return retry_later(state.retry_after_secs, e.to_string()),
    };
    let mut waiting = Vec::new();
    for (index, refusal) in recorded.refused {
        let r = refusal_rejection(index, refusal);
        // Not a bad event: a copy of one being stored; it is not dead-lettered.
        if r.kind == IN_FLIGHT {
            waiting.push(r);
        } else {
            rejected.push((r, &[][..]));
        }
    }
    let stored = recorded.stored;
    let duplicates = recorded.duplicates.len();

    state.metrics.accepted.inc_by(stored.len() as u64);
    // A duplicate counts as accepted: the client's event is stored, once.
    let accepted = stored.len() + duplicates;
    for (_, e) in &stored {
        state
            .metrics
            .observe_lag((now - e.timestamp).num_milliseconds() as f64 / 1000.0);
    }
    rejected.sort_by_key(|(r, _)| r.index);
    for (r, _) in &rejected {
        state.metrics.reject(r.kind);
    }
    record_dead_letters(state, &rejected, key.as_deref(), now).await;
    let only_waiting = rejected.is_empty() && !waiting.is_empty();
    for r in waiting {
        state.metrics.reject(r.kind);
        rejected.push((r, &[][..]));
    }
    rejected.sort_by_key(|(r, _)| r.index);

    let over_tuple_bound = rejected.iter().any(|(r, _)| r.kind == TOO_MANY_TUPLES);
    let status = if accepted == 0 && only_waiting {
        StatusCode::CONFLICT
    } else if accepted == 0 && over_tuple_bound {
        // Not the event's fault alone: the daemon is full; later it may fit.
        StatusCode::TOO_MANY_REQUESTS
    } else if accepted == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let rejected: Vec<&Rejection> = rejected.iter().map(|(r, _)| r).collect();
    let mut body = json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "rejectedCount": rejected.len(),
        "rejected": rejected,
    });
    if status == StatusCode::TOO_MANY_REQUESTS {
        body["error"] = json!("no event of this request was stored: they would open new dimension tuples past rollups.max_open_tuples; see `rejected`");
    }
    if status == StatusCode::CONFLICT {
        body["error"] = json!("events with these ids are being stored by an earlier request that has not been answered yet; retry in 1 s");
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::CONFLICT {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    } else if over_tuple_bound {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(TUPLE_RETRY_AFTER_SECS),
        );
    }
    response
}

/// Reads up to `limit` bytes. Past it, the rest is read and thrown away (up
/// to a bound) before answering 413, so the client finishes sending and can
/// read the answer instead of meeting a reset connection.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    let mut seen = 0usize;
    let drain_bound = limit.saturating_mul(8).max(64 * 1024 * 1024);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        seen += chunk.len();
        if seen <= limit {
            out.extend_from_slice(&chunk);
        } else if seen > drain_bound {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

async fn record_dead_letters(
    state: &EventsState,
    rejected: &[(Rejection, &[u8])],
    key: Option<&str>,
    now: chrono::DateTime<Utc>,
) {
    if rejected.is_empty() {
        return;
    }
    let docs = rejected
        .iter()
        .map(|(r, raw)| state.dead_letters.document(r, raw, key, now))
        .collect();
    if let Err(e) = state.dead_letters.store(docs).await {
        state
            .metrics
            .dead_letter_failures
            .inc_by(rejected.len() as u64);
        tracing::warn!(
            count = rejected.len(),
            "could not store rejected events in dead_letters: {e}"
        );
    }
}

/// A refusal as the client reads it: what was wrong and what to do.
pub(crate) fn refusal_rejection(index: usize, refusal: Refusal) -> Rejection {
    match refusal {
        // Events whose minute is already final would never be counted: they are
        // refused before storing, so `events` and the rollups hold the same events.
        Refusal::Late {
            minute_start_ms,
            watermark_ms,
        } => Rejection {
            index,
            path: "timestamp".into(),
            reason: format!(
                "too late: the minute starting {} is already final (watermark {}); events may arrive at most rollups.allowed_lateness_secs behind the newest",
                rfc3339(minute_start_ms),
                rfc3339(watermark_ms)
            ),
            kind: "late",
        },
        // Bounded memory: past the bound, new tuples wait for windows to close
        // (a tuple stays open until its month is final); open ones still pass.
        Refusal::TooManyTuples { limit } => Rejection {
            index,
            path: "metadata.dimensions".into(),
            reason: format!(
                "too many distinct dimension tuples: this event's combination of dimension values is new and the daemon already holds its limit of {limit} open tuples (rollups.max_open_tuples); it was not stored. Events with combinations already open are still accepted. Keep high-cardinality values (user ids, request ids) out of the rollup spec's dimensions (put them in attributes or metrics), or raise rollups.max_open_tuples"
            ),
            kind: TOO_MANY_TUPLES,
        },
        Refusal::ByMongodb(why) => Rejection {
            index,
            path: String::new(),
            reason: why,
            kind: "refused_by_mongodb",
        },
        Refusal::InFlight => Rejection {
            index,
            path: "id".into(),
            reason: "an event with this id is being stored by an earlier request that has not been answered yet; it was not stored again. Retry in 1 s: it is then either stored or a duplicate (if MongoDB broke the connection under that insert, its outcome is looked up for up to 30 s)".into(),
            kind: IN_FLIGHT,
        },
    }
}

/// The rejection kind of [`Refusal::InFlight`]: not a bad event, so never dead-lettered.
const IN_FLIGHT: &str = "in_flight";

/// The header of a request that may be retried: its events without an id of
/// their own get `<key>#<index in the request>`, so a retry of the same body with
/// the same key stores nothing twice.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn give_ids(events: &mut [(usize, crate::event::Event<'_>)], key: &str) {
    for (index, event) in events {
        if event.id.is_none() {
            event.id = Some(format!("{key}#{index}").into());
        }
    }
}

/// The rejection kind of [`Refusal::TooManyTuples`]: the request answers 429 when nothing else passed.
const TOO_MANY_TUPLES: &str = "too_many_tuples";

/// Seconds a client refused for the tuple bound is told to wait: windows close minute by minute.
const TUPLE_RETRY_AFTER_SECS: u64 = 60;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
