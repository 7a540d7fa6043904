//! Document decoding. In: the documents MongoDB returned for a plan's
//! pipeline (server-side groups, or rollup documents as stored), or the rows
//! of a user's pipeline. Out: a [`Grid`] of cells per group and bucket, or a
//! pipeline's rows as named columns of BSON values. Refuses a document it
//! cannot read with what was wrong in it.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::grid::{Cell, Grid, GroupKey};
use super::plan::{Plan, Strategy};
use crate::rollup::aggregate::Stats;
use crate::rollup::sketch::{Distinct, Quantiles, TopK};
use crate::rollup::SketchError;

/// The grid of what a plan's pipeline returned.
pub fn grid(plan: &Plan, rows: &[Document]) -> Result<Grid, String> {
    match plan.strategy {
        Strategy::ServerGroup => grid_from_groups(plan, rows),
        Strategy::FetchAndMerge => grid_from_documents(plan, rows),
    }
}

fn number(v: Option<&Bson>) -> Option<f64> {
    v.and_then(as_f64)
}

/// A BSON number as a float; `None` for anything else.
pub fn as_f64(b: &Bson) -> Option<f64> {
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

fn text(v: Option<&Bson>) -> Option<String> {
    match v? {
        Bson::String(s) => Some(s.clone()),
        Bson::Null | Bson::Undefined => None,
        other => Some(other.to_string()),
    }
}

fn millis(v: Option<&Bson>) -> Result<i64, String> {
    match v {
        Some(Bson::DateTime(d)) => Ok(d.timestamp_millis()),
        Some(Bson::Int64(i)) => Ok(*i),
        other => Err(format!(
            "a rollup bucket has no usable timestamp ({other:?})"
        )),
    }
}

fn binary<'a>(d: &'a Document, group: &str, key: &str) -> Option<&'a [u8]> {
    match d
        .get_document("sketches")
        .ok()?
        .get_document(group)
        .ok()?
        .get(key)?
    {
        Bson::Binary(b) => Some(&b.bytes),
        _ => None,
    }
}

/// Several rollups in one bucket (coarser buckets, or one rollup per writer) add up.
fn add_cell(grid: &mut Grid, key: GroupKey, t: i64, cell: Cell) {
    grid.entry(key)
        .or_default()
        .entry(t)
        .or_default()
        .merge_first(cell);
}

/// The sketches of one kind a rollup document holds for `names` (the i-th
/// read by `read(bytes, i)`); `None` where the document has none.
fn sketches<T>(
    d: &Document,
    group: &str,
    names: &[String],
    read: impl Fn(&[u8], usize) -> Result<T, SketchError>,
) -> Result<Vec<Option<T>>, String> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            binary(d, group, name)
                .map(|b| read(b, i))
                .transpose()
                .map_err(|e| format!("sketches.{group}.{name}: {e}"))
        })
        .collect()
}

/// Rows of the server-side `$group` (additive measures only).
pub fn grid_from_groups(plan: &Plan, rows: &[Document]) -> Result<Grid, String> {
    let mut grid = Grid::new();
    for r in rows {
        let id = r
            .get_document("_id")
            .map_err(|e| format!("unexpected row: {e}"))?;
        let t = plan.bucket_start(millis(id.get("t"))?);
        let key: GroupKey = (0..plan.group_by.len())
            .map(|i| text(id.get(format!("g{i}"))))
            .collect();
        let cell = Cell {
            count: number(r.get("count")).unwrap_or(0.0) as u64,
            metrics: (0..plan.metrics.len())
                .map(|i| {
                    let n = number(r.get(format!("n{i}"))).unwrap_or(0.0) as u64;
                    (n > 0).then(|| Stats {
                        sum: number(r.get(format!("sum{i}"))).unwrap_or(0.0),
                        min: number(r.get(format!("min{i}"))).unwrap_or(f64::NAN),
                        max: number(r.get(format!("max{i}"))).unwrap_or(f64::NAN),
                        count: n,
                    })
                })
                .collect(),
            closed: r.get_bool("final").unwrap_or(false),
            ..Cell::default()
        };
        add_cell(&mut grid, key, t, cell);
    }
    Ok(grid)
}

