//! Frame building. In: a builder query's series (or top-K rows), or a
//! pipeline query's rows. Out: Grafana data frames built from arrow arrays.
//!
//! Time series: one frame per series, a time field and one numeric field whose
//! labels are the group-by values (what Grafana alerting needs; no field config
//! on labelled fields, which the SDK would drop them for). Wide: one frame, a
//! field per series. Table: one row per bucket and group. Pipeline queries: one
//! frame, a field per column, typed from BSON ([`pipeline_frame`]).
//!
//! Times are epoch milliseconds everywhere in the query code and become
//! nanoseconds here, in [`time_field`], the one place every frame's time column
//! is made: the SDK declares every time field `Timestamp(Nanosecond)` in the
//! Arrow schema without converting its values, and Grafana's reader
//! (grafana-plugin-sdk-go `data/arrow.go`) reads every Arrow timestamp as
//! nanoseconds. The JSON of live frames is right either way: the SDK writes
//! nanosecond arrays to JSON as the epoch milliseconds Grafana Live expects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use bson::{Bson, Document};
use grafana_plugin_sdk::data::{ArrayRefIntoField, Field, Frame, Metadata, Notice, Severity};

use super::compute::Series;
use super::decode;
use super::model::{Format, ModelError, PipelineQuery};

fn field(array: ArrayRef, name: &str) -> Result<Field, String> {
    (array.as_ref() as &dyn Array)
        .try_into_field(name)
        .map_err(|e| format!("cannot build field {name}: {e}"))
}

const NANOS_PER_MILLI: i64 = 1_000_000;

