//! Events/s for decoding + validating a realistic NDJSON batch, next to only
//! parsing the same bytes into `serde_json::Value`. `scripts/bench-ingest.sh`
//! runs this and prints the comparison table.

// The daemon allocates many small, short-lived values per event; mimalloc
// serves them faster than glibc's allocator (see scripts/bench-ingest.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mongopulse::ingest::{parse_body, Format, Limits, Validator};

pub const EVENTS: usize = 10_000;

/// Seed-shaped events (metadata with ten dimensions, metrics, attributes, geo),
/// about 400 bytes each, with varied values.
fn ndjson_batch() -> Vec<u8> {
    let countries = ["FR", "US", "DE", "GB", "JP", "BR", "IN"];
    let devices = ["mobile", "desktop", "tablet"];
    let browsers = ["Chrome", "Safari", "Firefox", "Edge"];
    let base = Utc
        .with_ymd_and_hms(2024, 12, 9, 14, 30, 0)
        .unwrap()
        .timestamp_millis();
    let mut out = String::new();
    for i in 0..EVENTS {
        let c = countries[i % countries.len()];
        out.push_str(&format!(
            concat!(
                r#"{{"timestamp":"{ts}","metadata":{{"eventType":"page_view","source":"web","version":"2.1.0","#,
                r#""dimensions":{{"userId":"u{u}","sessionId":"session_{s}","deviceType":"{d}","browser":"{b}","os":"iOS","#,
                r#""country":"{c}","city":"Paris","productId":"p{p}","campaignId":"black_friday_2024"}}}},"#,
                r#""metrics":{{"pageLoadTime":{plt},"timeOnPage":{top},"scrollDepth":0.{sd}}},"#,
                r#""attributes":{{"referrer":"https://google.com","landingPage":"/products/{p}","utm_source":"google"}},"#,
                r#""geo":{{"country":"{c}","city":"Paris"}}}}"#,
                "\n"
            ),
            ts = Utc.timestamp_millis_opt(base + (i as i64) * 37).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            u = i % 5003,
            s = i % 20011,
            d = devices[i % devices.len()],
            b = browsers[i % browsers.len()],
            c = c,
            p = i % 113,
            plt = 700 + (i * 7919) % 3000,
            top = 5 + i % 300,
            sd = 10 + i % 89,
        ));
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = ndjson_batch();
    let validator = Validator {
        limits: Limits {
            max_events_per_request: EVENTS,
            ..Limits::default()
        },
        max_age: chrono::Duration::days(7),
    };
    let now = Utc.with_ymd_and_hms(2024, 12, 9, 14, 40, 0).unwrap();
    // Sanity: every event is valid, so the benchmark measures the happy path.
    let parsed = parse_body(&validator, &body, Format::Ndjson, now).expect("batch decodes");
    assert_eq!(parsed.events.len(), EVENTS, "{:?}", parsed.rejected.first());
    eprintln!(
        "batch: {EVENTS} events, {} bytes, {:.0} bytes/event",
        body.len(),
        body.len() as f64 / EVENTS as f64
    );

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(30);
    group.bench_function("parse_only_serde_json_value", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut n = 0;
                for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let v: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
                    n += v.is_object() as usize;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_and_validate", |b| {
        b.iter(|| parse_body(&validator, &body, Format::Ndjson, now).map(|p| p.events.len()))
    });
    group.bench_function("decode_validate_to_bson", |b| {
        b.iter(|| {
            parse_body(&validator, &body, Format::Ndjson, now).map(|p| {
                p.events
                    .iter()
                    .map(|(_, e)| e.to_document("bench").len())
                    .sum::<usize>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
