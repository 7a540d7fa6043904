//! The query engine through Grafana's plugin protocol. Rollups are written by
//! the daemon (events POSTed, then `mongopulsed backfill`) from a known event
//! set; every answer is compared with an exact computation over those events.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::daemon::Daemon;
use support::frames::{by_ref, instant, DecodedFrame};
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};

const COUNTRIES: [&str; 4] = ["FR", "US", "DE", "JP"];
const PAGES: [&str; 12] = [
    "/",
    "/products",
    "/cart",
    "/checkout",
    "/blog",
    "/about",
    "/help",
    "/jobs",
    "/press",
    "/legal",
    "/faq",
    "/api",
];
const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

#[derive(Clone, Debug)]
struct Ev {
    ms: i64,
    country: &'static str,
    user: String,
    load: f64,
    page: &'static str,
}

struct World {
    _mongo: TestMongo,
    plugin: PluginProcess,
    ds: DataSource,
    events: Vec<Ev>,
    /// End of the data, on a minute boundary.
    end: i64,
}

fn generate(end: i64) -> Vec<Ev> {
    let start = end - 26 * HOUR;
    let mut out = Vec::new();
    let mut i: u64 = 0;
    let mut t = start;
    while t < end {
        // About four events a minute, more in some minutes, none in a few.
        let n = (i % 7) as i64;
        for j in 0..n {
            let h = (i * 31 + j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let page_pick = (h >> 20) % 100;
            let page = PAGES[match page_pick {
                0..=29 => 0,
                30..=49 => 1,
                50..=62 => 2,
                63..=72 => 3,
                73..=80 => 4,
                _ => 5 + (page_pick as usize % 7),
            }];
            out.push(Ev {
                ms: t + (h % 60_000) as i64,
                country: COUNTRIES[((h >> 8) % 4) as usize],
                user: format!("user{}", (h >> 30) % 5000),
                load: 200.0 + ((h >> 40) % 3000) as f64 + ((h >> 12) % 7) as f64 * 0.25,
                page,
            });
        }
        i += 1;
        t += MINUTE;
    }
    out
}

fn to_json(e: &Ev) -> Value {
    json!({
        "timestamp": e.ms,
        "metadata": { "eventType": "page_view", "dimensions": { "userId": e.user, "sessionId": format!("s-{}", e.user), "country": e.country, "deviceType": "mobile", "browser": "Chrome" } },
        "metrics": { "pageLoadTime": e.load, "timeOnPage": 30 },
        "attributes": { "landingPage": e.page }
    })
}

async fn world() -> World {
    let mongo = TestMongo::start().await;
    let now = Utc::now().timestamp_millis();
    let end = now - now.rem_euclid(MINUTE) - 5 * MINUTE;
    let events = generate(end);
    // Accept day-old events: a lateness longer than the data's span.
    let mut daemon = Daemon::start(
        &mongo,
        &[
            ("MONGOPULSE__ROLLUPS__ALLOWED_LATENESS_SECS", "200000"),
            ("MONGOPULSE__ROLLUPS__IDLE_FINALIZE_SECS", "0"),
        ],
    )
    .await;
    for chunk in events.chunks(2000) {
        let body: Vec<Value> = chunk.iter().map(to_json).collect();
        let r = daemon.events_request().json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    daemon.signal("TERM");
    assert!(daemon.wait(support::PATIENCE).success());
    // Every level, final, from the stored events.
    let out = support::capture::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
            .args([
                "backfill",
                "--from",
                &(end - 27 * HOUR).to_string(),
                "--to",
                &end.to_string(),
                "--force",
            ])
            .env("MONGOPULSE__MONGODB__URI", &mongo.uri)
            .env("MONGOPULSE__MONGODB__DATABASE", &mongo.db_name),
        "mongopulsed",
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);
    World {
        _mongo: mongo,
        plugin,
        ds,
        events,
        end,
    }
}

impl World {
    async fn frames(&self, q: Value, from: i64, to: i64, interval: i64) -> Vec<DecodedFrame> {
        self.frames_with(q, from, to, interval, &[]).await
    }

    async fn frames_with(
        &self,
        q: Value,
        from: i64,
        to: i64,
        interval: i64,
        headers: &[(&str, &str)],
    ) -> Vec<DecodedFrame> {
        let r = self
            .plugin
            .query(&self.ds, &[("A", q, from, to, interval)], headers)
            .await;
        by_ref(r)
            .remove("A")
            .unwrap()
            .unwrap_or_else(|e| panic!("query failed: {e}"))
    }

    fn in_range(&self, from: i64, to: i64) -> impl Iterator<Item = &Ev> {
        self.events
            .iter()
            .filter(move |e| e.ms >= from && e.ms < to)
    }
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(0.95 * (v.len() - 1) as f64).floor() as usize]
}

