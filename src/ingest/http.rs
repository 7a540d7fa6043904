//! The daemon's HTTP API: `POST /v1/events`, `/healthz`, `/readyz`, `/metrics`.
//!
//! In: HTTP requests. Out: JSON answers; a 2xx only for events MongoDB has
//! acknowledged. Statuses: 200 (all or some accepted; the rest listed), 422 (none
//! valid), 400/413/415 (the body as a whole), 401, 429 and 503 (with `Retry-After`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::auth::{Auth, Verdict};
use super::dead_letters::DeadLetters;
use super::decode::{self, BodyError, Format};
use super::metrics::{IngestMetrics, StatusLabel};
use super::writer::{Queued, Reply, Writer};
use super::{parse_body, Event, Rejection, Validator};
use crate::alerting::{api as alert_api, engine::AlertEngine};
use crate::daemon::readiness::Readiness;
use crate::rollup::Rollups;

pub struct ApiState {
    pub validator: Validator,
    pub writer: Writer,
    pub auth: Auth,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<IngestMetrics>,
    pub registry: Arc<Registry>,
    pub readiness: Arc<Readiness>,
    /// Seconds a client is told to wait after a 503.
    pub retry_after_secs: u64,
    /// Stored with every raw event, so recovery and backfill rebuild only this daemon's rollups.
    pub writer_id: String,
    /// Set once recovery has rebuilt the rollup windows; events are refused
    /// (503) until then, so none is both replayed and recorded live.
    pub rollups: Arc<OnceLock<Arc<Rollups>>>,
    /// The alert engine, when this daemon evaluates rules.
    pub alerts: Option<Arc<AlertEngine>>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/alerts/rules", get(alert_rules))
        .route("/v1/alerts/state", get(alert_states))
        .route("/v1/alerts/history", get(alert_history))
        .with_state(state)
}

