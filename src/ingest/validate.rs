//! The event shape the API accepts, and its validation.
//!
//! In: one JSON event (bytes). Out: a validated [`Event`] borrowing from those
//! bytes, or a [`Rejection`] naming the field path and the reason.

use chrono::{DateTime, NaiveDate, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::wire::{self, WireEvent};
use crate::event::json::{Json, Members};
use crate::event::Event;

/// Configurable bounds on what one request and one event may hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, after decompression, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most events in one request (413 beyond).
    pub max_events_per_request: usize,
    /// Most entries in `metadata.dimensions`.
    pub max_dimensions: usize,
    /// Most entries in `metrics`, and in `attributes`.
    pub max_fields: usize,
    /// Longest string (value or key), in bytes.
    pub max_string_bytes: usize,
    /// Deepest nesting inside `attributes` and `geo`.
    pub max_depth: usize,
    /// How far in the future a timestamp may be, in seconds.
    pub max_future_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_dimensions: 32,
            max_fields: 64,
            max_string_bytes: 1024,
            max_depth: 8,
            max_future_secs: 300,
        }
    }
}

/// Why one event was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Position of the event in the request (array index or NDJSON line, from 0).
    pub index: usize,
    /// Dotted path of the offending field; empty for the event as a whole.
    pub path: String,
    pub reason: String,
    /// Short machine-readable kind, used as the `reason` label of metrics.
    #[serde(skip)]
    pub kind: &'static str,
}

/// Validation context: the limits and the accepted time range.
#[derive(Clone, Debug)]
pub struct Validator {
    pub limits: Limits,
    /// Events older than this are refused (the raw retention; older events
    /// would expire at once).
    pub max_age: chrono::Duration,
}

