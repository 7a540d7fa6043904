//! CallResource: what the editors and template variables ask for, and the
//! seed's analytics API as JSON.
//!
//! `GET schema`, `event-types`, `dimensions`, `dimension-values`; `POST build`
//! (the pipeline a builder query runs); `GET analytics/metrics`,
//! `analytics/top/{dimension}`, `analytics/timeseries`. Times are epoch ms in
//! `from`/`to` (default: the last 24 hours).

use std::collections::HashMap;

use bytes::Bytes;
use grafana_plugin_sdk::backend::{self, ErrIntoHttpResponse};
use http::{Response, StatusCode};
use serde_json::{json, Value};
use thiserror::Error;

use super::MongoPulsePlugin;
use crate::query::metadata::{self, Scope};
use crate::query::model::{self, BuilderQuery, Query};
use crate::query::plan::{plan, PlanContext};
use crate::query::run::{run_builder, Env};

#[derive(Debug, Error)]
#[error("{0}")]
pub struct ResourceError(String);

impl ErrIntoHttpResponse for ResourceError {}

type Reply = (
    Response<Bytes>,
    futures_util::stream::Empty<Result<Bytes, ResourceError>>,
);

fn reply(status: StatusCode, body: Value) -> Result<Reply, ResourceError> {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .map_err(|e| ResourceError(e.to_string()))?;
    Ok((response, futures_util::stream::empty()))
}

fn bad(message: impl Into<String>) -> Result<Reply, ResourceError> {
    reply(StatusCode::BAD_REQUEST, json!({ "error": message.into() }))
}

fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[backend::async_trait]
impl backend::ResourceService for MongoPulsePlugin {
    type Error = ResourceError;
    type InitialResponse = Response<Bytes>;
    type Stream = futures_util::stream::Empty<Result<Bytes, ResourceError>>;

