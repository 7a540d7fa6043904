//! Series → Grafana data frames, built from arrow arrays.
//!
//! Time series: one frame per series, a time field and one numeric field whose
//! labels are the group-by values (what Grafana alerting needs; no field config
//! on labelled fields, which the SDK would drop them for). Wide: one frame, a
//! field per series. Table: one row per bucket and group.
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

use arrow_array::{Array, ArrayRef, Float64Array, StringArray, TimestampNanosecondArray};
use grafana_plugin_sdk::data::{ArrayRefIntoField, Field, Frame, Metadata, Notice, Severity};

use super::compute::Series;

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