impl Validator {
    /// Decodes and validates one event. `now` is passed in so tests and
    /// benchmarks control the clock.
    pub fn event<'a>(
        &self,
        index: usize,
        bytes: &'a [u8],
        now: DateTime<Utc>,
    ) -> Result<Event<'a>, Rejection> {
        let reject = |path: &str, kind: &'static str, reason: String| Rejection {
            index,
            path: path.to_string(),
            reason,
            kind,
        };
        // The scanner reads the common shape; whatever it is unsure of,
        // serde_json reads (and explains) as it always has.
        let decoded = match wire::scan(bytes) {
            Some(w) => Ok(w),
            None => serde_json::from_slice::<WireEvent<'a>>(bytes),
        };
        let wire = match decoded {
            Ok(w) => w,
            // Decoding again with path tracking only on failure keeps the
            // common path fast.
            Err(first) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let (path, inner) = match serde_path_to_error::deserialize::<_, WireEvent>(&mut de)
                {
                    Err(e) => (json_path(e.path()), e.into_inner()),
                    Ok(_) => (String::new(), first),
                };
                let (kind, path) = if inner.is_syntax() || inner.is_eof() {
                    // The position in the text says more than a half-read path.
                    ("malformed_json", String::new())
                } else if path.starts_with("metrics.") {
                    ("invalid_metric", path)
                } else {
                    ("invalid_field", path)
                };
                return Err(reject(&path, kind, explain_serde(bytes, &inner)));
            }
        };
        let limits = &self.limits;

        if let Some(id) = &wire.id {
            check_event_id(&id.0).map_err(|r| reject("id", "invalid_field", r))?;
        }
        let timestamp = match wire.timestamp {
            None => {
                return Err(reject(
                    "timestamp",
                    "missing_field",
                    "timestamp is required (RFC 3339 string or epoch milliseconds)".into(),
                ))
            }
            Some(t) => parse_time(&t).map_err(|r| reject("timestamp", "invalid_timestamp", r))?,
        };
        let max_future = chrono::Duration::seconds(limits.max_future_secs as i64);
        if timestamp > now + max_future {
            return Err(reject(
                "timestamp",
                "timestamp_in_future",
                format!(
                    "{} is more than {} s in the future (server time {}); check the sender's clock",
                    timestamp.to_rfc3339(),
                    limits.max_future_secs,
                    now.to_rfc3339()
                ),
            ));
        }
        if timestamp < now - self.max_age {
            let mut reason = format!(
                "{} is older than the raw retention ({} days)",
                timestamp.to_rfc3339(),
                self.max_age.num_days()
            );
            if timestamp.timestamp_millis() < 100_000_000_000 {
                reason.push_str("; epoch timestamps must be in milliseconds, not seconds");
            }
            return Err(reject("timestamp", "timestamp_too_old", reason));
        }

        let Some(metadata) = wire.metadata else {
            return Err(reject(
                "metadata",
                "missing_field",
                "metadata is required, with at least metadata.eventType".into(),
            ));
        };
        let event_type = match metadata.event_type {
            None => {
                return Err(reject(
                    "metadata.eventType",
                    "missing_field",
                    "metadata.eventType is required".into(),
                ))
            }
            Some(t) => t.0,
        };
        if event_type.is_empty()
            || event_type.len() > 64
            || !event_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(reject(
                "metadata.eventType",
                "invalid_field",
                "must be 1 to 64 characters among letters, digits, '_', '.', ':' and '-'".into(),
            ));
        }
        for (name, value) in [
            ("metadata.source", &metadata.source),
            ("metadata.version", &metadata.version),
        ] {
            if let Some(v) = value {
                check_string(&v.0, limits).map_err(|r| reject(name, "string_too_long", r))?;
            }
        }

        let mut dimensions = metadata.dimensions.unwrap_or_default();
        if dimensions.len() > limits.max_dimensions {
            return Err(reject(
                "metadata.dimensions",
                "too_many_fields",
                format!(
                    "{} dimensions, at most {} allowed",
                    dimensions.len(),
                    limits.max_dimensions
                ),
            ));
        }
        // A null dimension means "not known"; it is dropped rather than refused.
        dimensions.0.retain(|(_, v)| *v != Json::Null);
        for (key, value) in dimensions.iter() {
            // Paths are formatted only on failure: this loop runs for every event.
            let path = || format!("metadata.dimensions.{key}");
            check_key(key, limits).map_err(|r| reject(&path(), "invalid_field", r))?;
            match value {
                Json::Str(s) => {
                    check_string(s, limits).map_err(|r| reject(&path(), "string_too_long", r))?
                }
                Json::Int(_) | Json::Bool(_) => {}
                Json::Float(f) if f.is_finite() => {}
                other => {
                    return Err(reject(
                        &path(),
                        "invalid_field",
                        format!(
                            "a dimension must be a string, number or boolean, not {}",
                            other.kind()
                        ),
                    ))
                }
            }
        }

        let wire_metrics = wire.metrics.unwrap_or_default();
        if wire_metrics.len() > limits.max_fields {
            return Err(reject(
                "metrics",
                "too_many_fields",
                format!(
                    "{} metrics, at most {} allowed",
                    wire_metrics.len(),
                    limits.max_fields
                ),
            ));
        }
        for (key, _) in wire_metrics.iter() {
            check_key(key, limits)
                .map_err(|r| reject(&format!("metrics.{key}"), "invalid_field", r))?;
            if key == "count" {
                return Err(reject(
                    "metrics.count",
                    "invalid_field",
                    "the metric name 'count' is reserved (rollups store the number of events as metrics.count); rename the metric".into(),
                ));
            }
        }
        let metrics = Members(wire_metrics.0.into_iter().map(|(k, v)| (k, v.0)).collect());

        let attributes = wire.attributes.unwrap_or_default();
        if attributes.len() > limits.max_fields {
            return Err(reject(
                "attributes",
                "too_many_fields",
                format!(
                    "{} attributes, at most {} allowed",
                    attributes.len(),
                    limits.max_fields
                ),
            ));
        }
        check_tree("attributes", &attributes, limits)
            .map_err(|(p, r)| reject(&p, "invalid_field", r))?;
        if let Some(geo) = &wire.geo {
            check_tree("geo", geo, limits).map_err(|(p, r)| reject(&p, "invalid_field", r))?;
        }

        Ok(Event {
            id: wire.id.map(|s| s.0),
            timestamp,
            event_type,
            source: metadata.source.map(|s| s.0),
            version: metadata.version.map(|s| s.0),
            dimensions,
            metrics,
            attributes,
            geo: wire.geo,
        })
    }
}

