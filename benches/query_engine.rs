//! Query engine costs. (1) Rows/s from rollup rows to Grafana frames (Arrow
//! IPC included): 10,000 buckets × 20 series. (2) With MONGODB_URI set (the
//! script starts the stand-in), a 24-hour / 1-minute / 4-dimension query
//! answered from MongoDB versus with its closed buckets cached, and the
//! stages of the cached refresh timed apart (the open tail's read, the cache
//! hit, the measures, the frames) to say where its time goes.
//! `scripts/bench-query.sh` prints the table.

use std::time::Duration;

use bson::{doc, Document};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grafana_plugin_sdk::backend::DataResponse;
use mongopulse::query::cache::BucketCache;
use mongopulse::query::execute::aggregate;
use mongopulse::query::model::{parse, BuilderQuery, Query};
use mongopulse::query::plan::{plan, PlanContext, Retention};
use mongopulse::query::run::{builder_frames, cache_key, run_builder, Env};
use mongopulse::query::{compute, decode, frames, generate};
use mongopulse::store::CollectionNames;

const T0: i64 = 1_733_702_400_000; // 2024-12-09T00:00:00Z
const BUCKETS: i64 = 10_000;
const SERIES: usize = 20;

fn builder(v: serde_json::Value) -> BuilderQuery {
    match parse(&v).expect("query") {
        Query::Builder(b) => b,
        _ => unreachable!(),
    }
}

/// Rows as the server-side `$group` returns them.
fn grouped_rows() -> Vec<Document> {
    let mut rows = Vec::with_capacity(BUCKETS as usize * SERIES);
    for b in 0..BUCKETS {
        for s in 0..SERIES {
            rows.push(doc! {
                "_id": { "t": bson::DateTime::from_millis(T0 + b * 60_000), "g0": format!("C{s:02}") },
                "count": (b % 97 + s as i64) , "final": true,
                "sum0": 1234.5, "n0": 10_i64, "min0": 3.0, "max0": 400.0,
            });
        }
    }
    rows
}

fn frames_bench(c: &mut Criterion) {
    let q = builder(
        serde_json::json!({ "eventType": "page_view", "measures": [{"type": "count"}], "groupBy": ["country"] }),
    );
    let ctx = PlanContext {
        from_ms: T0,
        to_ms: T0 + BUCKETS * 60_000,
        interval_ms: 60_000,
        now_ms: T0 + BUCKETS * 60_000,
        retention: Retention {
            minute: 0.0,
            ..Retention::default()
        },
        collections: CollectionNames::default(),
    };
    let p = plan(&q, &ctx).expect("plan");
    let rows = grouped_rows();
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.sample_size(10);
    g.bench_function("rows_to_frames", |b| {
        b.iter(|| {
            let grid = decode::grid_from_groups(&p, &rows).expect("grid");
            let series = compute::series(&q, &p, &grid, p.from_ms);
            let fs = frames::timeseries(&series, frames::metadata(None, &[])).expect("frames");
            let checked: Vec<_> = fs.iter().map(|f| f.check().expect("valid")).collect();
            DataResponse::new("A".into(), checked)
        })
    });
    g.finish();
}

