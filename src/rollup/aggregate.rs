//! What one rollup bucket holds, how events update it, how buckets merge, and
//! how it is stored.
//!
//! Stored shape (one document per spec, level, bucket, dimension tuple and writer):
//! `{_id, spec, granularity, timestamp, writer, dimensions{…}, metrics{count,
//! <m>{sum,min,max,count}}, sketches{distinct{<key>: bin}, quantiles{<m>: bin},
//! topK{<attr>: bin}}, topK{<attr>: [{value,count}]}, topKTotal{<attr>: n},
//! final, computedAt}`.

use std::borrow::Cow;

use bson::RawDocumentBuf;
use bson::{Bson, Document};
use sha2::{Digest, Sha256};

use super::bson_writer::{self, BsonWriter};
use super::error::FieldError;
use super::sketch::{Distinct, Quantiles, TopK};
use super::spec::Spec;
use super::Level;
use crate::event::json::{short_eq, Json};
use crate::event::scalar_text;
use crate::event::Event;

/// Sum, extremes and count of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub count: u64,
}

impl Stats {
    fn one(v: f64) -> Stats {
        Stats {
            sum: v,
            min: v,
            max: v,
            count: 1,
        }
    }

    fn add(&mut self, v: f64) {
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.count += 1;
    }

    fn merge(&mut self, o: &Stats) {
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
    }
}

/// The summary of one bucket for one dimension tuple.
#[derive(Clone, Debug)]
pub struct Aggregate {
    pub count: u64,
    /// By metric name, in the order first seen.
    pub metrics: Vec<(Box<str>, Stats)>,
    /// Aligned with `Spec::distinct`.
    pub distinct: Vec<Distinct>,
    /// Aligned with `Spec::quantiles`.
    pub quantiles: Vec<Quantiles>,
    /// Aligned with `Spec::top_k`.
    pub top_k: Vec<TopK>,
}

/// Most dimensions a spec may group by (checked by `Spec::new`).
pub const MAX_DIMENSIONS: usize = 16;

/// The group-by values of an event, in spec order; `None` when absent. On the
/// stack: every event builds one per spec, and a heap vector each time was a
/// measurable part of the update.
pub struct DimValues<'a> {
    values: [Option<Cow<'a, str>>; MAX_DIMENSIONS],
    len: usize,
}

impl<'a> std::ops::Deref for DimValues<'a> {
    type Target = [Option<Cow<'a, str>>];

    fn deref(&self) -> &Self::Target {
        &self.values[..self.len]
    }
}

/// An event's value for a spec dimension (`eventType` is the event type).
pub fn dimension_values<'e>(spec: &Spec, event: &'e Event<'_>) -> DimValues<'e> {
    let mut out = DimValues {
        values: Default::default(),
        len: spec.dimensions.len().min(MAX_DIMENSIONS),
    };
    for (slot, name) in out.values.iter_mut().zip(&spec.dimensions) {
        *slot = if name == "eventType" {
            Some(Cow::Borrowed(event.event_type.as_ref()))
        } else {
            event.dimensions.get(name).map(scalar_text)
        };
    }
    out
}

impl Aggregate {
    pub fn new(spec: &Spec) -> Aggregate {
        Aggregate {
            count: 0,
            metrics: Vec::new(),
            distinct: spec.distinct.iter().map(|_| Distinct::default()).collect(),
            quantiles: spec
                .quantiles
                .iter()
                .map(|_| Quantiles::new(spec.quantile_relative_error))
                .collect(),
            top_k: spec.top_k.iter().map(|t| TopK::new(t.k)).collect(),
        }
    }

    /// Adds one event.
    pub fn record(&mut self, spec: &Spec, event: &Event) {
        self.count += 1;
        for (name, value) in event.metrics.iter() {
            if !spec.metrics.is_empty() && !spec.metrics.iter().any(|m| m == name) {
                continue;
            }
            match self.metrics.iter_mut().find(|(n, _)| short_eq(n, name)) {
                Some((_, s)) => s.add(*value),
                None => self.metrics.push((name.into(), Stats::one(*value))),
            }
        }
        for (key, sketch) in spec.distinct.iter().zip(&mut self.distinct) {
            if let Some(v) = event.dimensions.get(key) {
                sketch.insert(&scalar_text(v));
            }
        }
        for (name, sketch) in spec.quantiles.iter().zip(&mut self.quantiles) {
            if let Some(v) = event.metrics.get(name) {
                sketch.insert(*v);
            }
        }
        for (t, sketch) in spec.top_k.iter().zip(&mut self.top_k) {
            match event.attributes.get(&t.attribute) {
                Some(Json::Str(s)) => sketch.insert(s),
                Some(v @ (Json::Int(_) | Json::Float(_) | Json::Bool(_))) => {
                    sketch.insert(&scalar_text(v))
                }
                _ => {}
            }
        }
    }