    async fn call_resource(
        &self,
        r: backend::CallResourceRequest<Self>,
    ) -> Result<Reply, Self::Error> {
        let instance = match self
            .instance(r.plugin_context.instance_settings.as_ref())
            .await
        {
            Ok(i) => i,
            Err(e) => return reply(StatusCode::BAD_GATEWAY, json!({ "error": e.to_string() })),
        };
        let uri = r.request.uri().clone();
        let path = uri.path().trim_matches('/').to_string();
        let p = params(uri.query());
        let now = chrono::Utc::now().timestamp_millis();
        let time = |k: &str, default: i64| -> Result<i64, String> {
            match p.get(k).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("{k} must be epoch milliseconds, got '{v}'")),
            }
        };
        let (from, to) = match (time("from", now - 86_400_000), time("to", now)) {
            (Ok(f), Ok(t)) if f < t => (f, t),
            (Err(e), _) | (_, Err(e)) => return bad(e),
            _ => return bad("from must be before to"),
        };
        let settings = &instance.settings;
        let db = instance.database();
        let spec = p.get("spec").cloned().unwrap_or_else(|| "default".into());
        let event_type = p.get("eventType").cloned().filter(|t| !t.is_empty());
        let scope = Scope {
            db: &db,
            names: &settings.collections,
            spec: &spec,
            from_ms: from,
            to_ms: to,
            max_time: settings.query_timeout,
        };
        let fail = |e: crate::query::execute::ExecError| {
            reply(StatusCode::BAD_GATEWAY, json!({ "error": e.to_string() }))
        };
        let ctx = PlanContext {
            from_ms: from,
            to_ms: to,
            interval_ms: p
                .get("intervalMs")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60_000),
            now_ms: now,
            retention: settings.retention.clone(),
            collections: settings.collections.clone(),
        };
        let env = Env {
            db: &db,
            cache: None,
            cache_scope: &instance.uid,
            max_time: settings.query_timeout,
            now_ms: now,
            horizon_ms: settings.cache_horizon.as_millis() as i64,
            max_rows: 500_000,
            max_series: 1_000,
        };
        match path.as_str() {
            "event-types" => match scope.event_types().await {
                Ok(v) => reply(StatusCode::OK, json!(v)),
                Err(e) => fail(e),
            },
            "dimensions" => match scope.schema(event_type.as_deref()).await {
                Ok(s) => reply(StatusCode::OK, json!(s.dimensions)),
                Err(e) => fail(e),
            },
            "dimension-values" => {
                let Some(dim) = p.get("dim").filter(|d| !d.is_empty()) else {
                    return bad("dim is required: the dimension whose values to list");
                };
                match scope
                    .dimension_values(
                        dim,
                        event_type.as_deref(),
                        p.get("prefix").map_or("", String::as_str),
                    )
                    .await
                {
                    Ok(v) => reply(StatusCode::OK, json!(v)),
                    Err(e) => fail(e),
                }
            }
            "schema" => {
                let schema = scope.schema(event_type.as_deref()).await;
                let types = scope.event_types().await;
                let specs =
                    metadata::specs(&db, &settings.collections, settings.query_timeout).await;
                match (schema, types, specs) {
                    (Ok(mut s), Ok(t), Ok(sp)) => {
                        s.event_types = t;
                        s.specs = sp;
                        reply(StatusCode::OK, json!(s))
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => fail(e),
                }
            }
            "build" => {
                let body: Value = match serde_json::from_slice(r.request.body()) {
                    Ok(v) => v,
                    Err(e) => return bad(format!("the body must be a query as JSON: {e}")),
                };
                match model::parse(&body) {
                    Ok(Query::Builder(q)) => match plan(&q, &ctx) {
                        Ok(pl) => {
                            let pipeline = crate::query::generate::pipeline(&pl);
                            reply(
                                StatusCode::OK,
                                json!({
                                    "collection": pl.collection,
                                    "level": pl.level.name(),
                                    "bucketMs": pl.bucket_ms,
                                    "strategy": pl.strategy,
                                    "pipeline": pipeline.iter().map(|d| bson::Bson::Document(d.clone()).into_relaxed_extjson()).collect::<Vec<_>>(),
                                    "text": crate::query::execute::pipeline_text(&pl.collection, &pipeline),
                                }),
                            )
                        }
                        Err(e) => reply(
                            StatusCode::BAD_REQUEST,
                            json!({ "error": e.to_string(), "field": e.path }),
                        ),
                    },
                    Ok(_) => bad("build takes a builder-mode query"),
                    Err(e) => reply(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": e.to_string(), "field": e.path }),
                    ),
                }
            }
            p2 if p2 == "analytics/metrics"
                || p2 == "analytics/timeseries"
                || p2.starts_with("analytics/top/") =>
            {
                let measures = if p2 == "analytics/metrics" {
                    json!([
                        {"type": "count"},
                        {"type": "distinct", "key": "userId"},
                        {"type": "distinct", "key": "sessionId"},
                        {"type": "avg", "metric": "pageLoadTime"},
                        {"type": "percentile", "metric": "pageLoadTime", "percentile": 95}
                    ])
                } else {
                    json!([{"type": p.get("measure").map_or("count", String::as_str)}])
                };
                let mut qv = json!({ "eventType": event_type.clone().unwrap_or_else(|| "*".into()), "spec": spec, "measures": measures });
                let top_dim = p2.strip_prefix("analytics/top/").map(str::to_string);
                if let Some(d) = &top_dim {
                    qv["groupBy"] = json!([d]);
                    qv["topN"] = json!({ "limit": p.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).clamp(1, 1000), "measure": 0 });
                }
                let q: BuilderQuery = match model::parse(&qv) {
                    Ok(Query::Builder(q)) => q,
                    Ok(_) => return bad("not a builder query"),
                    Err(e) => return bad(e.to_string()),
                };
                let ctx = if p2 == "analytics/timeseries" {
                    ctx
                } else {
                    PlanContext {
                        interval_ms: 3_600_000,
                        ..ctx
                    }
                };
                let out = match run_builder(&env, &q, &ctx).await {
                    Ok(o) => o,
                    Err(e) => {
                        return reply(StatusCode::BAD_GATEWAY, json!({ "error": e.to_string() }))
                    }
                };
                // Totals merge every bucket of the range, so uniques and percentiles are of the range.
                let totals = crate::query::compute::totals(
                    &q,
                    &out.plan,
                    &out.grid,
                    out.from_ms,
                    out.plan.to_ms,
                );
                let body = if p2 == "analytics/metrics" {
                    let v = |i: usize| totals.iter().find(|t| t.0 == i).and_then(|t| t.2);
                    json!({
                        "from": from, "to": to,
                        "events": v(0), "uniqueUsers": v(1), "uniqueSessions": v(2), "avgPageLoadTime": v(3), "p95PageLoadTime": v(4),
                    })
                } else if let Some(d) = top_dim {
                    let mut rows: Vec<Value> = totals.iter().map(|(_, labels, v)| json!({ "value": labels.get(&d).cloned().unwrap_or_else(|| crate::query::compute::OTHER.into()), "count": v })).collect();
                    rows.sort_by(|a, b| {
                        b["count"]
                            .as_f64()
                            .partial_cmp(&a["count"].as_f64())
                            .unwrap_or(std::cmp::Ordering::Equal)
                    });
                    json!(rows)
                } else {
                    let s = out.series.first();
                    json!(s
                        .map(|s| s
                            .points
                            .iter()
                            .map(|(t, v)| json!({ "time": t, "value": v }))
                            .collect::<Vec<_>>())
                        .unwrap_or_default())
                };
                reply(StatusCode::OK, body)
            }
            other => reply(
                StatusCode::NOT_FOUND,
                json!({ "error": format!("no resource '{other}': use schema, event-types, dimensions, dimension-values, build, analytics/metrics, analytics/top/<dimension> or analytics/timeseries") }),
            ),
        }
    }
}
