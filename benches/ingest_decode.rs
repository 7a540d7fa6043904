//! Events/s for decoding + validating a realistic NDJSON batch, next to only
//! parsing the same bytes into a generic value with the fastest parsers there
//! are (sonic-rs, simd-json) and with `serde_json::Value`.
//! `scripts/bench-ingest.sh` runs this and prints the comparison table.
//!
//! Under `valgrind --tool=callgrind`, `INGEST_COUNT=build|parse_sonic|parse_simd|
//! parse_serde|decode|decode_bson` runs `INGEST_COUNT_PASSES` (10) passes over the
//! batch instead of criterion, so the script can subtract the `build` count (making
//! the batch) and print instructions per event: a figure a busy machine does not change.

// The daemon allocates many small, short-lived values per event; mimalloc
// serves them faster than glibc's allocator (see scripts/bench-ingest.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
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

fn validator() -> Validator {
    Validator {
        limits: Limits {
            max_events_per_request: EVENTS,
            ..Limits::default()
        },
        max_age: chrono::Duration::days(7),
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 12, 9, 14, 40, 0).unwrap()
}

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Parse-only baselines: each line into the parser's own generic value.
fn parse_sonic(body: &[u8]) -> usize {
    lines(body)
        .map(|line| {
            let v: sonic_rs::Value = sonic_rs::from_slice(line).expect("valid JSON");
            sonic_rs::JsonValueTrait::is_object(&v) as usize
        })
        .sum()
}

/// simd-json parses in place, so each line is copied into a reused buffer first
/// (part of what using it costs).
fn parse_simd(body: &[u8]) -> usize {
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0;
    for line in lines(body) {
        buf.clear();
        buf.extend_from_slice(line);
        let v = simd_json::to_borrowed_value(&mut buf).expect("valid JSON");
        n += matches!(v, simd_json::BorrowedValue::Object(_)) as usize;
    }
    n
}

fn parse_serde(body: &[u8]) -> usize {
    lines(body)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            v.is_object() as usize
        })
        .sum()
}

fn decode(validator: &Validator, body: &[u8]) -> usize {
    parse_body(validator, body, Format::Ndjson, now()).map_or(0, |p| p.events.len())
}

fn decode_bson(validator: &Validator, body: &[u8]) -> usize {
    parse_body(validator, body, Format::Ndjson, now()).map_or(0, |p| {
        p.events
            .iter()
            .map(|(_, e)| e.to_document("bench").len())
            .sum::<usize>()
    })
}

fn bench(c: &mut Criterion) {
    let body = ndjson_batch();
    let validator = validator();
    // Sanity: every event is valid, so the benchmark measures the happy path.
    let parsed = parse_body(&validator, &body, Format::Ndjson, now()).expect("batch decodes");
    assert_eq!(parsed.events.len(), EVENTS, "{:?}", parsed.rejected.first());
    assert_eq!(parse_sonic(&body), EVENTS);
    assert_eq!(parse_simd(&body), EVENTS);
    eprintln!(
        "batch: {EVENTS} events, {} bytes, {:.0} bytes/event",
        body.len(),
        body.len() as f64 / EVENTS as f64
    );

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(30);
    group.bench_function("parse_only_sonic_rs_value", |b| {
        b.iter_batched(|| (), |_| parse_sonic(&body), BatchSize::SmallInput)
    });
    group.bench_function("parse_only_simd_json_borrowed", |b| {
        b.iter_batched(|| (), |_| parse_simd(&body), BatchSize::SmallInput)
    });
    group.bench_function("parse_only_serde_json_value", |b| {
        b.iter_batched(|| (), |_| parse_serde(&body), BatchSize::SmallInput)
    });
    group.bench_function("decode_and_validate", |b| {
        b.iter(|| decode(&validator, &body))
    });
    group.bench_function("decode_validate_to_bson", |b| {
        b.iter(|| decode_bson(&validator, &body))
    });
    group.finish();
}

criterion_group!(benches, bench);

/// One run of `what` over the batch, `INGEST_COUNT_PASSES` times, for callgrind
/// (see the module's documentation); `build` only makes the batch.
fn count_instructions(what: &str) {
    let passes: usize = std::env::var("INGEST_COUNT_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let body = ndjson_batch();
    let validator = validator();
    let mut kept = 0;
    for _ in 0..passes {
        kept += match what {
            "parse_sonic" => parse_sonic(&body),
            "parse_simd" => parse_simd(&body),
            "parse_serde" => parse_serde(&body),
            "decode" => decode(&validator, &body),
            "decode_bson" => decode_bson(&validator, &body),
            _ => 0,
        };
    }
    eprintln!("{what}: {passes} passes of {EVENTS} events, {kept} kept");
}

fn main() {
    match std::env::var("INGEST_COUNT") {
        Ok(what) => count_instructions(&what),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
