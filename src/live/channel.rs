//! One live channel: its query, the rollup documents of its recent minutes,
//! and the frames it pushes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bson::{Bson, Document};
use grafana_plugin_sdk::data::Frame;
use mongodb::Database;
use regex::Regex;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::feed::{FeedEvent, FeedGuard};
use crate::query::compute;
use crate::query::execute::aggregate;
use crate::query::frames;
use crate::query::model::{BuilderQuery, Format, Granularity, ModelError};
use crate::query::plan::{plan, Plan, PlanContext, Retention};
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

/// MongoDB runs `$regex` with PCRE; a live channel runs it with the `regex`
/// crate, whose syntax is PCRE's less lookaround and backreferences. A pattern
/// the crate cannot read is refused when the live query is made, so a live
/// panel never shows other series than the same panel not live.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        format!(
            "the regular expression '{pattern}' cannot be applied to a live panel ({}); \
             live panels read regular expressions without lookaround or backreferences: \
             simplify it, or turn live off",
            e.to_string().lines().last().unwrap_or("invalid")
        )
    })
}

/// The plan's `$match` (minus time) as a channel applies it to the rollup
/// documents its change stream delivers, with MongoDB's meaning for each
/// operator the planner writes.
pub struct ChannelFilter {
    filter: Document,
    regexes: HashMap<String, Regex>,
}

impl ChannelFilter {
    pub fn new(filter: Document) -> Result<ChannelFilter, String> {
        let mut regexes = HashMap::new();
        collect_regexes(&Bson::Document(filter.clone()), &mut regexes)?;
        Ok(ChannelFilter { filter, regexes })
    }

    /// Whether a rollup document belongs to the channel.
    pub fn matches(&self, d: &Document) -> bool {
        self.document_matches(&self.filter, d)
    }

    fn document_matches(&self, filter: &Document, d: &Document) -> bool {
        filter.iter().all(|(k, cond)| match k.as_str() {
            "timestamp" => true,
            "$and" => cond.as_array().is_some_and(|a| {
                a.iter()
                    .all(|c| c.as_document().is_some_and(|c| self.document_matches(c, d)))
            }),
            path => self.field_matches(cond, lookup(d, path)),
        })
    }

    fn field_matches(&self, cond: &Bson, value: Option<&Bson>) -> bool {
        let s = value.and_then(Bson::as_str);
        match cond {
            Bson::Document(ops) => ops.iter().all(|(op, arg)| match op.as_str() {
                "$in" => arg
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == s && s.is_some())),
                "$nin" => arg
                    .as_array()
                    .is_some_and(|a| !a.iter().any(|x| x.as_str() == s && s.is_some())),
                "$ne" => arg.as_str() != s,
                // A missing or non-string field never matches a regex (MongoDB).
                "$regex" => match (arg.as_str().and_then(|p| self.regexes.get(p)), s) {
                    (Some(re), Some(v)) => re.is_match(v),
                    _ => false,
                },
                "$not" => !self.field_matches(arg, value),
                _ => false,
            }),
            other => other.as_str().is_some() && other.as_str() == s,
        }
    }
}

fn collect_regexes(b: &Bson, out: &mut HashMap<String, Regex>) -> Result<(), String> {
    match b {
        Bson::Document(d) => {
            for (k, v) in d {
                match (k.as_str(), v) {
                    ("$regex", Bson::String(p)) => {
                        if !out.contains_key(p) {
                            out.insert(p.clone(), compile_regex(p)?);
                        }
                    }
                    _ => collect_regexes(v, out)?,
                }
            }
        }
        Bson::Array(a) => a.iter().try_for_each(|x| collect_regexes(x, out))?,
        _ => {}
    }
    Ok(())
}

fn lookup<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut cur = d;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let v = cur.get(p)?;
        if parts.peek().is_none() {
            return Some(v);
        }
        cur = v.as_document()?;
    }
    None
}

/// The wide frame of the minutes `only` (all when `None`) from the documents held.
fn frame(
    q: &ChannelQuery,
    plan: &Plan,
    docs: &HashMap<String, Document>,
    only: Option<&BTreeSet<i64>>,
) -> Result<Frame, String> {
    let rows: Vec<Document> = docs.values().cloned().collect();
    let grid = compute::grid_from_documents(plan, &rows)?;
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
    let Some(filter) = plan.pipeline.first().cloned() else {
        return Ok(HashMap::new());
    };
    let fetched = aggregate(db, &plan.collection, vec![filter], max_time, 200_000)
        .await
        .map_err(|e| e.to_string())?;
    Ok(fetched
        .rows
        .into_iter()
        .filter_map(|d| d.get("_id").map(|id| (id.to_string(), d.clone())))
        .collect())
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
    let filter = match ChannelFilter::new(
        plan.pipeline
            .first()
            .and_then(|s| s.get_document("$match").ok())
            .cloned()
            .unwrap_or_default(),
    ) {
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
                    if d.get_str("granularity").ok() != Some("minute") || !filter.matches(&d) {
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

    #[test]
    fn documents_are_matched_like_mongodb_would() {
        let d = doc! { "spec": "default", "dimensions": { "eventType": "page_view", "country": "FR", "browser": "Chrome" } };
        let f = |m: Document| ChannelFilter::new(m).unwrap().matches(&d);
        assert!(f(
            doc! { "spec": "default", "dimensions.eventType": "page_view" }
        ));
        assert!(!f(doc! { "spec": "other" }));
        assert!(f(doc! { "dimensions.country": { "$in": ["DE", "FR"] } }));
        assert!(!f(doc! { "dimensions.country": { "$nin": ["FR"] } }));
        assert!(f(doc! { "dimensions.browser": { "$regex": "^Chr" } }));
        assert!(!f(doc! { "dimensions.browser": { "$regex": "^Fire" } }));
        assert!(f(
            doc! { "$and": [ { "dimensions.country": { "$ne": "US" } } ] }
        ));
        assert!(!f(doc! { "dimensions.city": "Paris" }));
        // A regex is a regex, not a prefix of its literal start.
        assert!(f(doc! { "dimensions.country": { "$regex": "^D|FR$" } }));
        assert!(f(doc! { "dimensions.browser": { "$regex": "rom" } }));
        assert!(!f(doc! { "dimensions.browser": { "$regex": "^Chr.*x" } }));
        assert!(f(
            doc! { "dimensions.browser": { "$not": { "$regex": "^Chr.*x" } } }
        ));
        assert!(
            !f(doc! { "dimensions.city": { "$regex": "." } }),
            "missing field"
        );
        assert!(f(doc! { "dimensions.city": { "$not": { "$regex": "." } } }));
    }

    #[test]
    fn regexes_live_panels_cannot_read_are_refused_up_front() {
        let q: BuilderQuery = serde_json::from_value(serde_json::json!({
            "eventType": "page_view",
            "adhocFilters": [{ "key": "country", "operator": "=~", "value": "^(?!FR)" }]
        }))
        .unwrap();
        let e = ChannelQuery::new(q, 15).unwrap_err();
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