async fn seed(db: &mongodb::Database) {
    let coll = db.collection::<Document>("metrics_minutely");
    if coll.count_documents(doc! {}).await.unwrap_or(0) > 0 {
        return;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let start = now - now.rem_euclid(60_000) - 24 * 3_600_000;
    let mut docs = Vec::new();
    for m in 0..1440i64 {
        for (i, (c, d, br)) in ["FR", "US", "DE"]
            .iter()
            .flat_map(|c| {
                ["mobile", "desktop"]
                    .iter()
                    .flat_map(move |d| ["Chrome", "Safari"].iter().map(move |b| (c, d, b)))
            })
            .enumerate()
        {
            docs.push(doc! {
                "_id": format!("bench:{m}:{i}"), "spec": "default", "granularity": "minute", "writer": "bench", "final": true,
                "timestamp": bson::DateTime::from_millis(start + m * 60_000),
                "dimensions": { "eventType": "page_view", "country": c, "deviceType": d, "browser": br },
                "metrics": { "count": 10 + (m % 50), "pageLoadTime": { "sum": 12000.0, "min": 300.0, "max": 4000.0, "count": 10 + (m % 50) } },
            });
        }
    }
    for chunk in docs.chunks(5_000) {
        coll.insert_many(chunk.to_vec()).await.expect("seed");
    }
}

fn cache_bench(c: &mut Criterion) {
    let Ok(uri) = std::env::var("MONGODB_URI") else {
        eprintln!(
            "cache benchmark skipped: set MONGODB_URI (scripts/bench-query.sh starts the stand-in)"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(mongodb::Client::with_uri_str(&uri))
        .expect("client");
    let db = client.database("mongopulse_bench");
    rt.block_on(seed(&db));
    let now = chrono::Utc::now().timestamp_millis();
    let q = builder(
        serde_json::json!({ "eventType": "page_view", "measures": [{"type": "count"}, {"type": "avg", "metric": "pageLoadTime"}], "groupBy": ["country", "deviceType", "browser"] }),
    );
    let ctx = PlanContext {
        from_ms: now - 24 * 3_600_000,
        to_ms: now,
        interval_ms: 60_000,
        now_ms: now,
        retention: Retention::default(),
        collections: CollectionNames::default(),
    };
    let cache = BucketCache::new(256 << 20, 3_600_000);
    let env = |cache: Option<&'static BucketCache>, db: &'static mongodb::Database| Env {
        db,
        cache,
        cache_scope: "bench",
        max_time: Duration::from_secs(60),
        now_ms: now,
        horizon_ms: 300_000,
        max_rows: 1_000_000,
        max_series: 10_000,
    };
    let db: &'static mongodb::Database = Box::leak(Box::new(db));
    let cache: &'static BucketCache = Box::leak(Box::new(cache));
    // Warm the cache once.
    rt.block_on(run_builder(&env(Some(cache), db), &q, &ctx))
        .expect("warm");
    let mut g = c.benchmark_group("cache");
    g.sample_size(10);
    g.bench_function("from_database", |b| {
        b.iter(|| {
            rt.block_on(async {
                builder_frames(
                    &q,
                    &run_builder(&env(None, db), &q, &ctx).await.expect("query"),
                    false,
                )
                .expect("frames")
                .len()
            })
        })
    });
    g.bench_function("from_cache", |b| {
        b.iter(|| {
            rt.block_on(async {
                builder_frames(
                    &q,
                    &run_builder(&env(Some(cache), db), &q, &ctx)
                        .await
                        .expect("query"),
                    false,
                )
                .expect("frames")
                .len()
            })
        })
    });
    // The cached refresh's stages, one at a time, on the same panel.
    let p = plan(&q, &ctx).expect("plan");
    let hit = cache
        .get(&cache_key("bench", &p), p.from_ms, now)
        .expect("the warm-up cached the closed buckets");
    let tail = p.reading_from(hit.until);
    g.bench_function("tail_read", |b| {
        b.iter(|| {
            rt.block_on(async {
                let fetched = aggregate(
                    db,
                    &tail.collection,
                    generate::pipeline(&tail),
                    Duration::from_secs(60),
                    1_000_000,
                )
                .await
                .expect("tail");
                decode::grid(&tail, &fetched.rows).expect("grid").len()
            })
        })
    });
    g.bench_function("cache_get", |b| {
        b.iter(|| {
            cache
                .get(&cache_key("bench", &p), p.from_ms, now)
                .map(|h| h.buckets)
        })
    });
    let outcome = rt
        .block_on(run_builder(&env(Some(cache), db), &q, &ctx))
        .expect("query");
    g.bench_function("measures", |b| {
        b.iter(|| compute::series(&q, &outcome.plan, &outcome.grid, outcome.from_ms).len())
    });
    g.bench_function("frames", |b| {
        b.iter(|| builder_frames(&q, &outcome, false).expect("frames").len())
    });
    g.finish();
    let s = cache.stats();
    eprintln!(
        "cache: {} tail reads, {} buckets served",
        s.tail_reads, s.buckets_served
    );
}

criterion_group!(benches, frames_bench, cache_bench);
criterion_main!(benches);
