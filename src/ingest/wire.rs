//! The event as sent, before validation, and the fast way to read it.
//!
//! In: one event's bytes. Out: a [`WireEvent`] borrowing from them, from
//! [`scan`] when the bytes take the common shape (no escapes, plain numbers,
//! no nulls for the top fields), else `None`, and the caller decodes with
//! serde_json as before.
//!
//! Why two decoders: serde_json through serde's derive spends most of its time
//! matching field names through generic visitors; a scanner that knows the
//! event's shape does the same work in about a third of the time
//! (`benches/ingest_decode.rs`). It never decides anything serde_json would
//! decide otherwise: on anything it is not sure of (an escape, a duplicate or
//! unknown field, a null, a number whose value might round differently, deep
//! nesting, bytes that are not UTF-8, any syntax error) it gives up, and
//! serde_json, with its error messages, decodes the event. The property test
//! below holds the two to the same result on every input the scanner accepts.

use std::borrow::Cow;

use serde::Deserialize;

use crate::event::json::{short_eq, CowStr, Json, Members};

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireEvent<'a> {
    #[serde(default, borrow)]
    pub id: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub timestamp: Option<Json<'a>>,
    #[serde(borrow)]
    pub metadata: Option<WireMetadata<'a>>,
    #[serde(default, borrow)]
    pub metrics: Option<Members<'a, Finite>>,
    #[serde(default, borrow)]
    pub attributes: Option<Members<'a, Json<'a>>>,
    #[serde(default, borrow)]
    pub geo: Option<Members<'a, Json<'a>>>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct WireMetadata<'a> {
    #[serde(borrow)]
    pub event_type: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    pub source: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    pub version: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    pub dimensions: Option<Members<'a, Json<'a>>>,
}