/// (country, bucket start) → exact (count, sum of loads, p95 of loads).
fn exact(
    w: &World,
    from: i64,
    to: i64,
    bucket: i64,
) -> BTreeMap<(String, DateTime<Utc>), (f64, f64, f64)> {
    let mut groups: BTreeMap<(String, DateTime<Utc>), Vec<f64>> = BTreeMap::new();
    for e in w.in_range(from, to) {
        groups
            .entry((
                e.country.to_string(),
                instant(e.ms - e.ms.rem_euclid(bucket)),
            ))
            .or_default()
            .push(e.load);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, (v.len() as f64, v.iter().sum(), p95(v))))
        .collect()
}

/// Value of each (country, time) of time-series frames.
fn points(frames: &[DecodedFrame]) -> BTreeMap<(String, DateTime<Utc>), f64> {
    let mut out = BTreeMap::new();
    for f in frames {
        let v = f.value_field();
        let country = v.labels.get("country").cloned().unwrap_or_default();
        for (t, x) in f.times().into_iter().zip(&v.values) {
            if let Some(x) = x.as_f64() {
                out.insert((country.clone(), t), x);
            }
        }
    }
    out
}

#[tokio::test]
async fn count_rate_avg_p95_by_country_match_exact_values_at_1m_5m_1h() {
    let w = world().await;
    for (range, interval, bucket) in [
        (2 * HOUR, MINUTE, MINUTE),
        (6 * HOUR, 5 * MINUTE, 5 * MINUTE),
        (24 * HOUR, HOUR, HOUR),
    ] {
        let (from, to) = (w.end - range, w.end);
        // The first bucket is whole: it starts at the bucket boundary before `from`.
        let truth = exact(&w, from - from.rem_euclid(bucket), to, bucket);
        let q =
            |m: Value| json!({ "eventType": "page_view", "measures": [m], "groupBy": ["country"] });
        let count = points(
            &w.frames(q(json!({"type": "count"})), from, to, interval)
                .await,
        );
        let rate = points(
            &w.frames(q(json!({"type": "rate"})), from, to, interval)
                .await,
        );
        let avg = points(
            &w.frames(
                q(json!({"type": "avg", "metric": "pageLoadTime"})),
                from,
                to,
                interval,
            )
            .await,
        );
        let p = points(
            &w.frames(
                q(json!({"type": "percentile", "metric": "pageLoadTime", "percentile": 95})),
                from,
                to,
                interval,
            )
            .await,
        );
        assert_eq!(
            count.keys().collect::<BTreeSet<_>>(),
            truth.keys().collect::<BTreeSet<_>>(),
            "buckets with data at {bucket} ms"
        );
        for (k, (n, sum, p95)) in &truth {
            assert_eq!(count[k], *n, "count {k:?} at {bucket}");
            assert!(
                (rate[k] - n / (bucket as f64 / 1000.0)).abs() < 1e-9,
                "rate {k:?}"
            );
            assert!(
                (avg[k] - sum / n).abs() < 1e-6 * (sum / n),
                "avg {k:?}: {} vs {}",
                avg[k],
                sum / n
            );
            assert!(
                (p[k] - p95).abs() <= 0.01 * p95 + 1e-9,
                "p95 {k:?} at {bucket}: {} vs exact {p95}",
                p[k]
            );
        }
    }
}

