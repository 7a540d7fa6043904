//! Pipeline mode: a user's aggregation pipeline on one of the data source's
//! collections, with time macros, refused if it could write or run JavaScript,
//! and its results typed from BSON into columns of a stable order.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use bson::{Bson, Document};
use grafana_plugin_sdk::data::{ArrayRefIntoField, Field, Frame};

use super::frames;
use super::model::{Format, ModelError, PipelineQuery};
use crate::store::CollectionNames;

/// Stages and operators that write or run code: refused.
const FORBIDDEN: &[&str] = &["$out", "$merge", "$function", "$accumulator", "$where"];

/// Expands the macros and parses the pipeline.
pub fn prepare(
    q: &PipelineQuery,
    names: &CollectionNames,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
) -> Result<Vec<Document>, ModelError> {
    let allowed = allowed_collections(names);
    if !allowed.iter().any(|c| *c == q.collection) {
        return Err(ModelError::new(
            "collection",
            format!(
                "'{}' is not one of this data source's collections ({})",
                q.collection,
                allowed.join(", ")
            ),
        ));
    }
    let text = expand_macros(&q.pipeline, from_ms, to_ms, interval_ms.max(1))
        .map_err(|r| ModelError::new("pipeline", r))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        ModelError::new("pipeline", format!("not valid JSON after expanding macros: {e}. The pipeline must be a JSON array of stages such as [{{\"$match\": $__timeFilter(timestamp)}}]"))
    })?;
    let serde_json::Value::Array(stages) = value else {
        return Err(ModelError::new(
            "pipeline",
            "must be a JSON array of stages",
        ));
    };
    let mut out = Vec::with_capacity(stages.len());
    for (i, stage) in stages.into_iter().enumerate() {
        let bson = Bson::try_from(stage).map_err(|e| {
            ModelError::new(
                format!("pipeline[{i}]"),
                format!("not valid extended JSON: {e}"),
            )
        })?;
        let Bson::Document(d) = bson else {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                "each stage must be an object such as {\"$match\": {…}}",
            ));
        };
        if let Some(other) = foreign_collection(&Bson::Document(d.clone()), &allowed) {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                format!("'{other}' is not one of this data source's collections ({}); $lookup, $graphLookup and $unionWith may only read those", allowed.join(", ")),
            ));
        }
        if let Some(op) = find_forbidden(&Bson::Document(d.clone())) {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                format!(
                    "{op} is not allowed: pipeline queries are read-only and run no JavaScript"
                ),
            ));
        }
        out.push(d);
    }
    Ok(out)
}

pub fn allowed_collections(n: &CollectionNames) -> Vec<&str> {
    vec![
        &n.metrics_minutely,
        &n.metrics_hourly,
        &n.metrics_daily,
        &n.metrics_monthly,
        &n.sessions,
        &n.events,
        &n.alerts,
        &n.alert_rules,
        &n.pipeline_stats,
        &n.dead_letters,
    ]
}

/// A collection read by `$lookup`, `$graphLookup` or `$unionWith` that is not allowed.
fn foreign_collection(b: &Bson, allowed: &[&str]) -> Option<String> {
    match b {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            let named = match (k.as_str(), v) {
                ("$lookup" | "$graphLookup", Bson::Document(spec)) => {
                    spec.get_str("from").ok().map(str::to_string)
                }
                ("$unionWith", Bson::String(c)) => Some(c.clone()),
                ("$unionWith", Bson::Document(spec)) => {
                    spec.get_str("coll").ok().map(str::to_string)
                }
                _ => None,
            };
            match named {
                Some(c) if !allowed.contains(&c.as_str()) => Some(c),
                _ => foreign_collection(v, allowed),
            }
        }),
        Bson::Array(items) => items.iter().find_map(|i| foreign_collection(i, allowed)),
        _ => None,
    }
}

fn find_forbidden(b: &Bson) -> Option<&'static str> {
    match b {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            FORBIDDEN
                .iter()
                .find(|f| **f == k)
                .copied()
                .or_else(|| find_forbidden(v))
        }),
        Bson::Array(items) => items.iter().find_map(find_forbidden),
        _ => None,
    }
}