    /// Folds `other` in: counts and sums add, extremes combine, sketches merge.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        for (name, stats) in &other.metrics {
            match self.metrics.iter_mut().find(|(n, _)| n == name) {
                Some((_, s)) => s.merge(stats),
                None => self.metrics.push((name.clone(), *stats)),
            }
        }
        for (a, b) in self.distinct.iter_mut().zip(&other.distinct) {
            a.merge(b);
        }
        for (a, b) in self.quantiles.iter_mut().zip(&other.quantiles) {
            // Both come from the same spec, so their accuracy matches.
            let _ = a.merge(b);
        }
        for (a, b) in self.top_k.iter_mut().zip(&other.top_k) {
            a.merge(b);
        }
    }

    /// Approximate heap bytes held (for the benchmark's memory figures).
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Aggregate>()
            + self
                .metrics
                .iter()
                .map(|(n, _)| n.len() + 48)
                .sum::<usize>()
            + self.distinct.iter().map(Distinct::heap_size).sum::<usize>()
            + self
                .quantiles
                .iter()
                .map(Quantiles::heap_size)
                .sum::<usize>()
            + self.top_k.iter().map(TopK::heap_size).sum::<usize>()
    }

    /// The stored document.
    #[allow(clippy::too_many_arguments)]
    pub fn to_document(
        &self,
        spec: &Spec,
        level: Level,
        start_ms: i64,
        dims: &[Option<Box<str>>],
        dims_digest: &[u8; 8],
        writer: &str,
        is_final: bool,
        now_ms: i64,
    ) -> RawDocumentBuf {
        let mut w = BsonWriter::new(self.size_guess());
        w.str(
            "_id",
            &document_id_of(spec, level, start_ms, dims_digest, writer),
        );
        w.str("spec", &spec.name);
        w.str("granularity", level.name());
        w.date_time("timestamp", start_ms);
        w.str("writer", writer);
        w.begin_document("dimensions");
        for (name, value) in spec.dimensions.iter().zip(dims) {
            match value {
                Some(v) => w.str(name, v),
                None => w.null(name),
            }
        }
        w.end();
        w.begin_document("metrics");
        w.i64("count", self.count as i64);
        let mut sorted: Vec<&(Box<str>, Stats)> = self.metrics.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, s) in sorted {
            w.begin_document(name);
            w.f64("sum", s.sum);
            w.f64("min", s.min);
            w.f64("max", s.max);
            w.i64("count", s.count as i64);
            w.end();
        }
        w.end();
        w.begin_document("sketches");
        w.begin_document("distinct");
        for (key, sketch) in spec.distinct.iter().zip(&self.distinct) {
            w.binary(key, &sketch.to_bytes());
        }
        w.end();
        w.begin_document("quantiles");
        for (key, sketch) in spec.quantiles.iter().zip(&self.quantiles) {
            w.binary(key, &sketch.to_bytes());
        }
        w.end();
        w.begin_document("topK");
        for (t, sketch) in spec.top_k.iter().zip(&self.top_k) {
            w.binary(&t.attribute, &sketch.to_bytes());
        }
        w.end();
        w.end();
        w.begin_document("topK");
        let mut key = String::new();
        for (t, sketch) in spec.top_k.iter().zip(&self.top_k) {
            w.begin_array(&t.attribute);
            for (i, (value, count)) in sketch.top().into_iter().enumerate() {
                w.begin_document(bson_writer::index(i, &mut key));
                w.str("value", value);
                w.i64("count", count as i64);
                w.end();
            }
            w.end();
        }
        w.end();
        w.begin_document("topKTotal");
        for (t, sketch) in spec.top_k.iter().zip(&self.top_k) {
            w.i64(&t.attribute, sketch.total() as i64);
        }
        w.end();
        w.bool("final", is_final);
        w.date_time("computedAt", now_ms);
        w.finish()
    }

    /// About how many bytes the stored document takes, so that it is written into
    /// one buffer without growing it.
    fn size_guess(&self) -> usize {
        let sketches: usize = self.distinct.iter().map(|d| d.heap_size()).sum::<usize>()
            + self.quantiles.iter().map(|q| q.heap_size()).sum::<usize>()
            + self.top_k.iter().map(|t| 2 * t.heap_size()).sum::<usize>();
        512 + 64 * self.metrics.len() + sketches
    }

    /// Reads a stored document back (for recovery, backfill and queries).
    pub fn from_document(spec: &Spec, d: &Document) -> Result<Aggregate, FieldError> {
        let mut agg = Aggregate::new(spec);
        let metrics = d
            .get_document("metrics")
            .map_err(|e| FieldError::new("metrics", e))?;
        agg.count = int(metrics.get("count"))
            .ok_or_else(|| FieldError::new("metrics.count", "missing"))? as u64;
        for (name, value) in metrics {
            if name == "count" {
                continue;
            }
            let Bson::Document(m) = value else { continue };
            agg.metrics.push((
                name.as_str().into(),
                Stats {
                    sum: float(m.get("sum")).unwrap_or(0.0),
                    min: float(m.get("min")).unwrap_or(f64::INFINITY),
                    max: float(m.get("max")).unwrap_or(f64::NEG_INFINITY),
                    count: int(m.get("count")).unwrap_or(0) as u64,
                },
            ));
        }
        let sketches = d.get_document("sketches").ok();
        let bytes = |group: &str, key: &str| -> Option<Vec<u8>> {
            match sketches?.get_document(group).ok()?.get(key)? {
                Bson::Binary(b) => Some(b.bytes.clone()),
                _ => None,
            }
        };
        for (i, key) in spec.distinct.iter().enumerate() {
            if let Some(b) = bytes("distinct", key) {
                agg.distinct[i] = Distinct::from_bytes(&b)
                    .map_err(|e| FieldError::new(format!("sketches.distinct.{key}"), e))?;
            }
        }
        for (i, key) in spec.quantiles.iter().enumerate() {
            if let Some(b) = bytes("quantiles", key) {
                agg.quantiles[i] = Quantiles::from_bytes(&b)
                    .map_err(|e| FieldError::new(format!("sketches.quantiles.{key}"), e))?;
            }
        }
        for (i, t) in spec.top_k.iter().enumerate() {
            if let Some(b) = bytes("topK", &t.attribute) {
                agg.top_k[i] = TopK::from_bytes(&b, t.k)
                    .map_err(|e| FieldError::new(format!("sketches.topK.{}", t.attribute), e))?;
            }
        }
        Ok(agg)
    }
}