#[tokio::test]
async fn distinct_users_over_24_hours_within_the_hll_error() {
    let w = world().await;
    let (from, to) = (w.end - 24 * HOUR, w.end);
    let exact: BTreeSet<&str> = w.in_range(from, to).map(|e| e.user.as_str()).collect();
    let exact = exact.len() as f64;
    // The seed's sliding window: the last bucket holds the last 24 hours.
    let to_hour = to - to.rem_euclid(HOUR);
    let frames = w
        .frames(json!({ "eventType": "page_view", "measures": [{"type": "distinct", "key": "userId", "window": {"minutes": 1440}}], "granularity": "hour" }), to_hour - 24 * HOUR, to_hour, HOUR)
        .await;
    let windowed = frames[0]
        .value_field()
        .values
        .last()
        .unwrap()
        .as_f64()
        .unwrap();
    let exact_window: BTreeSet<&str> = w
        .in_range(to_hour - 24 * HOUR, to_hour)
        .map(|e| e.user.as_str())
        .collect();
    let tolerance = 3.0 * 1.04 / 64.0;
    assert!(
        (windowed - exact_window.len() as f64).abs() <= tolerance * exact_window.len() as f64,
        "{windowed} vs {}",
        exact_window.len()
    );
    // The analytics API merges the whole range.
    let (status, body) = w
        .plugin
        .call_resource(
            &w.ds,
            "GET",
            &format!("analytics/metrics?eventType=page_view&from={from}&to={to}"),
            b"",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let users = body["uniqueUsers"].as_f64().unwrap();
    assert!(
        (users - exact).abs() <= tolerance * exact,
        "{users} vs exact {exact}"
    );
    assert!(
        exact > 3000.0,
        "the sketch is past its exact range ({exact} users)"
    );
    assert_eq!(
        body["events"].as_f64().unwrap(),
        w.in_range(from - from.rem_euclid(HOUR), to).count() as f64
    );
}

#[tokio::test]
async fn top_5_landing_pages_with_other_and_top_countries_with_other() {
    let w = world().await;
    let (from, to) = (w.end - 24 * HOUR, w.end);
    let from_aligned = from - from.rem_euclid(HOUR);
    let mut pages: HashMap<&str, f64> = HashMap::new();
    for e in w.in_range(from_aligned, to) {
        *pages.entry(e.page).or_default() += 1.0;
    }
    let mut ranked: Vec<(&str, f64)> = pages.iter().map(|(k, v)| (*k, *v)).collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(b.0)));
    let frames = w.frames(json!({ "eventType": "page_view", "measures": [{"type": "topk", "attribute": "landingPage", "k": 5}], "format": "table" }), from, to, HOUR).await;
    let f = frames.iter().find(|f| f.name == "top landingPage").unwrap();
    let got: Vec<(String, f64)> = f
        .field("landingPage")
        .values
        .iter()
        .zip(&f.field("count").values)
        .map(|(p, c)| (p.as_str().unwrap().to_string(), c.as_f64().unwrap()))
        .collect();
    let mut want: Vec<(String, f64)> = ranked[..5]
        .iter()
        .map(|(p, c)| (p.to_string(), *c))
        .collect();
    want.push(("other".into(), ranked[5..].iter().map(|r| r.1).sum()));
    assert_eq!(got, want);

    // Top-2 countries by count, the other two summed as "other".
    let frames = w.frames(json!({ "eventType": "page_view", "measures": [{"type": "count"}], "groupBy": ["country"], "topN": {"limit": 2, "measure": 0, "other": true}, "format": "table" }), from, to, HOUR).await;
    let t = &frames[0];
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for (c, v) in t
        .field("country")
        .values
        .iter()
        .zip(&t.field("count").values)
    {
        *totals.entry(c.as_str().unwrap().to_string()).or_default() += v.as_f64().unwrap_or(0.0);
    }
    let mut by_country: BTreeMap<&str, f64> = BTreeMap::new();
    for e in w.in_range(from_aligned, to) {
        *by_country.entry(e.country).or_default() += 1.0;
    }
    let mut rc: Vec<(&str, f64)> = by_country.into_iter().collect();
    rc.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(b.0)));
    assert_eq!(totals.len(), 3, "{totals:?}");
    assert_eq!(totals[rc[0].0], rc[0].1);
    assert_eq!(totals[rc[1].0], rc[1].1);
    assert_eq!(totals["other"], rc[2].1 + rc[3].1);
}

