//! The daemon's alert API (JSON): rules, current instance states, history.
//! Read by the frontend's annotations and alert-list panels.

use std::collections::HashMap;

use bson::{doc, Document};
use futures_util::TryStreamExt;
use serde_json::{json, Value};

use super::engine::AlertEngine;

pub fn rules(engine: &AlertEngine) -> Value {
    engine.rules_view()
}

pub fn states(engine: &AlertEngine) -> Value {
    json!({ "instances": engine.states_view() })
}

fn time_param(p: &HashMap<String, String>, key: &str) -> Result<Option<i64>, String> {
    match p.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(v).map(|d| d.timestamp_millis()))
            .map(Some)
            .map_err(|_| format!("{key} must be epoch milliseconds or RFC 3339, got '{v}'")),
    }
}

/// Transitions, newest first: `?rule=&instance=&state=&from=&to=&limit=` (limit ≤ 1000, default 100).
pub async fn history(engine: &AlertEngine, p: &HashMap<String, String>) -> Result<Value, String> {
    let mut filter = Document::new();
    for (param, field) in [
        ("rule", "ruleId"),
        ("instance", "instance"),
        ("state", "state"),
    ] {
        if let Some(v) = p.get(param).filter(|v| !v.is_empty()) {
            filter.insert(field, v.as_str());
        }
    }
    let mut at = Document::new();
    if let Some(from) = time_param(p, "from")? {
        at.insert("$gte", bson::DateTime::from_millis(from));
    }
    if let Some(to) = time_param(p, "to")? {
        at.insert("$lt", bson::DateTime::from_millis(to));
    }
    if !at.is_empty() {
        filter.insert("at", at);
    }
    let limit = match p.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| format!("limit must be 1 to 1000, got '{l}'"))?,
    };
    let docs: Vec<Document> = engine
        .db()
        .collection::<Document>(&engine.names().alerts)
        .find(filter)
        .sort(doc! { "at": -1 })
        .limit(limit)
        .await
        .map_err(|e| format!("reading alerts: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("reading alerts: {e}"))?;
    let items: Vec<Value> = docs
        .into_iter()
        .map(|d| bson::Bson::Document(d).into_relaxed_extjson())
        .collect();
    Ok(json!({ "transitions": items }))
}
