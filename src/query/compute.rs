//! From fetched rows to series, a pure function: rows are re-bucketed and
//! merged per group (counts and sums add, sketches merge), then each measure
//! is evaluated per bucket, with top-N, moving windows, fill and names.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::model::{BuilderQuery, Fill, MeasureKind};
use super::plan::Plan;
use crate::rollup::aggregate::Stats;
use crate::rollup::sketch::{Distinct, Quantiles, TopK};

/// Group-by values of a series, in `groupBy` order (`None`: dimension absent).
pub type GroupKey = Vec<Option<String>>;

/// Everything known about one bucket of one group.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub count: u64,
    /// Aligned with `Plan::metrics`.
    pub metrics: Vec<Option<Stats>>,
    pub distinct: Vec<Option<Distinct>>,
    pub quantiles: Vec<Option<Quantiles>>,
    pub top_k: Vec<Option<TopK>>,
    /// False when a contributing rollup was partial (the bucket may still change).
    pub closed: bool,
}

fn merge_opt<T: Clone>(a: &mut Option<T>, b: &Option<T>, merge: impl Fn(&mut T, &T)) {
    match (a.as_mut(), b) {
        (_, None) => {}
        (None, Some(x)) => *a = Some(x.clone()),
        (Some(x), Some(y)) => merge(x, y),
    }
}

fn merge_vec<T: Clone>(a: &mut Vec<Option<T>>, b: &[Option<T>], merge: impl Fn(&mut T, &T) + Copy) {
    if a.len() < b.len() {
        a.resize(b.len(), None);
    }
    for (x, y) in a.iter_mut().zip(b) {
        merge_opt(x, y, merge);
    }
}

impl Cell {
    pub fn merge(&mut self, o: &Cell) {
        self.count += o.count;
        merge_vec(&mut self.metrics, &o.metrics, |x, y| {
            x.sum += y.sum;
            x.min = x.min.min(y.min);
            x.max = x.max.max(y.max);
            x.count += y.count;
        });
        merge_vec(&mut self.distinct, &o.distinct, |x, y| x.merge(y));
        merge_vec(&mut self.quantiles, &o.quantiles, |x, y| {
            let _ = x.merge(y);
        });
        merge_vec(&mut self.top_k, &o.top_k, |x, y| x.merge(y));
        self.closed &= o.closed;
    }

    /// Approximate bytes held, for the cache's memory bound.
    pub fn size(&self) -> usize {
        64 + self.metrics.len() * 40
            + self
                .distinct
                .iter()
                .flatten()
                .map(Distinct::heap_size)
                .sum::<usize>()
            + self
                .quantiles
                .iter()
                .flatten()
                .map(Quantiles::heap_size)
                .sum::<usize>()
            + self
                .top_k
                .iter()
                .flatten()
                .map(TopK::heap_size)
                .sum::<usize>()
    }
}

/// Cells by group, then by bucket start.
pub type Grid = BTreeMap<GroupKey, BTreeMap<i64, Cell>>;

fn number(v: Option<&Bson>) -> Option<f64> {
    match v? {
        Bson::Int32(i) => Some(*i as f64),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
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
        grid.entry(key)
            .or_default()
            .entry(t)
            .or_default()
            .merge_first(cell);
    }
    Ok(grid)
}