#[tokio::test]
async fn comparison_with_the_previous_hour() {
    let w = world().await;
    let (from, to) = (w.end - HOUR, w.end);
    let frames = w.frames(json!({ "eventType": "page_view", "measures": [{"type": "count"}], "compare": {"shift": "1h"} }), from, to, MINUTE).await;
    let now_series = frames
        .iter()
        .find(|f| !f.value_field().labels.contains_key("compare"))
        .unwrap();
    let prev = frames
        .iter()
        .find(|f| f.value_field().labels.get("compare").map(String::as_str) == Some("-1h"))
        .unwrap();
    assert!(prev.value_field().name.ends_with("(-1h)"));
    let count_at = |t: DateTime<Utc>| {
        let ms = t.timestamp_millis();
        w.in_range(ms, ms + MINUTE).count() as f64
    };
    for (t, v) in prev.times().into_iter().zip(&prev.value_field().values) {
        assert!(
            t >= instant(from) && t < instant(to),
            "shifted onto the panel's range: {t}"
        );
        assert_eq!(
            v.as_f64().unwrap_or(0.0),
            count_at(t - chrono::Duration::hours(1)),
            "previous hour at {t}"
        );
    }
    for (t, v) in now_series
        .times()
        .into_iter()
        .zip(&now_series.value_field().values)
    {
        assert_eq!(v.as_f64().unwrap_or(0.0), count_at(t));
    }
}

#[tokio::test]
async fn alert_evaluation_gets_one_labelled_series_per_country_with_the_same_numbers() {
    let w = world().await;
    let (from, to) = (w.end - HOUR, w.end);
    let q = json!({ "eventType": "page_view", "measures": [{"type": "percentile", "metric": "pageLoadTime", "percentile": 95}], "groupBy": ["country"], "granularity": "auto", "format": "wide" });
    let panel = w.frames(q.clone(), from, to, 5 * MINUTE).await;
    let alert = w
        .frames_with(q, from, to, 5 * MINUTE, &[("FromAlert", "true")])
        .await;
    assert_eq!(alert.len(), 4, "one frame per country");
    let mut seen = BTreeSet::new();
    for f in &alert {
        assert_eq!(f.fields.len(), 2, "time and one numeric field");
        let v = f.value_field();
        seen.insert(v.labels["country"].clone());
        assert!(v.values.iter().all(|x| x.is_number() || x.is_null()));
    }
    assert_eq!(seen, COUNTRIES.iter().map(|c| c.to_string()).collect());
    // Same numbers as the panel (wide there, long for alerting).
    let wide = &panel[0];
    for f in &alert {
        let country = &f.value_field().labels["country"];
        let col = wide
            .fields
            .iter()
            .find(|x| x.labels.get("country") == Some(country))
            .unwrap();
        assert_eq!(col.values, f.value_field().values);
    }
}

/// Issue 11: what Grafana reads as the instants of every frame. A panel over
/// the last 3 hours at 1 minute starts on the range's first minute and ends on
/// its last, in every format and for alert evaluations — read by Grafana's
/// rules (timestamps are nanoseconds), not by our encoder's.
#[tokio::test]
async fn the_last_3_hours_at_1m_start_and_end_on_the_ranges_minutes_as_grafana_reads_them() {
    let w = world().await;
    let to = Utc::now().timestamp_millis();
    let from = to - 3 * HOUR;
    let first = instant(from - from.rem_euclid(MINUTE));
    let last = instant((to - 1) - (to - 1).rem_euclid(MINUTE));
    assert_eq!(last - first, chrono::Duration::minutes(180));
    let base = json!({ "eventType": "page_view", "measures": [{"type": "count"}], "groupBy": ["country"], "granularity": "auto" });
    for (format, headers) in [
        ("timeseries", &[][..]),
        ("wide", &[][..]),
        ("table", &[][..]),
        ("timeseries", &[("FromAlert", "true")][..]),
        ("wide", &[("FromAlert", "true")][..]),
    ] {
        let mut q = base.clone();
        q["format"] = json!(format);
        let frames = w.frames_with(q, from, to, MINUTE, headers).await;
        assert!(!frames.is_empty(), "{format} {headers:?}");
        for f in &frames {
            let times = f.times();
            assert_eq!(
                times.first(),
                Some(&first),
                "{format} {headers:?} first bucket"
            );
            assert_eq!(
                times.last(),
                Some(&last),
                "{format} {headers:?} last bucket"
            );
            assert!(times.windows(2).all(|p| p[0] <= p[1]), "in time order");
        }
    }
    // Alert transitions as annotations: their instants too.
    let starts = w.end - 30 * MINUTE;
    let ends = w.end - 10 * MINUTE;
    w._mongo
        .db()
        .collection::<bson::Document>("alerts")
        .insert_one(bson::doc! {
            "ruleName": "p95 high", "state": "resolved", "summary": "back to normal",
            "labels": { "country": "FR" },
            "at": bson::DateTime::from_millis(ends),
            "startsAt": bson::DateTime::from_millis(starts),
            "endsAt": bson::DateTime::from_millis(ends),
        })
        .await
        .unwrap();
    let anno = w
        .frames(
            json!({ "mode": "annotations", "rule": "", "states": ["firing", "resolved"] }),
            from,
            to,
            MINUTE,
        )
        .await;
    assert_eq!(anno[0].times(), vec![instant(starts)]);
    assert_eq!(anno[0].field("timeEnd").times(), vec![instant(ends)]);
    assert_eq!(
        anno[0].field("title").values,
        vec![json!("p95 high resolved")]
    );
}