/// A time field named `name` from epoch milliseconds, held as nanoseconds
/// (see the module docs). An instant outside what nanoseconds since 1970 can
/// hold in an i64 (before 1677 or after 2262) is refused rather than wrapped.
pub fn time_field(name: &str, times_ms: &[Option<i64>]) -> Result<Field, String> {
    let nanos = times_ms
        .iter()
        .map(|t| match t {
            None => Ok(None),
            Some(ms) => ms.checked_mul(NANOS_PER_MILLI).map(Some).ok_or_else(|| {
                format!("field {name}: the time {ms} ms since 1970 is outside the years 1677-2262 that Grafana can show")
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    field(Arc::new(TimestampNanosecondArray::from(nanos)), name)
}

fn time_column(times_ms: impl IntoIterator<Item = i64>) -> Result<Field, String> {
    let times: Vec<Option<i64>> = times_ms.into_iter().map(Some).collect();
    time_field("time", &times)
}

/// Frame metadata: the pipeline that ran, and notices for the panel.
pub fn metadata(executed: Option<String>, notices: &[(Severity, String)]) -> Metadata {
    let mut m = Metadata::default();
    m.executed_query_string = executed;
    if !notices.is_empty() {
        m.notices = Some(
            notices
                .iter()
                .map(|(sev, text)| {
                    let mut n = Notice::new(text.clone());
                    n.severity = Some(*sev);
                    n
                })
                .collect(),
        );
    }
    m
}

pub fn timeseries(series: &[Series], meta: Metadata) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        let values: Vec<Option<f64>> = s.points.iter().map(|p| p.1).collect();
        let value =
            field(Arc::new(Float64Array::from(values)), &s.name)?.with_labels(s.labels.clone());
        let mut frame = Frame::new(s.name.clone())
            .with_field(time_column(s.points.iter().map(|p| p.0))?)
            .with_field(value);
        if i == 0 {
            frame = frame.with_metadata(meta.clone());
        }
        frames.push(frame);
    }
    if frames.is_empty() {
        // An empty result still carries the query and notices.
        frames.push(Frame::new("no data").with_metadata(meta));
    }
    Ok(frames)
}

pub fn wide(series: &[Series], meta: Metadata) -> Result<Vec<Frame>, String> {
    let axis: BTreeSet<i64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let axis: Vec<i64> = axis.into_iter().collect();
    let mut frame = Frame::new("wide").with_field(time_column(axis.iter().copied())?);
    for s in series {
        let by_time: BTreeMap<i64, Option<f64>> = s.points.iter().copied().collect();
        let values: Vec<Option<f64>> = axis
            .iter()
            .map(|t| by_time.get(t).copied().flatten())
            .collect();
        frame = frame.with_field(
            field(Arc::new(Float64Array::from(values)), &s.name)?.with_labels(s.labels.clone()),
        );
    }
    Ok(vec![frame.with_metadata(meta)])
}

/// One row per (bucket, group): time, the group-by columns, one column per measure.
pub fn table(
    series: &[Series],
    group_by: &[String],
    measure_names: &[String],
    meta: Metadata,
) -> Result<Vec<Frame>, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: BTreeMap<(i64, Vec<String>), BTreeMap<String, Option<f64>>> = BTreeMap::new();
    let mut label_names: Vec<String> = group_by.to_vec();
    for s in series {
        for k in s.labels.keys() {
            if !label_names.contains(k) {
                label_names.push(k.clone());
            }
        }
    }
    for s in series {
        let column = measure_names
            .get(s.measure)
            .cloned()
            .unwrap_or_else(|| s.name.clone());
        if !columns.contains(&column) {
            columns.push(column.clone());
        }
        let group: Vec<String> = label_names
            .iter()
            .map(|l| s.labels.get(l).cloned().unwrap_or_default())
            .collect();
        for (t, v) in &s.points {
            rows.entry((*t, group.clone()))
                .or_default()
                .insert(column.clone(), *v);
        }
    }
    let keys: Vec<&(i64, Vec<String>)> = rows.keys().collect();
    let mut frame = Frame::new("table").with_field(time_column(keys.iter().map(|k| k.0))?);
    for (i, name) in label_names.iter().enumerate() {
        let values: Vec<Option<String>> = keys.iter().map(|k| Some(k.1[i].clone())).collect();
        frame = frame.with_field(field(Arc::new(StringArray::from(values)), name)?);
    }
    for c in &columns {
        let values: Vec<Option<f64>> = rows.values().map(|r| r.get(c).copied().flatten()).collect();
        frame = frame.with_field(field(Arc::new(Float64Array::from(values)), c)?);
    }
    Ok(vec![frame.with_metadata(meta)])
}

/// A top-K list over the whole range: group columns, the value, its count.
pub fn top_list(
    name: &str,
    group_by: &[String],
    attribute: &str,
    rows: &[(Vec<Option<String>>, String, u64)],
    meta: Metadata,
) -> Result<Frame, String> {
    let mut frame = Frame::new(name.to_string());
    for (i, g) in group_by.iter().enumerate() {
        let values: Vec<Option<String>> =
            rows.iter().map(|r| r.0.get(i).cloned().flatten()).collect();
        frame = frame.with_field(field(Arc::new(StringArray::from(values)), g)?);
    }
    let values: Vec<Option<String>> = rows.iter().map(|r| Some(r.1.clone())).collect();
    frame = frame.with_field(field(Arc::new(StringArray::from(values)), attribute)?);
    let counts: Vec<Option<f64>> = rows.iter().map(|r| Some(r.2 as f64)).collect();
    frame = frame.with_field(field(Arc::new(Float64Array::from(counts)), "count")?);
    Ok(frame.with_metadata(meta))
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

fn as_time_ms(b: &Bson) -> Option<i64> {
    match b {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Timestamp(t) => Some(i64::from(t.time) * 1_000),
        _ => None,
    }
}

fn typed_field(name: &str, cells: &[Bson]) -> Result<Field, String> {
    let kind = cells.iter().map(kind_of).fold(Kind::Empty, widen);
    let array: ArrayRef = match kind {
        Kind::Int => Arc::new(Int64Array::from(
            cells.iter().map(as_i64).collect::<Vec<_>>(),
        )),
        Kind::Float => Arc::new(Float64Array::from(
            cells.iter().map(decode::as_f64).collect::<Vec<_>>(),
        )),
        Kind::Time => {
            let times: Vec<Option<i64>> = cells.iter().map(as_time_ms).collect();
            return time_field(name, &times);
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

/// The one frame of a pipeline query's rows, a typed field per column; for
/// time series the time column comes first and rows are sorted by it.
pub fn pipeline_frame(q: &PipelineQuery, rows: &[Document]) -> Result<Frame, ModelError> {
    let mut cols = decode::columns(rows);
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

    #[test]
    fn columns_are_typed_and_ordered_by_first_appearance() {
        let rows = vec![
            doc! { "_id": { "t": bson::DateTime::from_millis(2000), "c": "FR" }, "n": 1_i32, "avg": 2.5, "oid": bson::oid::ObjectId::from_bytes([1; 12]) },
            doc! { "_id": { "t": bson::DateTime::from_millis(1000), "c": "DE" }, "n": 2_i64, "extra": { "a": 1 }, "dec": bson::Decimal128::from_bytes([0; 16]) },
        ];
        let cols = decode::columns(&rows);
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["_id.t", "_id.c", "n", "avg", "oid", "extra", "dec"]);
        let f = pipeline_frame(
            &PipelineQuery {
                collection: "metrics_minutely".into(),
                pipeline: "[]".into(),
                format: Format::Timeseries,
                time_field: Some("_id.t".into()),
            },
            &rows,
        )
        .unwrap();
        assert_eq!(f.fields()[0].name, "_id.t");
    }
}
