//! One live channel: its query, the rollup documents of its recent minutes,
//! and the frames it pushes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bson::Document;
use grafana_plugin_sdk::data::Frame;
use mongodb::Database;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::feed::{FeedEvent, FeedGuard};
use crate::query::execute::aggregate;
use crate::query::filter::{compile_regex, CompiledFilter};
use crate::query::model::{BuilderQuery, Format, Granularity, ModelError};
use crate::query::plan::{plan, Plan, PlanContext, Retention};
use crate::query::{compute, decode, frames, generate};
use crate::store::CollectionNames;

/// The channel path of a live query: a hash of the query, so equal panels share a channel.
pub fn channel_path(query_json: &serde_json::Value) -> String {
    let mut canonical = query_json.clone();
    if let Some(m) = canonical.as_object_mut() {
        for k in [
            "refId",
            "datasource",
            "key",
            "hide",
            "intervalMs",
            "maxDataPoints",
        ] {
            m.remove(k);
        }
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    format!("live/{}", hex::encode(&digest[..12]))
}

/// A live query, made fit for streaming: minute buckets, one wide frame.
#[derive(Clone, Debug)]
pub struct ChannelQuery {
    pub query: BuilderQuery,
    pub minutes: i64,
}

impl ChannelQuery {
    pub fn new(mut query: BuilderQuery, minutes: i64) -> Result<ChannelQuery, ModelError> {
        if query.compare.is_some() {
            return Err(ModelError::new("compare", "a live panel cannot compare with an earlier period; turn live off or remove the comparison"));
        }
        if query.measures.iter().any(|m| m.window.is_some()) {
            return Err(ModelError::new(
                "measures.window",
                "moving windows are not streamed; turn live off or remove the window",
            ));
        }
        for (i, a) in query.adhoc_filters.iter().enumerate() {
            if matches!(a.operator.as_str(), "=~" | "!~") {
                compile_regex(&a.value).map_err(|reason| {
                    ModelError::new(format!("adhocFilters[{i}].value"), reason)
                })?;
            }
        }
        query.granularity = Granularity::Minute;
        query.format = Format::Wide;
        query.top_n = None;
        Ok(ChannelQuery { query, minutes })
    }

    pub fn plan(&self, now_ms: i64, names: &CollectionNames) -> Result<Plan, ModelError> {
        let to = now_ms - now_ms.rem_euclid(60_000) + 60_000;
        plan(
            &self.query,
            &PlanContext {
                from_ms: to - self.minutes * 60_000,
                to_ms: to,
                interval_ms: 60_000,
                now_ms,
                retention: Retention {
                    minute: 0.0,
                    ..Retention::default()
                },
                collections: names.clone(),
            },
        )
    }
}

/// The wide frame of the minutes `only` (all when `None`) from the documents held.
fn frame(
    q: &ChannelQuery,
    plan: &Plan,
    docs: &HashMap<String, Document>,
    only: Option<&BTreeSet<i64>>,
) -> Result<Frame, String> {
    let rows: Vec<Document> = docs.values().cloned().collect();
    let grid = decode::grid_from_documents(plan, &rows)?;
    let mut series = compute::series(&q.query, plan, &grid, plan.from_ms);
    if let Some(only) = only {
        for s in &mut series {
            s.points.retain(|p| only.contains(&p.0));
        }
    }
    let mut frames = frames::wide(&series, frames::metadata(None, &[]))?;
    frames.pop().ok_or_else(|| "no frame".to_string())
}

async fn load(
    db: &Database,
    plan: &Plan,
    max_time: Duration,
) -> Result<HashMap<String, Document>, String> {
    let stages = vec![generate::match_stage(plan)];
    let fetched = aggregate(db, &plan.collection, stages, max_time, 200_000)
        .await
        .map_err(|e| e.to_string())?;
    Ok(fetched
        .rows
        .into_iter()
        .filter_map(|d| d.get("_id").map(|id| (id.to_string(), d.clone())))
        .collect())
}

/// Whether a rollup document the change stream delivers is one of the channel's.
fn belongs(filter: &CompiledFilter, d: &Document) -> bool {
    let no_dimensions = Document::new();
    let dimensions = d.get_document("dimensions").unwrap_or(&no_dimensions);
    filter.matches(d.get_str("spec").ok(), dimensions)
}

pub struct Runner {
    pub db: Database,
    pub names: CollectionNames,
    pub max_time: Duration,
    pub push_every: Duration,
}

/// Streams frames into `out` until the receiver goes away: first the last
/// minutes, then the minutes that changed, throttled.
pub async fn run_channel(
    r: Runner,
    q: ChannelQuery,
    mut feed: FeedGuard,
    out: mpsc::Sender<Result<Frame, String>>,
) {
    let now = || chrono::Utc::now().timestamp_millis();
    let mut plan = match q.plan(now(), &r.names) {
        Ok(p) => p,
        Err(e) => {
            let _ = out.send(Err(e.to_string())).await;
            return;
        }
    };
    // The query's filter does not move with the window: compiled once.
    let filter = match CompiledFilter::new(&plan.filter) {
        Ok(f) => f,
        Err(e) => {
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    let mut docs = match load(&r.db, &plan, r.max_time).await {
        Ok(d) => d,
        Err(e) => {
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    if out.send(frame(&q, &plan, &docs, None)).await.is_err() {
        return;
    }
    let mut dirty: BTreeSet<i64> = BTreeSet::new();
    let mut ticker = tokio::time::interval(r.push_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Grafana closed the stream: let go of the feed now, not at the next push.
            _ = out.closed() => return,
            event = feed.events.recv() => match event {
                Ok(FeedEvent::Doc(d)) => {
                    if d.get_str("granularity").ok() != Some("minute") || !belongs(&filter, &d) {
                        continue;
                    }
                    let Ok(t) = d.get_datetime("timestamp").map(|t| t.timestamp_millis()) else { continue };
                    if let Some(id) = d.get("_id") {
                        docs.insert(id.to_string(), (*d).clone());
                        dirty.insert(t);
                    }
                }
                Ok(FeedEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    // The stream was lost (or we fell behind): what the rollups hold now is the truth.
                    if let Ok(fresh) = load(&r.db, &plan, r.max_time).await {
                        for (id, d) in &fresh {
                            if docs.get(id) != Some(d) {
                                if let Ok(t) = d.get_datetime("timestamp") {
                                    dirty.insert(t.timestamp_millis());
                                }
                            }
                        }
                        docs = fresh;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                // Slide the window as minutes pass.
                if let Ok(p) = q.plan(now(), &r.names) {
                    if p.from_ms != plan.from_ms {
                        docs.retain(|_, d| d.get_datetime("timestamp").map(|t| t.timestamp_millis() >= p.from_ms).unwrap_or(false));
                        plan = p;
                    }
                }
                if dirty.is_empty() {
                    continue;
                }
                let minutes = std::mem::take(&mut dirty);
                if out.send(frame(&q, &plan, &docs, Some(&minutes))).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    /// A live query of page views with one ad-hoc regex filter on country.
    fn channel_query(pattern: &str) -> Result<ChannelQuery, ModelError> {
        let q: BuilderQuery = serde_json::from_value(serde_json::json!({
            "eventType": "page_view",
            "adhocFilters": [{ "key": "country", "operator": "=~", "value": pattern }]
        }))
        .unwrap();
        ChannelQuery::new(q, 15)
    }

    #[test]
    fn rollup_documents_are_read_by_their_spec_and_dimensions() {
        let q = channel_query("^D|FR$").unwrap();
        let p = q
            .plan(1_733_756_400_000, &CollectionNames::default())
            .unwrap();
        let f = CompiledFilter::new(&p.filter).unwrap();
        let d = |country: &str| doc! { "spec": "default", "granularity": "minute", "dimensions": { "eventType": "page_view", "country": country } };
        assert!(belongs(&f, &d("FR")));
        assert!(belongs(&f, &d("DE")));
        assert!(!belongs(&f, &d("US")));
        assert!(!belongs(&f, &doc! { "spec": "default" }), "no dimensions");
        let mut other_spec = d("FR");
        other_spec.insert("spec", "other");
        assert!(!belongs(&f, &other_spec));
    }

    #[test]
    fn regexes_live_panels_cannot_read_are_refused_up_front() {
        let e = channel_query("^(?!FR)").unwrap_err();
        assert_eq!(e.path, "adhocFilters[0].value");
        assert!(e.reason.contains("turn live off"), "{e}");
    }

    #[test]
    fn equal_queries_share_a_channel() {
        let a = serde_json::json!({"refId": "A", "eventType": "x", "live": true});
        let b = serde_json::json!({"refId": "B", "eventType": "x", "live": true});
        assert_eq!(channel_path(&a), channel_path(&b));
        assert!(channel_path(&a)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/'));
    }
}