#[tokio::test]
async fn pipeline_mode_macros_read_only_and_per_query_errors() {
    let w = world().await;
    let (from, to) = (w.end - HOUR, w.end);
    let good = json!({ "mode": "pipeline", "collection": "metrics_minutely", "format": "timeseries", "timeField": "_id",
        "pipeline": "[{\"$match\": $__timeFilter(timestamp)}, {\"$group\": {\"_id\": $__timeGroup(timestamp), \"events\": {\"$sum\": \"$metrics.count\"}}}]" });
    let bad_merge = json!({ "mode": "pipeline", "collection": "metrics_minutely", "pipeline": "[{\"$merge\": {\"into\": \"x\"}}]" });
    let bad_field = json!({ "eventType": "page_view", "measures": [{"type": "percentile", "metric": "pageLoadTime", "percentile": 150}] });
    let r = w
        .plugin
        .query(
            &w.ds,
            &[
                ("good", good, from, to, 5 * MINUTE),
                ("merge", bad_merge, from, to, MINUTE),
                ("field", bad_field, from, to, MINUTE),
            ],
            &[],
        )
        .await;
    let mut r = by_ref(r);
    let frames = r.remove("good").unwrap().unwrap();
    let f = &frames[0];
    let executed = f.meta["executedQueryString"].as_str().unwrap();
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    assert!(
        executed.contains(&iso(from)[..19]) && executed.contains(&iso(to)[..19]),
        "{executed}"
    );
    // The `_id` dates are a time field Grafana reads as the range's 5-minute buckets.
    let times = f.field("_id").times();
    assert!(!times.is_empty());
    assert!(times.windows(2).all(|p| p[0] < p[1]), "sorted: {times:?}");
    assert!(*times.first().unwrap() >= instant(from - from.rem_euclid(5 * MINUTE)));
    assert!(*times.last().unwrap() < instant(to));
    assert!(times
        .iter()
        .all(|t| t.timestamp_millis() % (5 * MINUTE) == 0));
    let total: f64 = f
        .field("events")
        .values
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert_eq!(
        total,
        w.in_range(from, to).count() as f64
            + w.events
                .iter()
                .filter(|e| e.ms >= from - from.rem_euclid(MINUTE) && e.ms < from)
                .count() as f64
    );
    let merge = r.remove("merge").unwrap().unwrap_err();
    assert!(
        merge.contains("$merge") && merge.contains("read-only"),
        "{merge}"
    );
    let field = r.remove("field").unwrap().unwrap_err();
    assert!(field.contains("measures[0].percentile"), "{field}");
}

