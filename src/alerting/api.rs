//! The daemon's alert API (JSON): rules, current instance states, history.
//! Read by the frontend's annotations and alert-list panels.
//!
//! In: the engine's rules and states, the history request's query parameters. Out: the
//! JSON bodies, or a [`HistoryError`] saying which parameter to fix.

use std::collections::HashMap;

use bson::Document;
use serde_json::{json, Value};
use thiserror::Error;

use super::scheduler::AlertEngine;
use super::store::StoreError;

/// Why a history request has no answer.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("{key} must be epoch milliseconds or RFC 3339, got '{value}'")]
    BadTime { key: &'static str, value: String },
    #[error("limit must be 1 to 1000, got '{0}'")]
    BadLimit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn rules(engine: &AlertEngine) -> Value {
    let rules: Vec<Value> = engine
        .rules()
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r.config).unwrap_or_default();
            v["source"] = r.source.into();
            v
        })
        .collect();
    json!({ "rules": rules, "errors": engine.rule_errors(), "notifiers": engine.notifier_names() })
}

pub fn states(engine: &AlertEngine) -> Value {
    json!({ "instances": engine.states() })
}

fn time_param(p: &HashMap<String, String>, key: &'static str) -> Result<Option<i64>, HistoryError> {
    match p.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(v).map(|d| d.timestamp_millis()))
            .map(Some)
            .map_err(|_| HistoryError::BadTime {
                key,
                value: v.clone(),
            }),
    }
}

/// Transitions, newest first: `?rule=&instance=&state=&from=&to=&limit=` (limit ≤ 1000, default 100).
pub async fn history(
    engine: &AlertEngine,
    p: &HashMap<String, String>,
) -> Result<Value, HistoryError> {
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
            .ok_or_else(|| HistoryError::BadLimit(l.clone()))?,
    };
    let items = engine.store().history(filter, limit).await?;
    Ok(json!({ "transitions": items }))
}