/// Longest event id (or `Idempotency-Key`) accepted, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 200;

/// An event id (or an `Idempotency-Key`): 1 to 200 bytes, no control characters,
/// so it reads the same in `events`, `dead_letters` and logs.
pub fn check_event_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_EVENT_ID_BYTES {
        return Err(format!(
            "an event id must be 1 to {MAX_EVENT_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("an event id must not hold control characters".into());
    }
    Ok(())
}

fn json_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        String::new()
    } else {
        text
    }
}

/// serde's messages end with " at line L column C", which is noise for a
/// one-event document once the path is known; keep the position for syntax errors.
fn explain_serde(bytes: &[u8], e: &serde_json::Error) -> String {
    let text = e.to_string();
    if e.is_syntax() || e.is_eof() {
        return format!(
            "not valid JSON: {}",
            crate::ingest::decode::explain_json_error(bytes, e)
        );
    }
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

// Out of line (once per event) so profiles show what timestamps cost.
#[inline(never)]
fn parse_time(t: &Json) -> Result<DateTime<Utc>, String> {
    let millis = match t {
        // Events are stored as BSON dates, in milliseconds: finer digits are
        // dropped here, so the event counted live is the one recovery reads back
        // (the fuzzer's event_body found "…15.2355555Z" counted as 15.2355555 and
        // replayed as 15.235).
        Json::Str(s) => {
            if let Some(t) = common_rfc3339(s) {
                return Ok(t);
            }
            return DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc).trunc_subsecs(3))
                .map_err(|e| {
                    format!("'{s}' is not an RFC 3339 time such as 2024-12-09T14:30:15.234Z ({e})")
                });
        }
        Json::Int(ms) => *ms,
        Json::Float(f) if f.is_finite() && f.abs() < 1e15 => f.round() as i64,
        other => {
            return Err(format!(
                "must be an RFC 3339 string or epoch milliseconds, not {}",
                other.kind()
            ))
        }
    };
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| format!("{millis} is not a valid epoch time in milliseconds"))
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with 1 to 9 fraction digits, cut to milliseconds,
/// without chrono's general parser (a fifth of the cost of decoding an event).
/// Anything else (offsets, leap seconds, lower-case letters, impossible dates)
/// is `None`, and chrono decides, so what is accepted and its value are
/// unchanged.
fn common_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let millis = match &b[19..] {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let mut ms = 0;
            for (i, &d) in fraction.iter().enumerate() {
                if !d.is_ascii_digit() {
                    return None;
                }
                if i < 3 {
                    ms = ms * 10 + u32::from(d - b'0');
                }
            }
            ms * 10u32.pow(3u32.saturating_sub(fraction.len() as u32))
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_milli_opt(hour, minute, second, millis)
        .map(|t| t.and_utc())
}

fn check_string(s: &str, limits: &Limits) -> Result<(), String> {
    if s.len() > limits.max_string_bytes {
        return Err(format!(
            "string of {} bytes, at most {} allowed",
            s.len(),
            limits.max_string_bytes
        ));
    }
    Ok(())
}

/// Field names become MongoDB field names: no leading '$', no '.', not empty.
#[inline]
fn check_key(key: &str, limits: &Limits) -> Result<(), String> {
    if usable_name(key) && key.len() <= limits.max_string_bytes {
        Ok(())
    } else {
        Err(unusable_key(key, limits))
    }
}

#[inline]
fn usable_name(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('$') && !has_dot_or_nul(key.as_bytes())
}

/// Why `key` failed [`check_key`]; apart, so the check itself stays a few
/// inlined instructions for the ~17 keys of every event.
#[cold]
#[inline(never)]
fn unusable_key(key: &str, limits: &Limits) -> String {
    if !usable_name(key) {
        format!("'{key}' is not a usable field name (must be non-empty, not start with '$', contain no '.')")
    } else {
        format!(
            "field name of {} bytes, at most {} allowed",
            key.len(),
            limits.max_string_bytes
        )
    }
}