async fn post_events(
    State(state): State<Arc<ApiState>>,
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

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(token.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
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

async fn accept(state: &ApiState, headers: &HeaderMap, body: Body) -> Response {
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

    let Some(rollups) = state.rollups.get() else {
        return retry_later(
            state.retry_after_secs,
            "not ready to store events: rebuilding rollup windows",
        );
    };
    let mut rejected = parsed.rejected;
    // Events whose minute is already final would never be counted: refuse them
    // before storing, so `events` and the rollups hold the same events.
    let admissions = rollups.admit(
        parsed
            .events
            .iter()
            .map(|(_, e)| e.timestamp.timestamp_millis()),
    );
    let mut indexes = Vec::with_capacity(parsed.events.len());
    let mut events: Vec<Event> = Vec::with_capacity(parsed.events.len());
    for ((index, event), late) in parsed.events.into_iter().zip(admissions) {
        match late {
            None => {
                indexes.push(index);
                events.push(event);
            }
            Some(late) => rejected.push((
                Rejection {
                    index,
                    path: "timestamp".into(),
                    reason: format!(
                        "too late: the minute starting {} is already final (watermark {}); events may arrive at most rollups.allowed_lateness_secs behind the newest",
                        rfc3339(late.window_start_ms),
                        rfc3339(late.watermark_ms)
                    ),
                    kind: "late",
                },
                &[][..],
            )),
        }
    }
    let mut stored: Vec<Event> = Vec::with_capacity(events.len());
    if !events.is_empty() {
        let mut admitted = Admitted {
            rollups: rollups.clone(),
            times: events
                .iter()
                .map(|e| e.timestamp.timestamp_millis())
                .collect(),
            queued: None,
            settled: false,
        };
        let docs = events
            .iter()
            .map(|e| e.to_document(&state.writer_id))
            .collect();
        let queued = match state.writer.enqueue(docs).await {
            Ok(q) => admitted.queued.insert(q),
            Err(e) => {
                return retry_later(
                    state.retry_after_secs,
                    format!("{e}; nothing from this request was stored"),
                );
            }
        };
        let reply = queued.await;
        admitted.settled = true;
        let refused = match reply {
            Ok(Reply {
                result: Ok(refused),
                ..
            }) => refused,
            Ok(Reply { result: Err(e), .. }) => {
                rollups.not_stored(&events);
                return retry_later(
                    state.retry_after_secs,
                    format!("{e}; nothing from this request was stored"),
                );
            }
            Err(_) => {
                rollups.not_stored(&events);
                return retry_later(
                    state.retry_after_secs,
                    "the daemon is shutting down; nothing from this request was stored",
                );
            }
        };
        let mut refused = refused.into_iter().peekable();
        let mut not_stored = Vec::new();
        for (i, (index, event)) in indexes.into_iter().zip(events).enumerate() {
            match refused.next_if(|(r, _)| *r == i) {
                Some((_, why)) => {
                    rejected.push((
                        Rejection {
                            index,
                            path: String::new(),
                            reason: why,
                            kind: "refused_by_mongodb",
                        },
                        &[][..],
                    ));
                    not_stored.push(event);
                }
                None => stored.push(event),
            }
        }
        rollups.not_stored(&not_stored);
        rollups.stored(&stored);
    }

    let accepted = stored.len();
    state.metrics.accepted.inc_by(accepted as u64);
    for e in &stored {
        state
            .metrics
            .observe_lag((now - e.timestamp).num_milliseconds() as f64 / 1000.0);
    }
    rejected.sort_by_key(|(r, _)| r.index);
    for (r, _) in &rejected {
        state.metrics.reject(r.kind);
    }
    record_dead_letters(state, &rejected, key.as_deref(), now).await;

    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let rejected: Vec<&Rejection> = rejected.iter().map(|(r, _)| r).collect();
    (
        status,
        Json(json!({
            "accepted": accepted,
            "rejectedCount": rejected.len(),
            "rejected": rejected,
        })),
    )
        .into_response()
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
    state: &ApiState,
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

/// The rollup admissions of a request's events. They are settled when the
/// request learns what MongoDB stored; if the client goes away first (axum then
/// drops the handler), they are settled in the background from the writer's
/// reply, so a window is never held open, nor an event left uncounted, by a
/// request nobody waits for.
struct Admitted {
    rollups: Arc<Rollups>,
    times: Vec<i64>,
    queued: Option<Queued>,
    settled: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let rollups = self.rollups.clone();
        let times = std::mem::take(&mut self.times);
        let Some(queued) = self.queued.take() else {
            rollups.release(&times);
            return;
        };
        tokio::spawn(async move {
            match queued.await {
                Ok(Reply {
                    result: Ok(refused),
                    docs,
                }) => {
                    let refused: std::collections::HashSet<usize> =
                        refused.iter().map(|r| r.0).collect();
                    let mut stored = Vec::new();
                    let mut released = Vec::new();
                    for (i, (d, t)) in docs.iter().zip(&times).enumerate() {
                        match (refused.contains(&i), Event::from_stored(d)) {
                            (false, Ok(e)) => stored.push(e),
                            _ => released.push(*t),
                        }
                    }
                    rollups.stored(&stored);
                    rollups.release(&released);
                }
                _ => rollups.release(&times),
            }
        });
    }
}

/// The alert API takes the same keys as the events API.
fn alert_engine<'a>(
    state: &'a ApiState,
    headers: &HeaderMap,
) -> Result<&'a AlertEngine, (StatusCode, &'static str)> {
    match state.auth.check(presented_key(headers), Instant::now()) {
        Verdict::Allowed { .. } => {}
        Verdict::Unauthorized => {
            return Err((StatusCode::UNAUTHORIZED, "a valid API key is required"))
        }
        Verdict::Limited { .. } => {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "this API key is over its rate limit",
            ))
        }
    }
    state.alerts.as_deref().ok_or((
        StatusCode::NOT_FOUND,
        "alerting is not enabled in this daemon (alerting.enabled)",
    ))
}

async fn alert_rules(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => Json(alert_api::rules(e)).into_response(),
        Err((status, msg)) => error(status, msg),
    }
}

async fn alert_states(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => Json(alert_api::states(e)).into_response(),
        Err((status, msg)) => error(status, msg),
    }
}

async fn alert_history(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => match alert_api::history(e, &params).await {
            Ok(v) => Json(v).into_response(),
            Err(msg) => error(StatusCode::BAD_REQUEST, msg),
        },
        Err((status, msg)) => error(status, msg),
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let report = state.readiness.probe().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    state.metrics.queue_depth.set(state.writer.queued() as i64);
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode metrics: {e}"),
        ),
    }
}
