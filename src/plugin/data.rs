//! QueryData: every query of a request runs concurrently and answers for
//! itself — one bad query is an error on its refId, never a failed request.

use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use futures_util::StreamExt;
use grafana_plugin_sdk::backend::{self, DataQueryError, DataQueryStatus};
use grafana_plugin_sdk::data::Frame;
use serde_json::Value;
use thiserror::Error;

use super::instances::Instance;
use super::MongoPulsePlugin;
use crate::query::execute::{aggregate, ExecError};
use crate::query::model::{self, AnnotationsQuery, Query, VariableKind, VariableQuery};
use crate::query::plan::PlanContext;
use crate::query::run::{builder_frames, run_builder, run_pipeline, Env, RunError};
use crate::query::{frames, metadata};

#[derive(Debug, Error)]
#[error("{message}")]
pub struct QueryError {
    ref_id: String,
    message: String,
    status: Status,
}

/// The statuses we answer with (the SDK's type is neither `Copy` nor `Debug`).
#[derive(Clone, Copy, Debug)]
enum Status {
    BadRequest,
    Timeout,
    BadGateway,
    Internal,
}

impl DataQueryError for QueryError {
    fn ref_id(self) -> String {
        self.ref_id
    }

    fn status(&self) -> DataQueryStatus {
        match self.status {
            Status::BadRequest => DataQueryStatus::BadRequest,
            Status::Timeout => DataQueryStatus::Timeout,
            Status::BadGateway => DataQueryStatus::BadGateway,
            Status::Internal => DataQueryStatus::Internal,
        }
    }
}

/// Concurrent queries per request.
const PARALLEL_QUERIES: usize = 8;

/// Header Grafana sets on alert-rule evaluations.
pub fn from_alert(headers: &std::collections::HashMap<String, String>) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("FromAlert") && v.eq_ignore_ascii_case("true"))
}

#[backend::async_trait]
impl backend::DataService for MongoPulsePlugin {
    type Query = Value;
    type QueryError = QueryError;
    type Stream = backend::BoxDataResponseStream<Self::QueryError>;

    async fn query_data(
        &self,
        request: backend::QueryDataRequest<Self::Query, Self>,
    ) -> Self::Stream {
        let alert = from_alert(&request.headers);
        let instance = self
            .instance(request.plugin_context.instance_settings.as_ref())
            .await
            .map_err(|e| e.to_string());
        let plugin = self.clone();
        let runs = request.queries.into_iter().map(move |q| {
            let instance = instance.clone();
            let plugin = plugin.clone();
            async move {
                let ref_id = q.ref_id.clone();
                let started = std::time::Instant::now();
                let result = match instance {
                    Err(message) => Err(QueryError {
                        ref_id,
                        message,
                        status: Status::BadRequest,
                    }),
                    Ok(instance) => run_query(&plugin, &instance, q, alert).await,
                };
                plugin
                    .state
                    .metrics
                    .observe_query(result.is_ok(), started.elapsed());
                result
            }
        });
        Box::pin(futures_util::stream::iter(runs).buffer_unordered(PARALLEL_QUERIES))
    }
}

fn error(ref_id: &str, status: Status, message: impl Into<String>) -> QueryError {
    QueryError {
        ref_id: ref_id.to_string(),
        message: message.into(),
        status,
    }
}

fn run_error(ref_id: &str, e: RunError) -> QueryError {
    match e {
        RunError::Model(m) => error(ref_id, Status::BadRequest, format!("invalid query: {m}")),
        RunError::Exec(ExecError::Timeout { .. }) => error(ref_id, Status::Timeout, e.to_string()),
        RunError::Exec(ExecError::Unreachable(_)) => {
            error(ref_id, Status::BadGateway, e.to_string())
        }
        RunError::Exec(_) | RunError::Data(_) => error(ref_id, Status::Internal, e.to_string()),
    }
}

