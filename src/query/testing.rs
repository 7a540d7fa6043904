//! What the query stages' unit tests share: a fixed "now", a plan context
//! over the last `range_ms`, and builder queries from JSON.

use super::model::{parse, BuilderQuery, Query};
use super::plan::{PlanContext, Retention};
use crate::store::CollectionNames;

pub const NOW: i64 = 1_733_756_400_000; // 2024-12-09T15:00:00Z

pub fn ctx(range_ms: i64, interval_ms: i64) -> PlanContext {
    PlanContext {
        from_ms: NOW - range_ms,
        to_ms: NOW,
        interval_ms,
        now_ms: NOW,
        retention: Retention::default(),
        collections: CollectionNames::default(),
    }
}

pub fn builder(v: serde_json::Value) -> BuilderQuery {
    match parse(&v) {
        Ok(Query::Builder(b)) => b,
        other => panic!("not a builder query: {v}: {other:?}"),
    }
}
