//! A borrowed JSON value for event payloads.
//!
//! `serde_json::Value` allocates every string; events are mostly short strings
//! that can be borrowed from the request body, which is what makes decoding
//! fast enough to keep up with a busy API (see `benches/ingest_decode.rs`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Any JSON value, with strings borrowed from the input where possible and
/// object members kept in input order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Members<'a, Json<'a>>),
}

/// Object members in input order. Duplicate keys are rejected while decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct Members<'a, V>(pub Vec<(Cow<'a, str>, V)>);

impl<V> Default for Members<'_, V> {
    fn default() -> Self {
        Members(Vec::new())
    }
}

impl<'a, V> Members<'a, V> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(k, _)| short_eq(k, key))
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// String equality for the short names and values events use. The rollup hot
/// path compares a few dozen per event: up to 16 bytes take two overlapping
/// word loads per side, where a byte loop (or a call to `memcmp`) cost most of
/// an event's field lookups.
#[inline]
pub fn short_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn word<const W: usize>(s: &[u8], at: usize) -> [u8; W] {
        let mut w = [0u8; W];
        w.copy_from_slice(&s[at..at + W]);
        w
    }
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v)
            .map(Json::Int)
            .unwrap_or(Json::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        MembersVisitor::<Json<'de>>::new()
            .visit_map(map)
            .map(Json::Object)
    }
}

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Members<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor::new())
    }
}

struct MembersVisitor<V>(std::marker::PhantomData<V>);

impl<V> MembersVisitor<V> {
    fn new() -> Self {
        MembersVisitor(std::marker::PhantomData)
    }
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for MembersVisitor<V> {
    type Value = Members<'de, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // serde_json gives no size hint; most event objects have under 16 members.
        let mut members: Vec<(Cow<'de, str>, V)> =
            Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            if members.iter().any(|(k, _)| *k == key.0) {
                return Err(de::Error::custom(format_args!("duplicate key `{}`", key.0)));
            }
            let value = map.next_value()?;
            members.push((key.0, value));
        }
        Ok(Members(members))
    }
}

/// A string borrowed when it has no escapes, owned otherwise.
#[derive(Debug, PartialEq)]
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Json<'_> {
    /// Converts to BSON for storage; integers stay integers.
    pub fn to_bson(&self) -> bson::Bson {
        match self {
            Json::Null => bson::Bson::Null,
            Json::Bool(b) => bson::Bson::Boolean(*b),
            Json::Int(i) => bson::Bson::Int64(*i),
            Json::Float(f) => bson::Bson::Double(*f),
            Json::Str(s) => bson::Bson::String(s.to_string()),
            Json::Array(items) => bson::Bson::Array(items.iter().map(Json::to_bson).collect()),
            Json::Object(m) => bson::Bson::Document(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_bson()))
                    .collect(),
            ),
        }
    }

    /// Reads a stored value back (recovery replays events from MongoDB).
    pub fn from_bson(b: &bson::Bson) -> Json<'static> {
        use bson::Bson;
        match b {
            Bson::Null | Bson::Undefined => Json::Null,
            Bson::Boolean(v) => Json::Bool(*v),
            Bson::Int32(i) => Json::Int(*i as i64),
            Bson::Int64(i) => Json::Int(*i),
            Bson::Double(f) => Json::Float(*f),
            Bson::String(s) => Json::Str(Cow::Owned(s.clone())),
            Bson::Array(items) => Json::Array(items.iter().map(Json::from_bson).collect()),
            Bson::Document(d) => Json::Object(Members(
                d.iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), Json::from_bson(v)))
                    .collect(),
            )),
            other => Json::Str(Cow::Owned(other.to_string())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_eq_is_string_equality_at_every_length() {
        for n in 0..40 {
            let a: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert!(short_eq(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone().into_bytes();
                b[at] = b'#';
                let b = String::from_utf8(b).unwrap();
                assert!(!short_eq(&a, &b), "{a} vs {b}");
            }
            assert!(!short_eq(&a, &format!("{a}x")));
        }
    }

    #[test]
    fn borrows_plain_strings_and_keeps_order() {
        let text = r#"{"b": "x", "a": [1, 2.5, null, true], "c": "esc\"aped"}"#;
        let v: Json = serde_json::from_str(text).unwrap();
        let Json::Object(m) = v else { panic!() };
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a", "c"]);
        assert!(matches!(m.get("b"), Some(Json::Str(Cow::Borrowed("x")))));
        assert!(matches!(m.get("c"), Some(Json::Str(Cow::Owned(_)))));
        assert_eq!(
            m.get("a"),
            Some(&Json::Array(vec![
                Json::Int(1),
                Json::Float(2.5),
                Json::Null,
                Json::Bool(true)
            ]))
        );
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let e = serde_json::from_str::<Json>(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `a`"), "{e}");
    }
}
