//! Exact recounts from raw `events` against the minute rollups: how the black-box
//! tests check that every stored event is counted exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures_util::TryStreamExt;

use super::mongo::TestMongo;

/// (minute start ms, eventType, country, deviceType, browser).
pub type Key = (i64, String, String, String, String);

pub async fn all(mongo: &TestMongo, coll: &str, filter: Document) -> Vec<Document> {
    mongo
        .db()
        .collection::<Document>(coll)
        .find(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Exact counts per (minute, eventType, country, deviceType, browser), straight from `events`.
pub async fn recount(mongo: &TestMongo) -> BTreeMap<Key, i64> {
    let mut out = BTreeMap::new();
    for e in all(mongo, "events", doc! {}).await {
        let ms = e.get_datetime("timestamp").unwrap().timestamp_millis();
        let meta = e.get_document("metadata").unwrap();
        let dims = meta.get_document("dimensions").unwrap();
        let s = |k: &str| dims.get_str(k).unwrap_or("").to_string();
        *out.entry((
            ms - ms.rem_euclid(60_000),
            meta.get_str("eventType").unwrap().to_string(),
            s("country"),
            s("deviceType"),
            s("browser"),
        ))
        .or_insert(0) += 1;
    }
    out
}

/// Counts per the same key, from the minute rollups (all writers summed).
pub async fn rollup_counts(mongo: &TestMongo, coll: &str) -> BTreeMap<Key, i64> {
    let mut out = BTreeMap::new();
    for d in all(mongo, coll, doc! {}).await {
        let ms = d.get_datetime("timestamp").unwrap().timestamp_millis();
        let dims = d.get_document("dimensions").unwrap();
        let s = |k: &str| dims.get_str(k).unwrap_or("").to_string();
        let n = d.get_document("metrics").unwrap().get_i64("count").unwrap();
        *out.entry((
            ms,
            s("eventType"),
            s("country"),
            s("deviceType"),
            s("browser"),
        ))
        .or_insert(0) += n;
    }
    out
}

/// Waits until the minute rollups equal an exact recount of `events`, and returns it.
/// The daemon flushes on its own clock; the bound only ends a hang.
pub async fn wait_until_rollups_match(mongo: &TestMongo) -> BTreeMap<Key, i64> {
    let deadline = Instant::now() + super::PATIENCE;
    loop {
        let exact = recount(mongo).await;
        let rolled = rollup_counts(mongo, "metrics_minutely").await;
        if exact == rolled || Instant::now() > deadline {
            assert_eq!(
                rolled, exact,
                "minute rollups differ from an exact recount of events"
            );
            return exact;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
