//! Event ingest: the events endpoint of the daemon.
//!
//! In: `POST /v1/events` bodies (JSON object, JSON array or NDJSON; gzip or
//! zstd). Out: valid events stored in the `events` time-series collection
//! (acknowledged by MongoDB before the request is answered), refused events in
//! `dead_letters` with their reason, and a response listing both.
//!
//! Stages: [`decode`] (body → event bytes) → [`validate`] (bytes → validated
//! [`crate::event::Event`], read by [`wire`]'s scanner or serde_json) → [`record`] (the contract with the rollup engine,
//! which admits, stores through [`writer`] (group commit) and counts) ;
//! [`http`] wires them to axum, [`auth`] guards the door.

pub mod auth;
pub mod dead_letters;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod record;
pub mod validate;
mod wire;
pub mod writer;

use chrono::{DateTime, Utc};

pub use crate::event::Event;
pub use decode::{BodyError, Format};
pub use validate::{Limits, Rejection, Validator};

/// A request body, decoded and validated.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    /// Valid events with their index in the request.
    pub events: Vec<(usize, Event<'a>)>,
    /// Refused events with their raw bytes (for `dead_letters`).
    pub rejected: Vec<(Rejection, &'a [u8])>,
}

/// Splits and validates a decompressed body. This is the whole CPU cost of
/// accepting events before storage, and what `benches/ingest_decode.rs` measures.
pub fn parse_body<'a>(
    validator: &Validator,
    body: &'a [u8],
    format: Format,
    now: DateTime<Utc>,
) -> Result<Parsed<'a>, BodyError> {
    let items = decode::split(body, format, validator.limits.max_events_per_request)?;
    let mut parsed = Parsed {
        events: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
    };
    for (index, bytes) in items.into_iter().enumerate() {
        match validator.event(index, bytes, now) {
            Ok(e) => parsed.events.push((index, e)),
            Err(r) => parsed.rejected.push((r, bytes)),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod fuzz {
    //! Random and malformed bodies must never panic the decoder or the
    //! validator, and every refusal must carry a reason.
    use super::*;
    use proptest::prelude::*;

    fn validator() -> Validator {
        Validator {
            limits: Limits::default(),
            max_age: chrono::Duration::days(7),
        }
    }

    fn check(body: &[u8], format: Format) {
        let now = chrono::Utc::now();
        match parse_body(&validator(), body, format, now) {
            Ok(parsed) => {
                for (r, _) in &parsed.rejected {
                    assert!(!r.reason.is_empty());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    /// JSON values shaped roughly like events, so mutations reach deep checks.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or_default()),
            "[a-zA-Z0-9$._ -]{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("2024-12-09T14:30:15.234Z")),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("timestamp".to_string()),
                        Just("metadata".to_string()),
                        Just("eventType".to_string()),
                        Just("dimensions".to_string()),
                        Just("metrics".to_string()),
                        Just("attributes".to_string()),
                        Just("geo".to_string()),
                        "[a-z$.]{0,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&body, Format::Json);
            check(&body, Format::Ndjson);
            let _ = decode::decompress(&body, Some("gzip"), 1 << 16);
            let _ = decode::decompress(&body, Some("zstd"), 1 << 16);
        }

        #[test]
        fn event_like_json_never_panics(values in prop::collection::vec(json_value(), 1..8)) {
            let array = serde_json::Value::Array(values.clone()).to_string();
            check(array.as_bytes(), Format::Json);
            let lines: String = values.iter().map(|v| v.to_string() + "\n").collect();
            check(lines.as_bytes(), Format::Ndjson);
        }

        #[test]
        fn truncated_valid_events_are_refused_with_a_reason(cut in 0usize..400) {
            let event = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "page_view", "dimensions": {"country": "FR"}}, "metrics": {"t": 1.5}, "attributes": {"a": [1, {"b": null}]}}"#;
            let body = &event.as_bytes()[..cut.min(event.len() - 1)];
            check(body, Format::Ndjson);
        }
    }
}
