//! The grid: what decoding produces and the measure maths consume. Per group
//! (its group-by values), per bucket start, one [`Cell`] holding everything
//! the rollups of that bucket say — counts, metric statistics, sketches — and
//! how cells merge (counts and sums add, sketches merge), which is what makes
//! buckets coarser, windows wider and "other" groups.

use std::collections::BTreeMap;

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

pub(crate) fn merge_opt<T: Clone>(a: &mut Option<T>, b: &Option<T>, merge: impl Fn(&mut T, &T)) {
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

impl Cell {
    /// Merges into a cell that may be empty (then takes `o` as it is).
    pub fn merge_first(&mut self, o: Cell) {
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