impl Cell {
    /// Merges into a cell that may be empty (then takes `o` as it is).
    fn merge_first(&mut self, o: Cell) {
        if self.count == 0
            && self.metrics.is_empty()
            && self.distinct.is_empty()
            && self.quantiles.is_empty()
            && self.top_k.is_empty()
        {
            *self = o;
        } else {
            self.merge(&o);
        }
    }
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
            distinct: plan
                .distinct
                .iter()
                .map(|k| {
                    binary(d, "distinct", k)
                        .map(Distinct::from_bytes)
                        .transpose()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            quantiles: plan
                .quantiles
                .iter()
                .map(|m| {
                    binary(d, "quantiles", m)
                        .map(Quantiles::from_bytes)
                        .transpose()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            top_k: plan
                .top_k
                .iter()
                .zip(&plan.top_k_sizes)
                .map(|(a, k)| {
                    binary(d, "topK", a)
                        .map(|b| TopK::from_bytes(b, *k))
                        .transpose()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            closed: d.get_bool("final").unwrap_or(false),
        };
        grid.entry(key)
            .or_default()
            .entry(t)
            .or_default()
            .merge_first(cell);
    }
    Ok(grid)
}

/// One line on a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Index of the measure in the query.
    pub measure: usize,
    /// Field name: the measure's alias or label, or the query alias expanded.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, Option<f64>)>,
}

/// Value of a non-top-K measure for one cell.
fn value(kind: &MeasureKind, plan: &Plan, cell: &Cell, bucket_ms: i64) -> Option<f64> {
    let metric = |m: &str| {
        plan.metrics
            .iter()
            .position(|x| x == m)
            .and_then(|i| cell.metrics.get(i).copied().flatten())
    };
    match kind {
        MeasureKind::Count => Some(cell.count as f64),
        MeasureKind::Rate => Some(cell.count as f64 / (bucket_ms as f64 / 1000.0)),
        MeasureKind::Sum { metric: m } => Some(metric(m).map_or(0.0, |s| s.sum)),
        MeasureKind::Avg { metric: m } => metric(m)
            .filter(|s| s.count > 0)
            .map(|s| s.sum / s.count as f64),
        MeasureKind::Min { metric: m } => metric(m).map(|s| s.min),
        MeasureKind::Max { metric: m } => metric(m).map(|s| s.max),
        MeasureKind::Distinct { key } => plan
            .distinct
            .iter()
            .position(|x| x == key)
            .and_then(|i| cell.distinct.get(i).cloned().flatten())
            .map(|d| d.estimate().round()),
        MeasureKind::Percentile {
            metric: m,
            percentile,
        } => plan
            .quantiles
            .iter()
            .position(|x| x == m)
            .and_then(|i| cell.quantiles.get(i).cloned().flatten())
            .and_then(|q| q.quantile(percentile / 100.0)),
        MeasureKind::Topk { .. } => None,
    }
}

/// What a bucket with no data shows, per measure.
fn empty_value(kind: &MeasureKind) -> Option<f64> {
    match kind {
        MeasureKind::Count
        | MeasureKind::Rate
        | MeasureKind::Sum { .. }
        | MeasureKind::Distinct { .. } => Some(0.0),
        _ => None,
    }
}

pub const OTHER: &str = "other";

/// Keeps the `limit` groups with the largest total of the ranking measure;
/// the rest are merged into one group labelled "other" (or dropped).
pub fn top_n(q: &BuilderQuery, plan: &Plan, grid: Grid) -> Grid {
    let Some(t) = q.top_n else { return grid };
    if grid.len() <= t.limit {
        return grid;
    }
    let kind = &q.measures[t.measure].kind;
    let span = plan.to_ms - plan.from_ms;
    let mut ranked: Vec<(f64, GroupKey)> = grid
        .iter()
        .map(|(k, cells)| {
            let mut total = Cell::default();
            cells.values().for_each(|c| total.merge(c));
            let v = match kind {
                MeasureKind::Topk { .. } => total.count as f64,
                other => value(other, plan, &total, span).unwrap_or(f64::NEG_INFINITY),
            };
            (v, k.clone())
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.cmp(&b.1))
    });
    let keep: Vec<GroupKey> = ranked
        .iter()
        .take(t.limit)
        .map(|(_, k)| k.clone())
        .collect();
    let mut out = Grid::new();
    let mut other: BTreeMap<i64, Cell> = BTreeMap::new();
    for (k, cells) in grid {
        if keep.contains(&k) {
            out.insert(k, cells);
        } else if t.other {
            for (ts, c) in cells {
                other.entry(ts).or_default().merge_first(c);
            }
        }
    }
    if t.other && !other.is_empty() {
        out.insert(
            vec![Some(OTHER.to_string()); plan.group_by.len().max(1)],
            other,
        );
    }
    out
}

/// Evaluates every measure of the query over the grid, bucket by bucket from
/// `from_ms` (the panel's start, aligned) to the plan's end.
pub fn series(q: &BuilderQuery, plan: &Plan, grid: &Grid, from_ms: i64) -> Vec<Series> {
    let buckets: Vec<i64> = plan
        .buckets()
        .into_iter()
        .filter(|t| plan.bucket_end(*t) > from_ms)
        .collect();
    let all_buckets = plan.buckets();
    let mut out = Vec::new();
    for (key, cells) in grid {
        let mut labels = BTreeMap::new();
        for (name, v) in plan.group_by.iter().zip(key) {
            if let Some(v) = v {
                labels.insert(name.clone(), v.clone());
            }
        }
        if plan.group_by.is_empty() && key.first().is_some_and(|k| k.as_deref() == Some(OTHER)) {
            labels.insert("group".into(), OTHER.into());
        }
        for (mi, m) in q.measures.iter().enumerate() {
            if let MeasureKind::Topk { attribute, k } = &m.kind {
                out.extend(top_k_series(
                    q, plan, mi, attribute, *k, cells, &labels, &buckets,
                ));
                continue;
            }
            let window_buckets = m.window.map(|w| {
                let w_ms = w.minutes as i64 * 60_000;
                plan.bucket_ms.map_or(1, |b| (w_ms / b).max(1)) as usize
            });
            let mut points = Vec::with_capacity(buckets.len());
            let mut previous: Option<f64> = None;
            for &t in &buckets {
                let len = plan.bucket_end(t) - t;
                let v = match window_buckets {
                    None => cells.get(&t).map(|c| value(&m.kind, plan, c, len)),
                    Some(n) => {
                        // The measure over the last n buckets ending with this one.
                        let idx = all_buckets.partition_point(|x| *x < t);
                        let first = all_buckets[idx.saturating_sub(n - 1)];
                        let mut merged: Option<Cell> = None;
                        for (_, c) in cells.range(first..=t) {
                            merged
                                .get_or_insert_with(Cell::default)
                                .merge_first(c.clone());
                        }
                        merged.map(|c| value(&m.kind, plan, &c, len * n as i64))
                    }
                };
                let v = match v {
                    Some(v) => v,
                    None => match q.fill {
                        Fill::Null => None,
                        Fill::Zero => empty_value(&m.kind).or(Some(0.0)),
                        Fill::Previous => previous,
                    },
                };
                if v.is_some() {
                    previous = v;
                }
                points.push((t, v));
            }
            out.push(Series {
                measure: mi,
                name: display_name(q, mi, &labels),
                labels: labels.clone(),
                points,
            });
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn top_k_series(
    q: &BuilderQuery,
    plan: &Plan,
    mi: usize,
    attribute: &str,
    k: usize,
    cells: &BTreeMap<i64, Cell>,
    labels: &BTreeMap<String, String>,
    buckets: &[i64],
) -> Vec<Series> {
    let Some(ai) = plan.top_k.iter().position(|a| a == attribute) else {
        return Vec::new();
    };
    let mut total: Option<TopK> = None;
    for c in cells.values() {
        merge_opt(&mut total, &c.top_k.get(ai).cloned().flatten(), |x, y| {
            x.merge(y)
        });
    }
    let Some(total) = total else {
        return Vec::new();
    };
    let mut top = total.top();
    top.truncate(k);
    top.into_iter()
        .map(|(value, _)| {
            let mut l = labels.clone();
            l.insert(attribute.to_string(), value.clone());
            let points = buckets
                .iter()
                .map(|t| {
                    let v = cells
                        .get(t)
                        .and_then(|c| c.top_k.get(ai).cloned().flatten())
                        .map(|s| s.estimate(&value) as f64);
                    (
                        *t,
                        v.or(if q.fill == Fill::Zero {
                            Some(0.0)
                        } else {
                            None
                        }),
                    )
                })
                .collect();
            Series {
                measure: mi,
                name: display_name(q, mi, &l),
                labels: l,
                points,
            }
        })
        .collect()
}

/// Top values over [from, to), for table format, each group followed by an
/// "other" row holding the events whose value is not among the top.
pub fn top_k_table(
    plan: &Plan,
    grid: &Grid,
    attribute: &str,
    k: usize,
    from_ms: i64,
) -> Vec<(GroupKey, String, u64)> {
    let Some(ai) = plan.top_k.iter().position(|a| a == attribute) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for (key, cells) in grid {
        let mut total: Option<TopK> = None;
        for c in cells.range(from_ms..plan.to_ms).map(|(_, c)| c) {
            merge_opt(&mut total, &c.top_k.get(ai).cloned().flatten(), |x, y| {
                x.merge(y)
            });
        }
        if let Some(t) = total {
            let top: Vec<(String, u64)> = t.top().into_iter().take(k).collect();
            let shown: u64 = top.iter().map(|r| r.1).sum();
            for (v, n) in top {
                rows.push((key.clone(), v, n));
            }
            if t.total() > shown {
                rows.push((key.clone(), OTHER.to_string(), t.total() - shown));
            }
        }
    }
    rows
}

/// Each series' measure over the whole range [from, to), per group: the cells
/// merged, so distinct counts and percentiles are of the range, not summed.
pub fn totals(
    q: &BuilderQuery,
    plan: &Plan,
    grid: &Grid,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(usize, BTreeMap<String, String>, Option<f64>)> {
    let mut out = Vec::new();
    for (key, cells) in grid {
        let mut total = Cell::default();
        for c in cells.range(from_ms..to_ms).map(|(_, c)| c) {
            total.merge_first(c.clone());
        }
        let labels: BTreeMap<String, String> = plan
            .group_by
            .iter()
            .zip(key)
            .filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v)))
            .collect();
        for (mi, m) in q.measures.iter().enumerate() {
            out.push((
                mi,
                labels.clone(),
                value(&m.kind, plan, &total, to_ms - from_ms),
            ));
        }
    }
    out
}

/// The series name: the query's alias template, else the measure's alias or label.
pub fn display_name(q: &BuilderQuery, measure: usize, labels: &BTreeMap<String, String>) -> String {
    let m = &q.measures[measure];
    let measure_name = m.alias.clone().unwrap_or_else(|| m.kind.label());
    let Some(template) = &q.alias else {
        return measure_name;
    };
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name = after[..close].trim();
        let v = match name {
            "measure" => measure_name.clone(),
            "eventType" => q.event_type.clone(),
            other => labels.get(other).cloned().unwrap_or_default(),
        };
        out.push_str(&v);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Moves a comparison run's points onto the panel's time axis.
pub fn shift(mut series: Vec<Series>, shift_ms: i64, label: &str) -> Vec<Series> {
    for s in &mut series {
        for p in &mut s.points {
            p.0 += shift_ms;
        }
        s.labels.insert("compare".into(), label.to_string());
        s.name = format!("{} ({label})", s.name);
    }
    series
}