fn date(ms: i64) -> String {
    let iso = chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    format!("{{\"$date\": \"{iso}\"}}")
}

/// `$__timeFilter(f)`, `$__timeGroup(f)`, `$__timeFrom`, `$__timeTo`, `$__interval_ms`.
pub fn expand_macros(
    text: &str,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut rest = text;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let (name, consumed_name) = ["$__timeFilter", "$__timeGroup", "$__timeFrom", "$__timeTo", "$__interval_ms"]
            .iter()
            .find(|m| after.starts_with(**m))
            .map(|m| (*m, m.len()))
            .ok_or_else(|| format!("unknown macro at '{}': use $__timeFilter(field), $__timeGroup(field), $__timeFrom, $__timeTo or $__interval_ms", &after[..after.len().min(20)]))?;
        let tail = &after[consumed_name..];
        match name {
            "$__timeFilter" | "$__timeGroup" => {
                let inner = tail
                    .strip_prefix('(')
                    .ok_or_else(|| format!("{name} needs a field: {name}(timestamp)"))?;
                let close = inner
                    .find(')')
                    .ok_or_else(|| format!("{name}( is not closed"))?;
                let field = inner[..close]
                    .trim()
                    .trim_matches('"')
                    .trim_start_matches('$');
                if field.is_empty()
                    || !field
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    return Err(format!(
                        "{name}({}) needs a field name such as timestamp",
                        &inner[..close]
                    ));
                }
                if name == "$__timeFilter" {
                    out.push_str(&format!(
                        "{{\"{field}\": {{\"$gte\": {}, \"$lt\": {}}}}}",
                        date(from_ms),
                        date(to_ms)
                    ));
                } else {
                    out.push_str(&format!(
                        "{{\"$subtract\": [\"${field}\", {{\"$mod\": [{{\"$subtract\": [\"${field}\", {}]}}, {interval_ms}]}}]}}",
                        date(0)
                    ));
                }
                rest = &inner[close + 1..];
            }
            "$__timeFrom" => {
                out.push_str(&date(from_ms));
                rest = tail;
            }
            "$__timeTo" => {
                out.push_str(&date(to_ms));
                rest = tail;
            }
            _ => {
                out.push_str(&interval_ms.to_string());
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The Grafana field type a column becomes. Grafana's frame reader accepts
/// only strings, numbers, booleans, times and JSON, so every BSON type maps to
/// one of these (README, "Pipeline mode", has the table):
///
/// | BSON | field |
/// |---|---|
/// | double, decimal128 | float64 (a decimal beyond 15–17 significant digits is rounded) |
/// | int32, int64 | int64 |
/// | date | time |
/// | timestamp | time (its seconds; the increment is dropped) |
/// | bool | bool |
/// | string, symbol | string |
/// | ObjectId | string (24 hex digits) |
/// | document, array | string holding relaxed Extended JSON |
/// | binary | string (base64) |
/// | regex | string `/pattern/options` |
/// | min key, max key | string `MinKey`, `MaxKey` |
/// | null, undefined, missing | null in the column's type |
///
/// A column whose rows mix types becomes a string column (ints and doubles
/// mixed become float64).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Empty,
    Int,
    Float,
    Time,
    Bool,
    Text,
}

fn kind_of(b: &Bson) -> Kind {
    match b {
        Bson::Null | Bson::Undefined => Kind::Empty,
        Bson::Int32(_) | Bson::Int64(_) => Kind::Int,
        Bson::Double(_) | Bson::Decimal128(_) => Kind::Float,
        Bson::DateTime(_) | Bson::Timestamp(_) => Kind::Time,
        Bson::Boolean(_) => Kind::Bool,
        _ => Kind::Text,
    }
}

fn widen(a: Kind, b: Kind) -> Kind {
    match (a, b) {
        (x, y) if x == y => x,
        (Kind::Empty, y) | (y, Kind::Empty) => y,
        (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
        _ => Kind::Text,
    }
}

fn as_text(b: &Bson) -> Option<String> {
    match b {
        Bson::Null | Bson::Undefined => None,
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => Some(s.clone()),
        Bson::ObjectId(o) => Some(o.to_hex()),
        Bson::Decimal128(d) => Some(d.to_string()),
        Bson::DateTime(d) => d.try_to_rfc3339_string().ok(),
        // bson's canonical Extended JSON already holds the base64 text.
        Bson::Binary(_) => b.clone().into_canonical_extjson()["$binary"]["base64"]
            .as_str()
            .map(str::to_string),
        Bson::RegularExpression(re) => Some(format!("/{}/{}", re.pattern, re.options)),
        Bson::MinKey => Some("MinKey".into()),
        Bson::MaxKey => Some("MaxKey".into()),
        other => Some(other.clone().into_relaxed_extjson().to_string()),
    }
}

fn as_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    }
}

