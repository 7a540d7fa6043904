//! The Stream service: SubscribeStream checks a live query, RunStream feeds
//! its channel (see `crate::live`).

use std::time::Duration;

use bson::doc;
use grafana_plugin_sdk::backend;
use grafana_plugin_sdk::live::{Channel, Namespace, Path, Scope};
use serde_json::Value;
use thiserror::Error;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::MongoPulsePlugin;
use crate::live::{channel_path, run_channel, ChannelQuery, Runner};
use crate::query::metadata::Scope as MetaScope;
use crate::query::model::{self, MeasureKind, Query};

#[derive(Debug, Error)]
#[error("{0}")]
pub struct LiveError(String);

impl MongoPulsePlugin {
    /// The query of a channel: the subscribe request's data, or what QueryData registered.
    fn channel_query(&self, path: &str, data: &[u8]) -> Result<Value, LiveError> {
        if !data.is_empty() {
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                if v.is_object() && v.as_object().is_some_and(|m| !m.is_empty()) {
                    return Ok(v);
                }
            }
        }
        self.state.live.lookup(path).map(|(_, q)| q).ok_or_else(|| {
            LiveError(format!(
                "no live query is known for channel {path}: run the panel's query again"
            ))
        })
    }
}

/// Attaches the live channel of `query_json` to the first frame, and remembers the query.
pub fn attach_channel(
    plugin: &MongoPulsePlugin,
    uid: &str,
    query_json: &Value,
    frames: &mut [grafana_plugin_sdk::data::Frame],
) {
    let path = channel_path(query_json);
    plugin.state.live.register(&path, uid, query_json.clone());
    let (Ok(ns), Ok(p)) = (Namespace::new(uid.to_string()), Path::new(path)) else {
        return;
    };
    if let Some(f) = frames.first_mut() {
        f.set_channel(Channel::new(Scope::Datasource, ns, p));
    }
}

#[backend::async_trait]
impl backend::StreamService for MongoPulsePlugin {
    type JsonValue = ();
    type Error = LiveError;
    type Stream = backend::BoxRunStream<Self::Error>;

    async fn subscribe_stream(
        &self,
        request: backend::SubscribeStreamRequest<Self>,
    ) -> Result<backend::SubscribeStreamResponse, Self::Error> {
        let instance = self
            .instance(request.plugin_context.instance_settings.as_ref())
            .await
            .map_err(|e| LiveError(e.to_string()))?;
        let json = self.channel_query(request.path.as_str(), &request.data)?;
        let q = match model::parse(&json) {
            Ok(Query::Builder(b)) => b,
            Ok(_) => return Err(LiveError("only builder queries can be live".into())),
            Err(e) => return Err(LiveError(format!("invalid live query: {e}"))),
        };
        ChannelQuery::new(q.clone(), instance.settings.live_minutes)
            .map_err(|e| LiveError(format!("invalid live query: {e}")))?;
        // Change streams need a replica set: say so here rather than stream nothing.
        let hello = instance
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| {
                LiveError(
                    instance
                        .redactor
                        .clean(&format!("MongoDB could not be reached: {e}")),
                )
            })?;
        if hello.get_str("setName").is_err() {
            return Err(LiveError("live panels need MongoDB change streams, which need a replica set: run mongod with --replSet (a single node is enough) and rs.initiate()".into()));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let db = instance.database();
        let scope = MetaScope {
            db: &db,
            names: &instance.settings.collections,
            spec: &q.spec,
            // Minute rollups: the ones a live panel streams, and the first written.
            from_ms: now - 3 * 3_600_000,
            to_ms: now + 60_000,
            max_time: instance.settings.query_timeout,
        };
        if q.event_type != "*" {
            let known = scope
                .event_types()
                .await
                .map_err(|e| LiveError(e.to_string()))?;
            if !known.contains(&q.event_type) {
                tracing::info!(event_type = %q.event_type, "live subscription refused: no such event type in the last 3 hours");
                return Ok(backend::SubscribeStreamResponse::not_found());
            }
        }
        let schema = scope
            .schema(Some(&q.event_type))
            .await
            .map_err(|e| LiveError(e.to_string()))?;
        for m in &q.measures {
            let missing =
                match &m.kind {
                    MeasureKind::Sum { metric }
                    | MeasureKind::Avg { metric }
                    | MeasureKind::Min { metric }
                    | MeasureKind::Max { metric } => {
                        (!schema.metrics.contains(metric)).then(|| format!("metric '{metric}'"))
                    }
                    MeasureKind::Percentile { metric, .. } => (!schema.quantiles.contains(metric))
                        .then(|| format!("percentile sketch of '{metric}'")),
                    MeasureKind::Distinct { key } => (!schema.distinct.contains(key))
                        .then(|| format!("distinct count of '{key}'")),
                    MeasureKind::Topk { attribute, .. } => (!schema.top_k.contains(attribute))
                        .then(|| format!("top-K of '{attribute}'")),
                    _ => None,
                };
            if let Some(what) = missing {
                return Err(LiveError(format!("the rollups of '{}' have no {what}; choose another measure or add it to the rollup spec", q.event_type)));
            }
        }
        Ok(backend::SubscribeStreamResponse::ok(None))
    }

    async fn run_stream(
        &self,
        request: backend::RunStreamRequest<Self>,
    ) -> Result<Self::Stream, Self::Error> {
        let instance = self
            .instance(request.plugin_context.instance_settings.as_ref())
            .await
            .map_err(|e| LiveError(e.to_string()))?;
        let json = self.channel_query(request.path.as_str(), &request.data)?;
        let Ok(Query::Builder(q)) = model::parse(&json) else {
            return Err(LiveError("only builder queries can be live".into()));
        };
        let channel = ChannelQuery::new(q, instance.settings.live_minutes)
            .map_err(|e| LiveError(e.to_string()))?;
        let names = instance.settings.collections.clone();
        let feed = self.state.live.subscribe(
            &instance.uid,
            instance.database(),
            names.metrics_minutely.clone(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let runner = Runner {
            db: instance.database(),
            names,
            max_time: instance.settings.query_timeout,
            push_every: Duration::from_secs_f64(1.0 / instance.settings.live_max_pushes_per_second),
        };
        tokio::spawn(run_channel(runner, channel, feed, tx));
        let stream = ReceiverStream::new(rx).map(|frame| {
            let frame = frame.map_err(LiveError)?;
            let checked = frame.check().map_err(|e| LiveError(e.to_string()))?;
            backend::StreamPacket::from_frame(checked).map_err(|e| LiveError(e.to_string()))
        });
        Ok(Box::pin(stream))
    }

    async fn publish_stream(
        &self,
        _request: backend::PublishStreamRequest<Self>,
    ) -> Result<backend::PublishStreamResponse, Self::Error> {
        Ok(backend::PublishStreamResponse::permission_denied(
            serde_json::json!({ "error": "live channels of Mongo Pulse are read-only" }),
        ))
    }
}
