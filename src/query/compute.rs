//! Measure maths, pure. In: a builder query, its plan and the grid of cells
//! per group and bucket. Out: series — each measure evaluated per bucket, with
//! top-N (the rest merged into "other"), moving windows, fill and names —
//! totals over a range, top-K lists, and a comparison's series moved onto the
//! panel's time axis.

use std::collections::BTreeMap;

use super::grid::{merge_opt, Cell, Grid, GroupKey};
use super::model::{BuilderQuery, Fill, MeasureKind};
use super::plan::Plan;
use crate::rollup::sketch::TopK;

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
            .and_then(|i| cell.distinct.get(i)?.as_ref())
            .map(|d| d.estimate().round()),
        MeasureKind::Percentile {
            metric: m,
            percentile,
        } => plan
            .quantiles
            .iter()
            .position(|x| x == m)
            .and_then(|i| cell.quantiles.get(i)?.as_ref())
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

/// A comparison's grid cut to the groups the panel shows: top-N ranks the
/// main period only, and the groups it merged into "other" there go into
/// "other" here too (or are dropped when the panel shows no "other").
pub fn keep_shown_groups(shown: &Grid, earlier: Grid, group_by_len: usize) -> Grid {
    let shows_other = shown
        .keys()
        .any(|k| k.iter().all(|v| v.as_deref() == Some(OTHER)));
    let mut out = Grid::new();
    for (k, cells) in earlier {
        if shown.contains_key(&k) {
            out.insert(k, cells);
        } else if shows_other {
            let other = out
                .entry(vec![Some(OTHER.to_string()); group_by_len.max(1)])
                .or_default();
            for (t, c) in cells {
                other.entry(t).or_default().merge(&c);
            }
        }
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
        merge_opt(&mut total, c.top_k.get(ai).unwrap_or(&None), |x, y| {
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
            l.insert(attribute.to_string(), value.to_string());
            let points = buckets
                .iter()
                .map(|t| {
                    let v = cells
                        .get(t)
                        .and_then(|c| c.top_k.get(ai)?.as_ref())
                        .map(|s| s.estimate(value) as f64);
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
            merge_opt(&mut total, c.top_k.get(ai).unwrap_or(&None), |x, y| {
                x.merge(y)
            });
        }
        if let Some(t) = total {
            let top: Vec<(String, u64)> = t
                .top()
                .into_iter()
                .take(k)
                .map(|(v, n)| (v.to_string(), n))
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::plan::plan;
    use crate::query::testing::{builder, ctx, NOW};

    fn cell(count: u64) -> Cell {
        Cell {
            count,
            closed: true,
            ..Cell::default()
        }
    }

    fn group(country: &str) -> GroupKey {
        vec![Some(country.to_string())]
    }

    /// One hour of minutes; FR has 3 events in the first and last minute, DE 1, US 2 in the last.
    fn setup(extra: serde_json::Value) -> (BuilderQuery, Plan, Grid) {
        let mut v = serde_json::json!({"eventType": "page_view", "groupBy": ["country"]});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let q = builder(v);
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let last = NOW - 60_000;
        let mut grid = Grid::new();
        grid.insert(
            group("FR"),
            [(p.panel_start(), cell(3)), (last, cell(3))].into(),
        );
        grid.insert(group("DE"), [(last, cell(1))].into());
        grid.insert(group("US"), [(last, cell(2))].into());
        (q, p, grid)
    }

    fn points(series: &[Series], country: &str) -> Vec<Option<f64>> {
        series
            .iter()
            .find(|s| s.labels.get("country").map(String::as_str) == Some(country))
            .map(|s| s.points.iter().map(|p| p.1).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_bucket_gets_a_point_and_fill_says_what_empty_ones_show() {
        let (q, p, grid) = setup(serde_json::json!({}));
        let s = series(&q, &p, &grid, p.panel_start());
        assert_eq!(s.len(), 3);
        let fr = points(&s, "FR");
        assert_eq!(fr.len(), 60);
        assert_eq!((fr[0], fr[1], fr[59]), (Some(3.0), None, Some(3.0)));
        let (q, p, grid) = setup(serde_json::json!({"fill": "zero"}));
        assert_eq!(
            points(&series(&q, &p, &grid, p.panel_start()), "DE")[0],
            Some(0.0)
        );
        let (q, p, grid) = setup(serde_json::json!({"fill": "previous"}));
        assert_eq!(
            points(&series(&q, &p, &grid, p.panel_start()), "FR")[30],
            Some(3.0)
        );
    }

    #[test]
    fn a_moving_window_merges_the_buckets_before() {
        let (q, p, grid) = setup(serde_json::json!({
            "measures": [{"type": "count", "window": {"minutes": 60}}]
        }));
        let s = series(&q, &p, &grid, p.panel_start());
        let fr = points(&s, "FR");
        assert_eq!((fr[0], fr[30], fr[59]), (Some(3.0), Some(3.0), Some(6.0)));
    }

    #[test]
    fn top_n_keeps_the_largest_and_merges_the_rest_into_other() {
        let (q, p, grid) =
            setup(serde_json::json!({"topN": {"limit": 1, "measure": 0, "other": true}}));
        let top = top_n(&q, &p, grid);
        let keys: Vec<&GroupKey> = top.keys().collect();
        assert_eq!(keys, [&group("FR"), &group(OTHER)]);
        assert_eq!(top[&group(OTHER)][&(NOW - 60_000)].count, 3);
        let (q, p, grid) =
            setup(serde_json::json!({"topN": {"limit": 1, "measure": 0, "other": false}}));
        assert_eq!(top_n(&q, &p, grid).len(), 1);
    }

    #[test]
    fn a_comparison_keeps_the_groups_shown() {
        let (_, _, earlier) = setup(serde_json::json!({}));
        let mut shown = Grid::new();
        shown.insert(group("US"), BTreeMap::new());
        let kept = keep_shown_groups(&shown, earlier.clone(), 1);
        assert_eq!(kept.keys().collect::<Vec<_>>(), [&group("US")]);
        shown.insert(group(OTHER), BTreeMap::new());
        let kept = keep_shown_groups(&shown, earlier, 1);
        assert_eq!(kept[&group(OTHER)][&(NOW - 60_000)].count, 4);
    }

    #[test]
    fn totals_are_of_the_whole_range() {
        let (q, p, grid) = setup(serde_json::json!({}));
        let t = totals(&q, &p, &grid, p.from_ms, p.to_ms);
        let fr = t
            .iter()
            .find(|x| x.1.get("country").map(String::as_str) == Some("FR"));
        assert_eq!(fr.map(|x| x.2), Some(Some(6.0)));
        let late = totals(&q, &p, &grid, NOW - 60_000, p.to_ms);
        assert_eq!(late.iter().map(|x| x.2.unwrap_or(0.0)).sum::<f64>(), 6.0);
    }

    #[test]
    fn a_shifted_series_moves_onto_the_panel_axis_with_its_label() {
        let (q, p, grid) = setup(serde_json::json!({"alias": "{{country}} {{measure}}"}));
        let s = series(&q, &p, &grid, p.panel_start());
        let first = s[0].points[0].0;
        let moved = shift(s, 86_400_000, "-1d");
        assert_eq!(moved[0].points[0].0, first + 86_400_000);
        assert_eq!(
            moved[0].labels.get("compare").map(String::as_str),
            Some("-1d")
        );
        assert_eq!(moved[0].name, "DE count (-1d)");
    }
}