fn as_f64(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
        // Decimal128's canonical text ("1.5E+3", "NaN", "-Infinity") is what
        // Rust's float parser reads.
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

fn as_time_ms(b: &Bson) -> Option<i64> {
    match b {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Timestamp(t) => Some(i64::from(t.time) * 1_000),
        _ => None,
    }
}

/// Rows flattened into columns: `_id` documents (from `$group`) become
/// `_id.<key>` columns; the order is first appearance.
pub fn columns(rows: &[Document]) -> Vec<(String, Vec<Bson>)> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<Bson>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let mut flat: Vec<(String, Bson)> = Vec::new();
        for (k, v) in row {
            match (k.as_str(), v) {
                ("_id", Bson::Document(id)) => {
                    flat.extend(id.iter().map(|(ik, iv)| (format!("_id.{ik}"), iv.clone())))
                }
                _ => flat.push((k.clone(), v.clone())),
            }
        }
        for (k, v) in flat {
            let col = values.entry(k.clone()).or_insert_with(|| {
                order.push(k.clone());
                vec![Bson::Null; i]
            });
            col.push(v);
        }
        for col in values.values_mut() {
            if col.len() < i + 1 {
                col.push(Bson::Null);
            }
        }
    }
    order
        .into_iter()
        .map(|k| {
            let v = values.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

fn typed_field(name: &str, cells: &[Bson]) -> Result<Field, String> {
    let kind = cells.iter().map(kind_of).fold(Kind::Empty, widen);
    let array: ArrayRef = match kind {
        Kind::Int => Arc::new(Int64Array::from(
            cells.iter().map(as_i64).collect::<Vec<_>>(),
        )),
        Kind::Float => Arc::new(Float64Array::from(
            cells.iter().map(as_f64).collect::<Vec<_>>(),
        )),
        Kind::Time => {
            let times: Vec<Option<i64>> = cells.iter().map(as_time_ms).collect();
            return frames::time_field(name, &times);
        }
        Kind::Bool => Arc::new(BooleanArray::from(
            cells.iter().map(Bson::as_bool).collect::<Vec<_>>(),
        )),
        Kind::Text | Kind::Empty => Arc::new(StringArray::from(
            cells.iter().map(as_text).collect::<Vec<_>>(),
        )),
    };
    (array.as_ref() as &dyn Array)
        .try_into_field(name)
        .map_err(|e| format!("column {name}: {e}"))
}

/// One frame of the rows; for time series the time column comes first and rows are sorted by it.
pub fn frame(q: &PipelineQuery, rows: Vec<Document>) -> Result<Frame, ModelError> {
    let mut cols = columns(&rows);
    if q.format == Format::Timeseries && !cols.is_empty() {
        let time = match &q.time_field {
            Some(t) => cols.iter().position(|(k, _)| k == t).ok_or_else(|| {
                ModelError::new(
                    "timeField",
                    format!(
                        "the results have no column '{t}' (columns: {})",
                        cols.iter()
                            .map(|c| c.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
            None => cols
                .iter()
                .position(|(_, v)| v.iter().any(|b| matches!(b, Bson::DateTime(_))))
                .ok_or_else(|| {
                    ModelError::new(
                        "timeField",
                        "no column holds dates: set timeField, or use format table",
                    )
                })?,
        };
        if !cols[time].1.iter().all(|b| matches!(b, Bson::DateTime(_))) {
            return Err(ModelError::new(
                "timeField",
                format!("column '{}' does not hold dates in every row", cols[time].0),
            ));
        }
        let c = cols.remove(time);
        cols.insert(0, c);
        let mut idx: Vec<usize> = (0..rows.len()).collect();
        idx.sort_by_key(|i| {
            cols[0].1[*i]
                .as_datetime()
                .map(|d| d.timestamp_millis())
                .unwrap_or(i64::MIN)
        });
        for (_, v) in cols.iter_mut() {
            *v = idx.iter().map(|i| v[*i].clone()).collect();
        }
    }
    let mut frame = Frame::new(q.collection.clone());
    for (name, cells) in &cols {
        frame =
            frame.with_field(typed_field(name, cells).map_err(|r| ModelError::new("pipeline", r))?);
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn q(pipeline: &str) -> PipelineQuery {
        PipelineQuery {
            collection: "metrics_minutely".into(),
            pipeline: pipeline.into(),
            time_field: None,
            format: Format::Table,
        }
    }

    #[test]
    fn macros_expand_to_the_panel_range() {
        let from = 1_733_752_800_000;
        let to = from + 3_600_000;
        let stages = prepare(&q(r#"[{"$match": $__timeFilter(timestamp)}, {"$group": {"_id": $__timeGroup(timestamp), "n": {"$sum": 1}}}, {"$match": {"x": {"$lt": $__timeTo, "$gte": $__timeFrom}, "i": $__interval_ms}}]"#), &CollectionNames::default(), from, to, 60_000).unwrap();
        let m = stages[0]
            .get_document("$match")
            .unwrap()
            .get_document("timestamp")
            .unwrap();
        assert_eq!(m.get_datetime("$gte").unwrap().timestamp_millis(), from);
        assert_eq!(m.get_datetime("$lt").unwrap().timestamp_millis(), to);
        let g = stages[1]
            .get_document("$group")
            .unwrap()
            .get_document("_id")
            .unwrap();
        assert!(g.contains_key("$subtract"));
        assert_eq!(
            stages[2].get_document("$match").unwrap().get("i"),
            Some(&Bson::Int32(60_000))
        );
    }

    #[test]
    fn writes_and_javascript_are_refused() {
        for (p, op) in [
            (r#"[{"$match": {}}, {"$merge": {"into": "x"}}]"#, "$merge"),
            (r#"[{"$out": "x"}]"#, "$out"),
            (r#"[{"$match": {"$where": "1"}}]"#, "$where"),
            (
                r#"[{"$group": {"_id": 1, "x": {"$accumulator": {}}}}]"#,
                "$accumulator",
            ),
            (r#"[{"$project": {"x": {"$function": {}}}}]"#, "$function"),
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert!(
                e.reason.contains(op) && e.reason.contains("read-only"),
                "{e}"
            );
        }
        let e = prepare(
            &PipelineQuery {
                collection: "users".into(),
                ..q("[]")
            },
            &CollectionNames::default(),
            0,
            1,
            1,
        )
        .unwrap_err();
        assert_eq!(e.path, "collection");
    }

    #[test]
    fn columns_are_typed_and_ordered_by_first_appearance() {
        let rows = vec![
            doc! { "_id": { "t": bson::DateTime::from_millis(2000), "c": "FR" }, "n": 1_i32, "avg": 2.5, "oid": bson::oid::ObjectId::from_bytes([1; 12]) },
            doc! { "_id": { "t": bson::DateTime::from_millis(1000), "c": "DE" }, "n": 2_i64, "extra": { "a": 1 }, "dec": bson::Decimal128::from_bytes([0; 16]) },
        ];
        let cols = columns(&rows);
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["_id.t", "_id.c", "n", "avg", "oid", "extra", "dec"]);
        let f = frame(
            &PipelineQuery {
                format: Format::Timeseries,
                time_field: Some("_id.t".into()),
                ..q("[]")
            },
            rows,
        )
        .unwrap();
        assert_eq!(f.fields()[0].name, "_id.t");
    }
}