fn respond(ref_id: String, frames: Vec<Frame>) -> Result<backend::DataResponse, QueryError> {
    let checked = frames
        .iter()
        .map(|f| {
            f.check().map_err(|e| {
                error(
                    &ref_id,
                    Status::Internal,
                    format!("could not build the result: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(backend::DataResponse::new(ref_id.clone(), checked))
}

async fn run_query(
    plugin: &MongoPulsePlugin,
    instance: &Arc<Instance>,
    q: backend::DataQuery<Value>,
    from_alert: bool,
) -> Result<backend::DataResponse, QueryError> {
    let ref_id = q.ref_id.clone();
    let query = model::parse(&q.query).map_err(|e| run_error(&ref_id, RunError::Model(e)))?;
    let settings = &instance.settings;
    let db = instance.database();
    let from_ms = q.time_range.from.timestamp_millis();
    let to_ms = q.time_range.to.timestamp_millis();
    let interval_ms = q.interval.as_millis() as i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let max_time = settings.query_timeout;
    let ctx = PlanContext {
        from_ms,
        to_ms,
        interval_ms,
        now_ms,
        retention: settings.retention.clone(),
        collections: settings.collections.clone(),
    };
    let frames = match query {
        Query::Builder(b) => {
            let env = Env {
                db: &db,
                cache: (settings.cache_max_bytes > 0).then_some(&instance.cache),
                cache_scope: &instance.uid,
                max_time,
                now_ms,
                horizon_ms: settings.cache_horizon.as_millis() as i64,
                max_rows: 500_000,
                max_series: 1_000,
            };
            if from_alert
                && b.measures
                    .iter()
                    .any(|m| matches!(m.kind, model::MeasureKind::Topk { .. }))
            {
                return Err(error(&ref_id, Status::BadRequest, "alert rules need numeric measures; top-K lists cannot be alerted on (use count with a filter)"));
            }
            let outcome = run_builder(&env, &b, &ctx)
                .await
                .map_err(|e| run_error(&ref_id, e))?;
            let mut frames =
                builder_frames(&b, &outcome, from_alert).map_err(|e| run_error(&ref_id, e))?;
            if b.live && !from_alert {
                super::live::attach_channel(plugin, &instance.uid, &q.query, &mut frames);
            }
            frames
        }
        Query::Pipeline(p) => run_pipeline(&db, max_time, &p, &ctx)
            .await
            .map_err(|e| run_error(&ref_id, e))?,
        Query::Variable(v) => variable_frames(&db, instance, &v, from_ms, to_ms, max_time)
            .await
            .map_err(|e| run_error(&ref_id, e))?,
        Query::Annotations(a) => annotation_frames(&db, instance, &a, from_ms, to_ms, max_time)
            .await
            .map_err(|e| run_error(&ref_id, e))?,
        Query::Plugin(_) => {
            vec![super::own_stats::frame(plugin, instance).map_err(|e| run_error(&ref_id, e))?]
        }
    };
    respond(ref_id, frames)
}

fn string_frame(name: &str, values: Vec<String>) -> Result<Frame, RunError> {
    use grafana_plugin_sdk::data::ArrayRefIntoField;
    let array = arrow_array::StringArray::from(values.into_iter().map(Some).collect::<Vec<_>>());
    let field = (&array as &dyn arrow_array::Array)
        .try_into_field(name)
        .map_err(|e| RunError::Data(e.to_string()))?;
    Ok(Frame::new(name.to_string()).with_field(field))
}

async fn variable_frames(
    db: &mongodb::Database,
    instance: &Instance,
    v: &VariableQuery,
    from_ms: i64,
    to_ms: i64,
    max_time: Duration,
) -> Result<Vec<Frame>, RunError> {
    let scope = metadata::Scope {
        db,
        names: &instance.settings.collections,
        spec: &v.spec,
        from_ms,
        to_ms,
        max_time,
    };
    let values = match v.variable {
        VariableKind::EventTypes => scope.event_types().await?,
        VariableKind::Dimensions => scope.schema(v.event_type.as_deref()).await?.dimensions,
        VariableKind::DimensionValues => {
            let dim = v
                .dimension
                .as_deref()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    model::ModelError::new("dimension", "choose the dimension whose values to list")
                })?;
            scope
                .dimension_values(
                    dim,
                    v.event_type.as_deref(),
                    v.prefix.as_deref().unwrap_or(""),
                )
                .await?
        }
    };
    Ok(vec![string_frame("value", values)?])
}

/// Alert transitions from `alerts`: one region per episode that resolved,
/// one point per episode still firing.
async fn annotation_frames(
    db: &mongodb::Database,
    instance: &Instance,
    a: &AnnotationsQuery,
    from_ms: i64,
    to_ms: i64,
    max_time: Duration,
) -> Result<Vec<Frame>, RunError> {
    use arrow_array::{Array, StringArray};
    use grafana_plugin_sdk::data::ArrayRefIntoField;
    let mut filter = doc! {
        "state": { "$in": a.states.clone() },
        "at": { "$gte": bson::DateTime::from_millis(from_ms), "$lt": bson::DateTime::from_millis(to_ms) },
    };
    if !a.rule.is_empty() {
        filter.insert("ruleName", &a.rule);
    }
    let rows = aggregate(
        db,
        &instance.settings.collections.alerts,
        vec![doc! { "$match": filter }, doc! { "$sort": { "at": 1 } }],
        max_time,
        10_000,
    )
    .await?;
    let mut time = Vec::new();
    let mut end = Vec::new();
    let mut title = Vec::new();
    let mut text = Vec::new();
    let mut tags = Vec::new();
    for r in &rows.rows {
        let state = r.get_str("state").unwrap_or("");
        let starts = r
            .get_datetime("startsAt")
            .or_else(|_| r.get_datetime("at"))
            .map(|d| d.timestamp_millis())
            .unwrap_or(from_ms);
        let ends = if state == "resolved" {
            r.get_datetime("endsAt")
                .or_else(|_| r.get_datetime("at"))
                .map(|d| d.timestamp_millis())
                .ok()
        } else {
            None
        };
        time.push(Some(starts));
        end.push(Some(ends.unwrap_or(starts)));
        let rule = r.get_str("ruleName").unwrap_or("alert");
        title.push(Some(format!("{rule} {state}")));
        text.push(Some(r.get_str("summary").unwrap_or("").to_string()));
        let labels = r
            .get_document("labels")
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        tags.push(Some(labels));
    }
    let field = |a: &dyn Array, name: &str| {
        a.try_into_field(name)
            .map_err(|e| RunError::Data(e.to_string()))
    };
    let time_field =
        |ms: &[Option<i64>], name: &str| frames::time_field(name, ms).map_err(RunError::Data);
    let frame = Frame::new("annotations")
        .with_field(time_field(&time, "time")?)
        .with_field(time_field(&end, "timeEnd")?)
        .with_field(field(&StringArray::from(title), "title")?)
        .with_field(field(&StringArray::from(text), "text")?)
        .with_field(field(&StringArray::from(tags), "tags")?);
    Ok(vec![frame])
}
