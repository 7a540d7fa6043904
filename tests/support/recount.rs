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
    recount_and_seqs(mongo).await.0
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

/// One read of `events` (after the load): the exact recount of [`recount`], and how
/// many times each `attributes.seq` is there.
pub async fn recount_and_seqs(mongo: &TestMongo) -> (BTreeMap<Key, i64>, BTreeMap<i64, usize>) {
    let (mut exact, mut stored) = (BTreeMap::new(), BTreeMap::new());
    let docs: Vec<Document> = mongo
        .db()
        .collection::<Document>("events")
        .find(doc! {})
        .projection(doc! { "timestamp": 1, "metadata": 1, "attributes.seq": 1, "_id": 0 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for e in docs {
        let ms = e.get_datetime("timestamp").unwrap().timestamp_millis();
        let meta = e.get_document("metadata").unwrap();
        let dims = meta.get_document("dimensions").unwrap();
        let s = |k: &str| dims.get_str(k).unwrap_or("").to_string();
        *exact
            .entry((
                ms - ms.rem_euclid(60_000),
                meta.get_str("eventType").unwrap().to_string(),
                s("country"),
                s("deviceType"),
                s("browser"),
            ))
            .or_insert(0) += 1;
        let seq = e.get_document("attributes").ok().and_then(|a| a.get("seq"));
        if let Some(seq) = seq.and_then(|s| s.as_i64().or_else(|| s.as_i32().map(i64::from))) {
            *stored.entry(seq).or_default() += 1;
        }
    }
    (exact, stored)
}

/// The rollup levels' collections (default names), finest first.
pub const LEVELS: [&str; 4] = [
    "metrics_minutely",
    "metrics_hourly",
    "metrics_daily",
    "metrics_monthly",
];

/// The start of the bucket holding `ms` at `level` (a collection of [`LEVELS`]).
fn bucket_start(level: &str, ms: i64) -> i64 {
    use chrono::{Datelike, TimeZone, Utc};
    match level {
        "metrics_minutely" => ms - ms.rem_euclid(60_000),
        "metrics_hourly" => ms - ms.rem_euclid(3_600_000),
        "metrics_daily" => ms - ms.rem_euclid(86_400_000),
        _ => {
            let t = Utc.timestamp_millis_opt(ms).unwrap();
            Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .unwrap()
                .timestamp_millis()
        }
    }
}

/// An exact minute recount regrouped into `level`'s buckets.
pub fn regroup(exact: &BTreeMap<Key, i64>, level: &str) -> BTreeMap<Key, i64> {
    let mut out = BTreeMap::new();
    for ((ms, a, b, c, d), n) in exact {
        *out.entry((
            bucket_start(level, *ms),
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
        ))
        .or_insert(0) += n;
    }
    out
}

/// Events a rollup level holds beyond an exact recount (`over`) and misses (`under`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelDiff {
    pub level: &'static str,
    pub over: i64,
    pub under: i64,
}

/// Compares every rollup level with `exact` (a recount of `events` that no longer
/// changes) until all agree or [`super::PATIENCE`] runs out; returns each level's
/// difference at the end. Minutes become final on the daemon's clock (`lateness_ms`
/// after they end); hours hold the final minutes, days the final hours, months the final days:
/// that is what is waited for and compared.
pub async fn wait_until_every_level_matches(
    mongo: &TestMongo,
    exact: &BTreeMap<Key, i64>,
    lateness_ms: i64,
) -> Vec<LevelDiff> {
    let deadline = Instant::now() + super::PATIENCE;
    loop {
        let mut diffs = Vec::new();
        // Days are built from final hours only, months from final days: a bucket is final
        // once the daemon's watermark (the clock less the lateness, when events are
        // current) has passed its end. Buckets still open are not expected above it yet.
        let watermark = chrono::Utc::now().timestamp_millis() - lateness_ms;
        let of_final = |child: &str, len_ms: i64| -> BTreeMap<Key, i64> {
            exact
                .iter()
                .filter(|((ms, ..), _)| bucket_start(child, *ms) + len_ms <= watermark)
                .map(|(k, n)| (k.clone(), *n))
                .collect()
        };
        for level in LEVELS {
            let want = match level {
                "metrics_minutely" | "metrics_hourly" => regroup(exact, level),
                "metrics_daily" => regroup(&of_final("metrics_hourly", 3_600_000), level),
                _ => regroup(&of_final("metrics_daily", 86_400_000), level),
            };
            let got = rollup_counts(mongo, level).await;
            let mut d = LevelDiff {
                level,
                ..LevelDiff::default()
            };
            let keys: std::collections::BTreeSet<&Key> = want.keys().chain(got.keys()).collect();
            for key in keys {
                let w = want.get(key).copied().unwrap_or(0);
                let g = got.get(key).copied().unwrap_or(0);
                if g > w {
                    d.over += g - w;
                } else {
                    d.under += w - g;
                }
            }
            diffs.push(d);
        }
        if diffs.iter().all(|d| d.over == 0 && d.under == 0) || Instant::now() > deadline {
            return diffs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