/// Rollup documents fetched as they are: re-bucketed and merged here.
pub fn grid_from_documents(plan: &Plan, docs: &[Document]) -> Result<Grid, String> {
    let mut grid = Grid::new();
    for d in docs {
        let t = plan.bucket_start(millis(d.get("timestamp"))?);
        let dims = d.get_document("dimensions").ok();
        let key: GroupKey = plan
            .group_by
            .iter()
            .map(|g| text(dims.and_then(|x| x.get(g))))
            .collect();
        let metrics = d.get_document("metrics").ok();
        let cell = Cell {
            count: number(metrics.and_then(|m| m.get("count"))).unwrap_or(0.0) as u64,
            metrics: plan
                .metrics
                .iter()
                .map(|m| {
                    let s = metrics?.get_document(m).ok()?;
                    Some(Stats {
                        sum: number(s.get("sum"))?,
                        min: number(s.get("min"))?,
                        max: number(s.get("max"))?,
                        count: number(s.get("count"))? as u64,
                    })
                })
                .collect(),
            distinct: sketches(d, "distinct", &plan.distinct, |b, _| {
                Distinct::from_bytes(b)
            })?,
            quantiles: sketches(d, "quantiles", &plan.quantiles, |b, _| {
                Quantiles::from_bytes(b)
            })?,
            top_k: sketches(d, "topK", &plan.top_k, |b, i| {
                TopK::from_bytes(b, plan.top_k_sizes[i])
            })?,
            closed: d.get_bool("final").unwrap_or(false),
        };
        add_cell(&mut grid, key, t, cell);
    }
    Ok(grid)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::plan::plan;
    use crate::query::testing::{builder, ctx, NOW};
    use bson::doc;

    #[test]
    fn pipeline_rows_become_columns_in_order_of_first_appearance() {
        let rows = vec![
            doc! { "_id": { "t": 1_i32, "c": "FR" }, "n": 1_i32 },
            doc! { "_id": { "t": 2_i32 }, "n": 2_i64, "extra": "x" },
        ];
        let cols = columns(&rows);
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["_id.t", "_id.c", "n", "extra"]);
        assert_eq!(cols[1].1, [Bson::String("FR".into()), Bson::Null]);
        assert_eq!(cols[3].1, [Bson::Null, Bson::String("x".into())]);
    }

    #[test]
    fn server_groups_are_rebucketed_and_merged() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "groupBy": ["country"],
            "measures": [{"type": "avg", "metric": "pageLoadTime"}]
        }));
        let p = plan(&q, &ctx(6 * 3_600_000, 300_000)).unwrap();
        let start = p.bucket_start(NOW - 3_600_000);
        let row = |t: i64, country: Option<&str>, count: i64, fin: bool| {
            let mut id = doc! { "t": bson::DateTime::from_millis(t) };
            if let Some(c) = country {
                id.insert("g0", c);
            }
            doc! { "_id": id, "count": count, "final": fin, "sum0": 10.0 * count as f64, "n0": count, "min0": 1.0, "max0": 9_i32 }
        };
        let rows = [
            row(start, Some("FR"), 2, true),
            row(start + 60_000, Some("FR"), 3, false),
            row(start, None, 1, true),
        ];
        let grid = grid(&p, &rows).unwrap();
        let fr = &grid[&vec![Some("FR".to_string())]][&start];
        assert_eq!(fr.count, 5);
        assert!(!fr.closed, "a partial rollup keeps the bucket open");
        let stats = fr.metrics[0].unwrap();
        assert_eq!((stats.sum, stats.count, stats.max), (50.0, 5, 9.0));
        assert_eq!(
            grid[&vec![None]][&start].count,
            1,
            "an absent dimension is a group"
        );
        let bad = [doc! { "_id": { "t": "now" }, "count": 1 }];
        assert!(grid_from_groups(&p, &bad)
            .unwrap_err()
            .contains("timestamp"));
    }

    #[test]
    fn rollup_documents_bring_their_sketches() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "measures": [{"type": "distinct", "key": "userId"}]
        }));
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let mut users = Distinct::default();
        users.insert("u1");
        let sketch = bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: users.to_bytes(),
        };
        let docs = [doc! {
            "timestamp": bson::DateTime::from_millis(NOW - 60_000),
            "final": true,
            "dimensions": { "eventType": "page_view" },
            "metrics": { "count": 4_i32 },
            "sketches": { "distinct": { "userId": sketch } },
        }];
        let grid = grid(&p, &docs).unwrap();
        let cell = &grid[&Vec::<Option<String>>::new()][&(NOW - 60_000)];
        assert_eq!(cell.count, 4);
        assert!(cell.closed);
        assert_eq!(
            cell.distinct[0].as_ref().map(|d| d.estimate().round()),
            Some(1.0)
        );
    }
}
