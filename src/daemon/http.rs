//! The daemon's HTTP API: the router, and every route but the events endpoint.
//!
//! In: HTTP requests. Out: `/healthz`, `/readyz` (MongoDB reachable and the
//! collections ready), `/metrics` (OpenMetrics text) and the read-only alert
//! API (`/v1/alerts/rules`, `/v1/alerts/state`, `/v1/alerts/history`, which
//! take the same API keys as the events endpoint); `POST /v1/events` is
//! `ingest::http`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::alerting::api::{self as alert_api, HistoryError};
use crate::alerting::AlertEngine;
use crate::ingest::auth::{presented_key, Auth, Verdict};
use crate::ingest::http::EventsState;
use crate::ingest::metrics::IngestMetrics;
use crate::ingest::writer::Writer;
use crate::store::readiness::Readiness;

pub struct DaemonState {
    pub auth: Arc<Auth>,
    pub readiness: Arc<Readiness>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<IngestMetrics>,
    /// Read for the queue depth gauge at each scrape.
    pub writer: Writer,
    /// The alert engine, when this daemon evaluates rules.
    pub alerts: Option<Arc<AlertEngine>>,
}

pub fn router(events: Arc<EventsState>, daemon: Arc<DaemonState>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/alerts/rules", get(alert_rules))
        .route("/v1/alerts/state", get(alert_states))
        .route("/v1/alerts/history", get(alert_history))
        .with_state(daemon)
        .merge(crate::ingest::http::router(events))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn readyz(State(state): State<Arc<DaemonState>>) -> Response {
    let report = state.readiness.probe().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics(State(state): State<Arc<DaemonState>>) -> Response {
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

/// The alert API takes the same keys (and rate limits) as the events API.
fn alert_engine<'a>(
    state: &'a DaemonState,
    headers: &HeaderMap,
) -> Result<&'a AlertEngine, (StatusCode, &'static str)> {
    match state.auth.check(presented_key(headers), Instant::now()) {
        Verdict::Allowed { .. } => {}
        Verdict::Unauthorized => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "a valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ))
        }
        Verdict::Limited { .. } => {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "this API key is over its rate limit; retry later",
            ))
        }
    }
    state.alerts.as_deref().ok_or((
        StatusCode::NOT_FOUND,
        "alerting is not enabled in this daemon: set alerting.enabled = true",
    ))
}

async fn alert_rules(State(state): State<Arc<DaemonState>>, headers: HeaderMap) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => Json(alert_api::rules(e)).into_response(),
        Err((status, msg)) => error(status, msg),
    }
}

async fn alert_states(State(state): State<Arc<DaemonState>>, headers: HeaderMap) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => Json(alert_api::states(e)).into_response(),
        Err((status, msg)) => error(status, msg),
    }
}

async fn alert_history(
    State(state): State<Arc<DaemonState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match alert_engine(&state, &headers) {
        Ok(e) => match alert_api::history(e, &params).await {
            Ok(v) => Json(v).into_response(),
            // The store's failures are the database's, not the request's.
            Err(why @ HistoryError::Store(_)) => {
                error(StatusCode::SERVICE_UNAVAILABLE, why.to_string())
            }
            Err(why) => error(StatusCode::BAD_REQUEST, why.to_string()),
        },
        Err((status, msg)) => error(status, msg),
    }
}