/// Whether `bytes` holds a '.' or a NUL. This runs for every key of every
/// event: a word at a time (overlapping words cover the tail) it costs a
/// quarter of the byte loop it replaced (`scripts/bench-ingest.sh`).
#[inline]
fn has_dot_or_nul(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `w` is zero or a '.'.
    let hit = |w: u64| {
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        zero(w) | zero(w ^ (ONES * u64::from(b'.'))) != 0
    };
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let n = bytes.len();
    match n {
        0..=3 => bytes.iter().any(|&b| b == b'.' || b == 0),
        4..=7 => {
            let half = |at: usize| {
                let mut w = [0u8; 4];
                w.copy_from_slice(&bytes[at..at + 4]);
                u64::from(u32::from_le_bytes(w))
            };
            hit(half(0) | half(n - 4) << 32)
        }
        _ => (0..n / 8).any(|i| hit(word(i * 8))) || hit(word(n - 8)),
    }
}

/// A problem deep inside `attributes` or `geo`: the reason, and the path
/// segments collected innermost first while the error travels up.
struct TreeError {
    segments: Vec<String>,
    reason: String,
}

impl TreeError {
    fn new(reason: String) -> Self {
        TreeError {
            segments: Vec::new(),
            reason,
        }
    }

    fn within(mut self, segment: String) -> Self {
        self.segments.push(segment);
        self
    }

    fn path(&self, prefix: &str) -> String {
        let mut path = prefix.to_string();
        for s in self.segments.iter().rev() {
            if !s.starts_with('[') {
                path.push('.');
            }
            path.push_str(s);
        }
        path
    }
}

fn check_tree(
    prefix: &str,
    members: &Members<Json>,
    limits: &Limits,
) -> Result<(), (String, String)> {
    check_members(members, limits, 1).map_err(|e| (e.path(prefix), e.reason))
}

fn check_members(members: &Members<Json>, limits: &Limits, depth: usize) -> Result<(), TreeError> {
    if depth > limits.max_depth {
        return Err(TreeError::new(format!(
            "nested deeper than {} levels",
            limits.max_depth
        )));
    }
    for (key, value) in members.iter() {
        check_key(key, limits)
            .map_err(TreeError::new)
            .and_then(|()| check_value(value, limits, depth))
            .map_err(|e| e.within(key.to_string()))?;
    }
    Ok(())
}