/// A metric value: any JSON number that fits a finite f64.
#[derive(Debug, PartialEq)]
pub(super) struct Finite(pub f64);

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Finite;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a finite number (a metric must be a finite number)")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Finite, E> {
                Ok(Finite(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Finite, E> {
                Ok(Finite(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Finite, E> {
                if v.is_finite() {
                    Ok(Finite(v))
                } else {
                    Err(E::custom("a metric must be a finite number"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads an event of the common shape without serde; `None` hands the bytes to
/// serde_json (see the module's documentation).
pub(super) fn scan(bytes: &[u8]) -> Option<WireEvent<'_>> {
    // One UTF-8 check for the whole event; every string then sits between two
    // ASCII quotes of valid text, so slicing it out cannot fail.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scanner {
        text,
        bytes,
        at: 0,
        stack: Vec::with_capacity(32),
    };
    let event = s.event()?;
    s.space();
    (s.at == bytes.len()).then_some(event)
}

/// Nesting the scanner follows before giving up; serde_json's own bound is
/// 128, and events rarely nest past 4.
const MAX_DEPTH: usize = 32;

/// The numbers the scanner reads exactly as serde_json does: integers of up
/// to 18 digits, and decimals of up to 15 significant digits with no exponent,
/// whose value is one correctly rounded division (as in serde_json).
const MAX_INT_DIGITS: usize = 18;
const MAX_DECIMAL_DIGITS: usize = 15;
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The offset of the first `"`, `\\` or control character, eight bytes at a
/// time (strings are mostly 5 to 20 bytes; a byte at a time was a third of
/// the scanner's time).
#[inline(always)]
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte's high bit is set where it is zero after the xor (a quote or
        // a backslash) or below 0x20; the lowest such byte is always exact.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let found = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

enum Number {
    Int(i64),
    Float(f64),
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Members being read, innermost object last. Each object's members are
    /// moved out into a vector of exactly their number: a batch of 10,000
    /// events then touches half the memory it would with growing vectors,
    /// which is most of the time on a batch that does not fit in cache.
    /// `split_off` moves them with one copy (collecting a `drain` moved them one
    /// by one, ~390 instructions per event).
    stack: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Skips white space, then takes `byte`.
    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        self.space();
        if self.peek()? == byte {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// After a member: `true` if another follows (`,`), `false` at the end.
    #[inline]
    fn more(&mut self, close: u8) -> Option<bool> {
        self.space();
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            b if b == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Opens an object; `true` if it has members.
    fn open(&mut self) -> Option<bool> {
        self.eat(b'{')?;
        self.space();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(false);
        }
        Some(true)
    }

    /// A string without escapes or control characters (serde_json borrows
    /// those too; the others it decodes, so they are left to it).
    // Inlined into its few callers: as a call, saving and restoring
    // registers was a fifth of its cost, and it runs ~30 times per event.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = self.bytes.get(start..)?;
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    /// An object key followed by its `:`.
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        let key = self.string()?;
        self.eat(b':')?;
        Some(key)
    }

    // Out of line (called once per event) so profiles name the scanner's parts.
    #[inline(never)]
    fn event(&mut self) -> Option<WireEvent<'a>> {
        let mut e = WireEvent {
            id: None,
            timestamp: None,
            metadata: None,
            metrics: None,
            attributes: None,
            geo: None,
        };
        if !self.open()? {
            return Some(e);
        }
        // Each field at most once (serde refuses duplicates); a null leaves a
        // field unset, which the scanner does not track, so any null gives up.
        loop {
            match self.key()? {
                "id" if e.id.is_none() => e.id = Some(self.cow_str()?),
                "timestamp" if e.timestamp.is_none() => e.timestamp = Some(self.non_null()?),
                "metadata" if e.metadata.is_none() => e.metadata = Some(self.metadata()?),
                "metrics" if e.metrics.is_none() => e.metrics = Some(self.metrics()?),
                "attributes" if e.attributes.is_none() => e.attributes = Some(self.members(1)?),
                "geo" if e.geo.is_none() => e.geo = Some(self.members(1)?),
                _ => return None,
            }
            if !self.more(b'}')? {
                return Some(e);
            }
        }
    }

    #[inline(never)]
    fn metadata(&mut self) -> Option<WireMetadata<'a>> {
        let mut m = WireMetadata {
            event_type: None,
            source: None,
            version: None,
            dimensions: None,
        };
        if !self.open()? {
            return Some(m);
        }
        loop {
            match self.key()? {
                "eventType" if m.event_type.is_none() => m.event_type = Some(self.cow_str()?),
                "source" if m.source.is_none() => m.source = Some(self.cow_str()?),
                "version" if m.version.is_none() => m.version = Some(self.cow_str()?),
                "dimensions" if m.dimensions.is_none() => m.dimensions = Some(self.members(2)?),
                _ => return None,
            }
            if !self.more(b'}')? {
                return Some(m);
            }
        }
    }

    fn cow_str(&mut self) -> Option<CowStr<'a>> {
        self.string().map(|s| CowStr(Cow::Borrowed(s)))
    }

    fn non_null(&mut self) -> Option<Json<'a>> {
        match self.value(1)? {
            Json::Null => None,
            v => Some(v),
        }
    }

    fn metrics(&mut self) -> Option<Members<'a, Finite>> {
        let mut members: Vec<(Cow<'a, str>, Finite)> = Vec::new();
        if self.open()? {
            // Metrics are few: counted first, so the vector is allocated once.
            members.reserve(
                self.bytes[self.at..]
                    .iter()
                    .take_while(|&&b| b != b'}')
                    .filter(|&&b| b == b',')
                    .count()
                    + 1,
            );
            loop {
                let key = self.key()?;
                if members.iter().any(|(k, _)| short_eq(k, key)) {
                    return None;
                }
                self.space();
                let value = match self.number()? {
                    Number::Int(i) => i as f64,
                    Number::Float(f) => f,
                };
                members.push((Cow::Borrowed(key), Finite(value)));
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Some(Members(members))
    }

    /// An object's members, `depth` levels into the event.
    fn members(&mut self, depth: usize) -> Option<Members<'a, Json<'a>>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mark = self.stack.len();
        if self.open()? {
            loop {
                let key = self.key()?;
                // A key already seen: serde_json's decoding refuses it with a message.
                if self.stack[mark..].iter().any(|(k, _)| short_eq(k, key)) {
                    return None;
                }
                let value = self.value(depth)?;
                self.stack.push((Cow::Borrowed(key), value));
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Some(Members(self.stack.split_off(mark)))
    }

    /// Any value, inside a container `depth` levels into the event.
    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        self.space();
        Some(match self.peek()? {
            b'"' => Json::Str(Cow::Borrowed(self.string()?)),
            b'{' => Json::Object(self.members(depth + 1)?),
            b'[' => {
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                self.space();
                let mut items = Vec::new();
                if self.peek()? == b']' {
                    self.at += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Json::Array(items)
            }
            b't' => self.literal(b"true", Json::Bool(true))?,
            b'f' => self.literal(b"false", Json::Bool(false))?,
            b'n' => self.literal(b"null", Json::Null)?,
            _ => match self.number()? {
                // serde_json hands positive integers over as u64 and
                // `Json` keeps those up to i64::MAX as integers; 18 digits
                // always fit.
                Number::Int(i) => Json::Int(i),
                Number::Float(f) => Json::Float(f),
            },
        })
    }

    fn literal(&mut self, word: &[u8], value: Json<'a>) -> Option<Json<'a>> {
        if self.bytes.get(self.at..self.at + word.len())? == word {
            self.at += word.len();
            Some(value)
        } else {
            None
        }
    }

    /// A JSON number in the range read exactly (see [`MAX_INT_DIGITS`]).
    fn number(&mut self) -> Option<Number> {
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut significand: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            significand = significand * 10 + u64::from(d - b'0');
            self.at += 1;
            if self.at - start > MAX_INT_DIGITS {
                return None;
            }
        }
        let int_digits = self.at - start;
        // No digits, or a leading zero before more digits: serde_json refuses.
        if int_digits == 0 || (int_digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        match self.peek() {
            Some(b'.') => {
                self.at += 1;
                let frac_start = self.at;
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    significand = significand * 10 + u64::from(d - b'0');
                    self.at += 1;
                    if self.at - start - 1 > MAX_DECIMAL_DIGITS {
                        return None;
                    }
                }
                let frac_digits = self.at - frac_start;
                if frac_digits == 0 {
                    return None;
                }
                // Exact operands (≤ 2^53 and a power of ten ≤ 1e15): one
                // correctly rounded division, which is serde_json's result.
                let f = significand as f64 / POW10[frac_digits];
                Some(Number::Float(if negative { -f } else { f }))
            }
            Some(b'e' | b'E') => None,
            _ if negative && significand == 0 => Some(Number::Float(-0.0)),
            _ if negative => Some(Number::Int(-(significand as i64))),
            _ => Some(Number::Int(significand as i64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde(bytes: &[u8]) -> Option<WireEvent<'_>> {
        serde_json::from_slice(bytes).ok()
    }

    #[test]
    fn the_common_shape_is_scanned_like_serde_json_reads_it() {
        let event = br#" {"id":"e-1", "timestamp":"2024-12-09T14:30:15.234Z","metadata":{"eventType":"page_view","source":"web","version":"2.1.0",
            "dimensions":{"userId":"u1","n":-3,"f":0.5,"b":true,"z":null}},
            "metrics":{"pageLoadTime":1247,"timeOnPage":45.0,"scrollDepth":0.78,"neg":-0,"big":123456789012345678},
            "attributes":{"a":[1,-2.25,{"b":null},[],{}],"s":"Paris"},"geo":{}} "#;
        let scanned = scan(event).expect("the common shape");
        assert_eq!(Some(&scanned), serde(event).as_ref());
        let Some(Members(metrics)) = &scanned.metrics else {
            panic!()
        };
        assert!(metrics[3].1 .0 == 0.0 && metrics[3].1 .0.is_sign_negative());
    }

    #[test]
    fn scanned_objects_hold_no_spare_capacity() {
        let event =
            br#"{"metadata":{"dimensions":{"a":"1","b":{"c":2,"d":3},"e":true}},"geo":{"x":1}}"#;
        let scanned = scan(event).expect("the common shape");
        let dimensions = scanned
            .metadata
            .and_then(|m| m.dimensions)
            .expect("dimensions");
        assert_eq!((dimensions.0.len(), dimensions.0.capacity()), (3, 3));
        let Json::Object(inner) = &dimensions.0[1].1 else {
            panic!("{dimensions:?}")
        };
        assert_eq!((inner.0.len(), inner.0.capacity()), (2, 2));
        let geo = scanned.geo.expect("geo");
        assert_eq!((geo.0.len(), geo.0.capacity()), (1, 1));
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        for body in [
            &br#"{"timestamp":null}"#[..],
            br#"{"timestamp":1,"timestamp":2}"#,
            br#"{"metadata":{"eventType":"a\"b"}}"#,
            br#"{"metrics":{"a":1,"a":2}}"#,
            br#"{"metrics":{"a":1,"bb":2,"c":3,"bb":4}}"#,
            br#"{"geo":{"city":"P","country":"F","os":"i","country":"G"}}"#,
            br#"{"metrics":{"a":1e3}}"#,
            br#"{"metrics":{"a":0.12345678901234567}}"#,
            br#"{"metrics":{"a":01}}"#,
            br#"{"metrics":{"a":"1"}}"#,
            br#"{"extra":1}"#,
            br#"{"geo":{"a":1}} x"#,
            br#"{"geo":{"a":tru}}"#,
            b"{\"geo\":{\"a\":\"\xff\"}}",
            b"{\"geo\":{\"a\":\"tab\tinside\"}}",
        ] {
            assert!(scan(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
        let deep = format!(
            r#"{{"attributes":{{"a":{}{}}}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(scan(deep.as_bytes()).is_none());
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            (any::<i32>(), 0u32..20).prop_map(|(i, d)| format!(
                "{i}.{:0>width$}",
                i.unsigned_abs() % 1000,
                width = d as usize
            )),
            any::<f64>().prop_map(|f| f.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f}")),
            "[a-z\\\\\"é\t -]{0,8}".prop_map(|s| format!("\"{s}\"")),
            Just("\"2024-12-09T14:30:15.234Z\"".to_string()),
            Just("-0".to_string()),
            Just("1e5".to_string()),
            Just("01".to_string()),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..5).prop_map(|m| format!(
                    "{{{}}}",
                    m.iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("id".to_string()),
            Just("timestamp".to_string()),
            Just("metadata".to_string()),
            Just("eventType".to_string()),
            Just("source".to_string()),
            Just("dimensions".to_string()),
            Just("metrics".to_string()),
            Just("attributes".to_string()),
            Just("geo".to_string()),
            "[a-z]{1,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the scanner accepts, serde_json reads to the same event.
        #[test]
        fn scanned_events_equal_serde_json_events(
            fields in prop::collection::vec((key(), value()), 0..7),
            metrics in prop::collection::vec(("[a-c]", value()), 0..4),
        ) {
            let mut parts: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            if !metrics.is_empty() {
                let m: Vec<String> = metrics.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                parts.push(format!("\"metrics\":{{{}}}", m.join(",")));
            }
            let body = format!("{{{}}}", parts.join(","));
            if let Some(scanned) = scan(body.as_bytes()) {
                prop_assert_eq!(Some(scanned), serde(body.as_bytes()), "{}", body);
            }
        }

        #[test]
        fn arbitrary_bytes_are_scanned_like_serde_json_reads_them(body in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(scanned) = scan(&body) {
                prop_assert_eq!(Some(scanned), serde(&body));
            }
        }
    }
}