/// Reads `dimensions` of a stored document in spec order.
pub fn stored_dimensions(spec: &Spec, d: &Document) -> Vec<Option<Box<str>>> {
    let dims = d.get_document("dimensions").ok();
    spec.dimensions
        .iter()
        .map(|name| match dims.and_then(|x| x.get(name)) {
            Some(Bson::String(s)) => Some(s.as_str().into()),
            _ => None,
        })
        .collect()
}

fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(i) => Some(*i as i64),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn float(v: Option<&Bson>) -> Option<f64> {
    match v? {
        Bson::Int32(i) => Some(*i as f64),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    }
}

/// Deterministic `_id`: the same bucket of the same writer is always the same
/// document, so every write is an idempotent replacement.
pub fn document_id(
    spec: &Spec,
    level: Level,
    start_ms: i64,
    dims: &[Option<Box<str>>],
    writer: &str,
) -> String {
    document_id_of(spec, level, start_ms, &dims_digest(dims), writer)
}

/// The part of a document id that names its dimension tuple (a SHA-256 prefix): the
/// same for every bucket of the tuple, so a window works it out once.
pub fn dims_digest(dims: &[Option<Box<str>>]) -> [u8; 8] {
    let mut h = Sha256::new();
    for d in dims {
        match d {
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u32).to_le_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&h.finalize()[..8]);
    prefix
}

/// [`document_id`] from the tuple's [`dims_digest`].
pub fn document_id_of(
    spec: &Spec,
    level: Level,
    start_ms: i64,
    digest: &[u8; 8],
    writer: &str,
) -> String {
    // `spec:level:start:writer:hex`, put together by hand: `format!` cost as much as the hash.
    let mut id = String::with_capacity(spec.name.len() + writer.len() + 48);
    id.push_str(&spec.name);
    id.push(':');
    id.push_str(level.name());
    id.push(':');
    push_decimal(&mut id, start_ms);
    id.push(':');
    id.push_str(writer);
    id.push(':');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in digest {
        id.push(HEX[(b >> 4) as usize] as char);
        id.push(HEX[(b & 15) as usize] as char);
    }
    id
}

fn push_decimal(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(d as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::spec::SpecConfig;

    /// Stored documents are replaced by `_id`: the ids of this version must be the
    /// ids earlier versions wrote (`format!` of the same parts).
    #[test]
    fn document_ids_are_those_stored_before() {
        let spec = Spec::new(&SpecConfig::default()).unwrap();
        for (start, dims) in [
            (
                1_733_754_600_000i64,
                vec![Some("page_view"), Some("FR"), None],
            ),
            (0, vec![]),
            (-60_000, vec![None, Some("é ü")]),
            (i64::MIN, vec![Some("")]),
            (i64::MAX, vec![Some("x")]),
        ] {
            let dims: Vec<Option<Box<str>>> = dims.into_iter().map(|d| d.map(Box::from)).collect();
            for level in Level::ALL {
                let mut h = Sha256::new();
                for d in &dims {
                    match d {
                        Some(v) => {
                            h.update([1u8]);
                            h.update((v.len() as u32).to_le_bytes());
                            h.update(v.as_bytes());
                        }
                        None => h.update([0u8]),
                    }
                }
                let before = format!(
                    "{}:{}:{}:{}:{}",
                    spec.name,
                    level.name(),
                    start,
                    "writer-1",
                    hex::encode(&h.finalize()[..8])
                );
                assert_eq!(document_id(&spec, level, start, &dims, "writer-1"), before);
            }
        }
    }
}
