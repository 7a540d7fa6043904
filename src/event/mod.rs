//! The event: the one domain type ingest, rollup and backfill share, and how it
//! is stored.
//!
//! In: a validated [`Event`] (made by `ingest`) or a document read back from the
//! `events` collection. Out: the document stored in `events` (with the id of the
//! daemon that accepted it), or the event again ([`Event::from_stored`]), so
//! recovery and backfill count exactly what the live path counted.

pub mod json;

/// The field of a stored event that holds its id (see [`Event::id`]).
pub const EVENT_ID_FIELD: &str = "eventId";

use std::borrow::Cow;

use bson::{doc, Bson, Document};
use chrono::{DateTime, TimeZone, Utc};

pub use json::{short_eq, Json, Members};

/// A valid event. Strings borrow from the request body.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// The sender's id for this event (or one the daemon derived from an
    /// `Idempotency-Key` or a broker message's coordinates), kept as `eventId`:
    /// an event whose id is already stored is not stored or counted again.
    pub id: Option<Cow<'a, str>>,
    pub timestamp: DateTime<Utc>,
    pub event_type: Cow<'a, str>,
    pub source: Option<Cow<'a, str>>,
    pub version: Option<Cow<'a, str>>,
    /// Scalar values only (string, integer, float, boolean).
    pub dimensions: Members<'a, Json<'a>>,
    pub metrics: Members<'a, f64>,
    pub attributes: Members<'a, Json<'a>>,
    pub geo: Option<Members<'a, Json<'a>>>,
}

impl Event<'_> {
    /// The document stored in the `events` time-series collection, with the
    /// id of the daemon that accepted it (`writer`).
    pub fn to_document(&self, writer: &str) -> Document {
        let mut metadata = doc! { "eventType": self.event_type.as_ref() };
        if let Some(s) = &self.source {
            metadata.insert("source", s.as_ref());
        }
        if let Some(v) = &self.version {
            metadata.insert("version", v.as_ref());
        }
        metadata.insert("dimensions", members_to_bson(&self.dimensions));
        let metrics: Document = self
            .metrics
            .iter()
            .map(|(k, v)| (k.to_string(), Bson::Double(*v)))
            .collect();
        let mut d = doc! {
            "timestamp": bson::DateTime::from_millis(self.timestamp.timestamp_millis()),
            "metadata": metadata,
            "metrics": metrics,
            "writer": writer,
        };
        if let Some(id) = &self.id {
            d.insert(EVENT_ID_FIELD, id.as_ref());
        }
        if !self.attributes.is_empty() {
            d.insert("attributes", members_to_bson(&self.attributes));
        }
        if let Some(geo) = &self.geo {
            d.insert("geo", members_to_bson(geo));
        }
        d
    }

    /// Reads an event back from the `events` collection (the inverse of
    /// [`Event::to_document`]), for recovery and backfill.
    pub fn from_stored(d: &Document) -> Result<Event<'static>, String> {
        let ms = d
            .get_datetime("timestamp")
            .map_err(|e| format!("timestamp: {e}"))?
            .timestamp_millis();
        let timestamp = Utc
            .timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| format!("timestamp {ms} is out of range"))?;
        let metadata = d
            .get_document("metadata")
            .map_err(|e| format!("metadata: {e}"))?;
        let owned = |key: &str| {
            metadata
                .get_str(key)
                .ok()
                .map(|s| Cow::Owned(s.to_string()))
        };
        let members = |doc: Option<&Document>| -> Members<'static, Json<'static>> {
            Members(
                doc.map(|d| {
                    d.iter()
                        .map(|(k, v)| (Cow::Owned(k.clone()), Json::from_bson(v)))
                        .collect()
                })
                .unwrap_or_default(),
            )
        };
        let metrics = d
            .get_document("metrics")
            .ok()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| match v {
                        Bson::Double(f) => Some((Cow::Owned(k.clone()), *f)),
                        Bson::Int32(i) => Some((Cow::Owned(k.clone()), *i as f64)),
                        Bson::Int64(i) => Some((Cow::Owned(k.clone()), *i as f64)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Event {
            id: d
                .get_str(EVENT_ID_FIELD)
                .ok()
                .map(|s| Cow::Owned(s.to_string())),
            timestamp,
            event_type: owned("eventType").ok_or("metadata.eventType is missing")?,
            source: owned("source"),
            version: owned("version"),
            dimensions: members(metadata.get_document("dimensions").ok()),
            metrics: Members(metrics),
            attributes: members(d.get_document("attributes").ok()),
            geo: d.get_document("geo").ok().map(|g| members(Some(g))),
        })
    }

    /// The key the deduplication ledger keeps for this event's id: a 128-bit hash, so
    /// an open minute costs 16 bytes per id whatever the ids' length (a collision
    /// among 2^64 ids has a chance near 2^-64).
    pub fn id_key(&self) -> Option<u128> {
        self.id
            .as_deref()
            .map(|id| xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
    }

    /// A dimension as a string, for grouping (numbers and booleans in their JSON form).
    pub fn dimension(&self, name: &str) -> Option<Cow<'_, str>> {
        self.dimensions.get(name).map(scalar_text)
    }
}

pub fn scalar_text<'b>(v: &'b Json) -> Cow<'b, str> {
    match v {
        Json::Str(s) => Cow::Borrowed(s.as_ref()),
        Json::Int(i) => Cow::Owned(i.to_string()),
        Json::Float(f) => Cow::Owned(f.to_string()),
        Json::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        _ => Cow::Borrowed(""),
    }
}

fn members_to_bson(m: &Members<Json>) -> Document {
    m.iter()
        .map(|(k, v)| (k.to_string(), v.to_bson()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_text_gives_numbers_and_booleans_in_their_json_form() {
        assert_eq!(scalar_text(&Json::Int(42)), "42");
        assert_eq!(scalar_text(&Json::Float(1.5)), "1.5");
        assert_eq!(scalar_text(&Json::Bool(true)), "true");
        assert_eq!(scalar_text(&Json::Str(Cow::Borrowed("FR"))), "FR");
        assert_eq!(scalar_text(&Json::Null), "");
    }
}