fn check_value(value: &Json, limits: &Limits, depth: usize) -> Result<(), TreeError> {
    match value {
        Json::Str(s) => check_string(s, limits).map_err(TreeError::new),
        Json::Float(f) if !f.is_finite() => Err(TreeError::new("numbers must be finite".into())),
        Json::Object(m) => check_members(m, limits, depth + 1),
        Json::Array(items) => {
            if depth + 1 > limits.max_depth {
                return Err(TreeError::new(format!(
                    "nested deeper than {} levels",
                    limits.max_depth
                )));
            }
            items.iter().enumerate().try_for_each(|(i, v)| {
                check_value(v, limits, depth + 1).map_err(|e| e.within(format!("[{i}]")))
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Bson;

    fn validator() -> Validator {
        Validator {
            limits: Limits::default(),
            max_age: chrono::Duration::days(7),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 12, 9, 14, 31, 0).unwrap()
    }

    #[test]
    fn a_dot_or_nul_is_found_at_every_position_of_every_length() {
        for n in 0..40 {
            let plain = vec![b'k'; n];
            assert!(!has_dot_or_nul(&plain), "length {n}");
            // Bytes next to '.' and NUL (0x2D, 0x2F, 0x01, 0xFF) are not hits.
            let near: Vec<u8> = (0..n).map(|i| [0x2D, 0x2F, 0x01, 0xFF][i % 4]).collect();
            assert!(!has_dot_or_nul(&near), "length {n}");
            for at in 0..n {
                for hit in [b'.', 0] {
                    let mut key = plain.clone();
                    key[at] = hit;
                    assert!(has_dot_or_nul(&key), "{hit} at {at} of {n}");
                }
            }
        }
    }

    const SEED: &str = r#"{
        "timestamp": "2024-12-09T14:30:15.234Z",
        "metadata": {"eventType": "page_view", "source": "web", "version": "2.1.0",
            "dimensions": {"userId": "u1", "sessionId": "s1", "deviceType": "mobile",
                "browser": "Chrome", "os": "iOS", "country": "FR", "city": "Paris", "campaignId": null}},
        "metrics": {"pageLoadTime": 1247, "timeOnPage": 45, "scrollDepth": 0.78},
        "attributes": {"referrer": "https://google.com", "landingPage": "/products", "exitPage": null},
        "geo": {"country": "FR", "coordinates": {"type": "Point", "coordinates": [2.35, 48.85]}}
    }"#;

    fn rejection(body: &str) -> Rejection {
        validator().event(3, body.as_bytes(), now()).unwrap_err()
    }

    #[test]
    fn an_event_id_is_kept_and_a_bad_one_refused_at_id() {
        let with_id = SEED.replacen('{', r#"{"id": "order-17","#, 1);
        let e = validator().event(0, with_id.as_bytes(), now()).unwrap();
        assert_eq!(e.id.as_deref(), Some("order-17"));
        assert_eq!(e.to_document("w").get_str("eventId").unwrap(), "order-17");
        for bad in ["", r"a\u0007b", &"x".repeat(201)] {
            let body = SEED.replacen('{', &format!(r#"{{"id": "{bad}","#), 1);
            let r = rejection(&body);
            assert_eq!((r.path.as_str(), r.kind), ("id", "invalid_field"), "{bad}");
        }
        assert!(check_event_id(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn seed_event_is_accepted_and_stored_in_seed_shape() {
        let e = validator().event(0, SEED.as_bytes(), now()).unwrap();
        assert_eq!(e.event_type, "page_view");
        assert_eq!(e.dimension("country").as_deref(), Some("FR"));
        assert_eq!(
            e.dimension("campaignId"),
            None,
            "null dimensions are dropped"
        );
        let d = e.to_document("main");
        assert_eq!(
            d.get_document("metadata")
                .unwrap()
                .get_str("eventType")
                .unwrap(),
            "page_view"
        );
        assert_eq!(
            d.get_document("metrics")
                .unwrap()
                .get_f64("pageLoadTime")
                .unwrap(),
            1247.0
        );
        assert_eq!(
            d.get_datetime("timestamp").unwrap().timestamp_millis(),
            1733754615234
        );
        assert!(
            d.get_document("attributes")
                .unwrap()
                .get("exitPage")
                .unwrap()
                == &Bson::Null
        );
    }

    #[test]
    fn stored_events_read_back_equal() {
        let e = validator().event(0, SEED.as_bytes(), now()).unwrap();
        let back = Event::from_stored(&e.to_document("main")).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn times_finer_than_a_millisecond_are_cut_to_what_is_stored() {
        for (text, ms) in [
            ("2024-12-09T14:30:15.2355555555Z", 1733754615235),
            ("2024-12-09T14:30:15.999999+00:00", 1733754615999),
        ] {
            let body = format!(r#"{{"timestamp": "{text}", "metadata": {{"eventType": "x"}}}}"#);
            let e = validator().event(0, body.as_bytes(), now()).unwrap();
            assert_eq!(e.timestamp.timestamp_millis(), ms);
            assert_eq!(
                e.timestamp.timestamp_subsec_nanos() % 1_000_000,
                0,
                "{text}"
            );
            assert_eq!(Event::from_stored(&e.to_document("main")).unwrap(), e);
        }
    }

    #[test]
    fn the_common_time_shape_reads_as_chrono_reads_it() {
        for text in [
            "2024-12-09T14:30:15.234Z",
            "2024-12-09T14:30:15Z",
            "2024-12-09T14:30:15.2Z",
            "2024-12-09T14:30:15.23Z",
            "2024-12-09T14:30:15.999999999Z",
            "2024-02-29T23:59:59.001Z",
            "2023-02-29T00:00:00Z",
            "2024-12-09T24:00:00Z",
            "2024-12-09T14:60:00Z",
            "2024-12-09T14:30:60Z",
            "2024-13-09T14:30:15Z",
            "2024-12-09T14:30:15.Z",
            "2024-12-09T14:30:15.1234567890Z",
            "2024-12-09t14:30:15Z",
            "2024-12-09T14:30:15+01:00",
            "0000-01-01T00:00:00Z",
            "2024-12-09T14:3a:15Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|d| d.with_timezone(&Utc).trunc_subsecs(3));
            if let Some(fast) = common_rfc3339(text) {
                assert_eq!(Some(fast), chrono, "{text}");
            }
            assert_eq!(parse_time(&Json::Str(text.into())).ok(), chrono, "{text}");
        }
        assert!(common_rfc3339("2024-12-09T14:30:15.234Z").is_some());
    }

    #[test]
    fn epoch_milliseconds_are_accepted() {
        let body = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "click"}}"#;
        let e = validator().event(0, body.as_bytes(), now()).unwrap();
        assert_eq!(e.timestamp.timestamp_millis(), 1733754615234);
    }

    #[test]
    fn each_problem_names_its_path() {
        let cases = [
            (
                r#"{"metadata": {"eventType": "x"}}"#,
                "timestamp",
                "required",
            ),
            (
                r#"{"timestamp": "yesterday", "metadata": {"eventType": "x"}}"#,
                "timestamp",
                "RFC 3339",
            ),
            (
                r#"{"timestamp": 1733754615, "metadata": {"eventType": "x"}}"#,
                "timestamp",
                "milliseconds",
            ),
            (
                r#"{"timestamp": "2024-12-09T14:40:00Z", "metadata": {"eventType": "x"}}"#,
                "timestamp",
                "future",
            ),
            (
                r#"{"timestamp": "2024-11-01T00:00:00Z", "metadata": {"eventType": "x"}}"#,
                "timestamp",
                "retention",
            ),
            (r#"{"timestamp": 1733754615234}"#, "metadata", "required"),
            (
                r#"{"timestamp": 1733754615234, "metadata": {}}"#,
                "metadata.eventType",
                "required",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "a b"}}"#,
                "metadata.eventType",
                "letters",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "metrics": {"t": "12"}}"#,
                "metrics.t",
                "finite number",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "metrics": {"t": null}}"#,
                "metrics.t",
                "finite number",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "metrics": {"$t": 1}}"#,
                "metrics.$t",
                "field name",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x", "dimensions": {"c": {"a": 1}}}}"#,
                "metadata.dimensions.c",
                "string, number or boolean",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "extra": 1}"#,
                "extra",
                "unknown field `extra`",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x", "dims": {}}}"#,
                "metadata.dims",
                "unknown field `dims`",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": 5}}"#,
                "metadata.eventType",
                "a string",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "metrics": []}"#,
                "metrics",
                "object",
            ),
            (
                r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x""#,
                "",
                "not valid JSON",
            ),
        ];
        for (body, path, words) in cases {
            let r = rejection(body);
            assert_eq!(r.index, 3);
            assert_eq!(r.path, path, "{body} → {r:?}");
            assert!(r.reason.contains(words), "{body} → {}", r.reason);
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut v = validator();
        v.limits.max_string_bytes = 5;
        v.limits.max_dimensions = 1;
        let long = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x", "dimensions": {"c": "toolong"}}}"#;
        let r = v.event(0, long.as_bytes(), now()).unwrap_err();
        assert_eq!(r.path, "metadata.dimensions.c");
        let many = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x", "dimensions": {"a": "1", "b": "2"}}}"#;
        let r = v.event(0, many.as_bytes(), now()).unwrap_err();
        assert_eq!(r.path, "metadata.dimensions");
        let deep = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}}"#;
        let r = validator().event(0, deep.as_bytes(), now()).unwrap_err();
        assert!(r.reason.contains("nested deeper"), "{r:?}");
        assert_eq!(r.path, "attributes.a.b.c.d.e.f.g.h");
        let in_array = r#"{"timestamp": 1733754615234, "metadata": {"eventType": "x"}, "geo": {"c": [1, {"$bad": 2}]}}"#;
        let r = validator()
            .event(0, in_array.as_bytes(), now())
            .unwrap_err();
        assert_eq!(r.path, "geo.c[1].$bad");
    }
}