#[tokio::test]
async fn a_second_identical_refresh_reads_only_the_open_tail() {
    let w = world().await;
    let (from, to) = (w.end - 6 * HOUR, Utc::now().timestamp_millis());
    let q = json!({ "eventType": "page_view", "measures": [{"type": "count"}, {"type": "distinct", "key": "userId"}], "groupBy": ["country"] });
    let first = w.frames(q.clone(), from, to, 5 * MINUTE).await;
    let second = w.frames(q, from, to, 5 * MINUTE).await;
    assert_eq!(points(&first), points(&second), "the cache changes nothing");
    let health = w.plugin.check_health(&w.ds).await;
    let details: Value = serde_json::from_slice(&health.json_details).unwrap();
    assert_eq!(details["cache"]["fullReads"], 1, "{details}");
    assert_eq!(details["cache"]["tailReads"], 1, "{details}");
    assert!(
        details["cache"]["bucketsServed"].as_u64().unwrap() > 0,
        "{details}"
    );
    // The second read started where the closed buckets end, not at the panel's start.
    let executed = second[0].meta["executedQueryString"].as_str().unwrap();
    let start = chrono::DateTime::from_timestamp_millis(from - from.rem_euclid(5 * MINUTE))
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(!executed.contains(&start[..16]), "{executed}");
    let metrics = w.plugin.metrics(&w.ds).await;
    assert!(
        metrics
            .contains("mongopulse_plugin_cache_tail_reads_total{datasource=\"mongopulse-test\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn resources_for_editors_and_variables() {
    let w = world().await;
    let (from, to) = (w.end - 2 * HOUR, w.end);
    let (s, types) = w
        .plugin
        .call_resource(
            &w.ds,
            "GET",
            &format!("event-types?from={from}&to={to}"),
            b"",
        )
        .await;
    assert_eq!((s, types), (200, json!(["page_view"])));
    let (s, dims) = w
        .plugin
        .call_resource(&w.ds, "GET", "dimensions", b"")
        .await;
    assert_eq!(
        (s, dims),
        (
            200,
            json!(["browser", "country", "deviceType", "eventType"])
        )
    );
    let (s, values) = w
        .plugin
        .call_resource(
            &w.ds,
            "GET",
            &format!("dimension-values?dim=country&prefix=F&from={from}&to={to}"),
            b"",
        )
        .await;
    assert_eq!((s, values), (200, json!(["FR"])));
    let (s, schema) = w.plugin.call_resource(&w.ds, "GET", "schema", b"").await;
    assert_eq!(s, 200);
    assert_eq!(schema["quantiles"], json!(["pageLoadTime", "timeOnPage"]));
    assert_eq!(schema["distinct"], json!(["sessionId", "userId"]));
    let (s, built) = w
        .plugin
        .call_resource(
            &w.ds,
            "POST",
            "build",
            br#"{"eventType": "page_view", "groupBy": ["country"]}"#,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        built["pipeline"][0]["$match"]["spec"] == "default",
        "{built}"
    );
    let (s, err) = w
        .plugin
        .call_resource(
            &w.ds,
            "POST",
            "build",
            br#"{"eventType": "page_view", "fill": "sideways"}"#,
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(err["field"], "fill");
    let (s, top) = w
        .plugin
        .call_resource(
            &w.ds,
            "GET",
            &format!("analytics/top/country?limit=2&from={from}&to={to}"),
            b"",
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(top.as_array().unwrap().len(), 2);
    // Variable query: dimension values as a frame.
    let frames = w
        .frames(
            json!({ "mode": "variable", "variable": "dimensionValues", "dimension": "country" }),
            from,
            to,
            MINUTE,
        )
        .await;
    assert_eq!(
        frames[0].field("value").values,
        vec![json!("DE"), json!("FR"), json!("JP"), json!("US")]
    );
}

#[tokio::test]
async fn provisioned_grafana_alert_queries_give_numeric_labelled_series() {
    let w = world().await;
    let file: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/provisioning/alerting/mongopulse-rules.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for rule in file["groups"][0]["rules"].as_sequence().unwrap() {
        for d in rule["data"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|d| d["datasourceUid"] == "mongopulse")
        {
            let model: Value = serde_json::to_value(&d["model"]).unwrap();
            let (from_s, to_s) = (
                d["relativeTimeRange"]["from"].as_i64().unwrap(),
                d["relativeTimeRange"]["to"].as_i64().unwrap(),
            );
            let frames = w
                .frames_with(
                    model.clone(),
                    w.end - from_s * 1000,
                    w.end - to_s * 1000,
                    MINUTE,
                    &[("FromAlert", "true")],
                )
                .await;
            assert!(!frames.is_empty());
            for f in &frames {
                assert_eq!(
                    f.fields.len(),
                    2,
                    "time and one numeric field: {:?}",
                    f.fields.iter().map(|x| &x.name).collect::<Vec<_>>()
                );
                let v = f.value_field();
                assert!(v.values.iter().any(|x| x.is_number()), "numeric values");
                if model["groupBy"].as_array().is_some_and(|g| !g.is_empty()) {
                    assert!(v.labels.contains_key("country"), "one series per country");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3);
}
