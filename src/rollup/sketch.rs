//! The mergeable sketches stored in rollups, with their stated errors.
//!
//! | sketch | crate | error | stored size |
//! |---|---|---|---|
//! | distinct count | Apache DataSketches HLL, lgK 12, HLL_4 | relative standard error 1.63 % (≈ 3.3 % at 95 %); exact below a few hundred values (list/set modes) | ≤ 2.1 KB; a few bytes per value while small |
//! | quantiles | DDSketch (`sketches-ddsketch`), α = `quantile_relative_error` | every quantile within α of the true value (relative), all ranks | ≈ 8 bytes per occupied bin; 1 % over 1 ms–1 h spans ≈ 800 bins |
//! | top-K | Apache DataSketches frequent items, map of 4·K (≥ 16) | counts exact when fewer distinct values than the map; otherwise under by at most ≈ 3.5·N / map size | ≤ map size entries |
//!
//! All three merge: sketches of minutes merge into the hour exactly as if the
//! hour's events had been sketched directly (HLL and DDSketch), or within the
//! same bound (frequent items).

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use sketches_ddsketch::{Config as DdConfig, DDSketch};

use super::error::SketchError;

/// log2 of the HLL register count: 4,096 registers.
pub const HLL_LG_K: u8 = 12;

/// Distinct values a [`Distinct`] keeps as a plain list before it becomes an
/// HLL: 1 KB of coupons, half of what the dense HLL_4 array takes.
const DISTINCT_EXACT_MAX: usize = 256;

/// Values a [`Quantiles`] keeps as a plain list before it becomes a DDSketch:
/// 2 KB, what a DDSketch store of two 128-bin chunks takes.
const QUANTILES_EXACT_MAX: usize = 256;

/// Distinct-count sketch.
///
/// A small bucket keeps the HLL coupons of its distinct values in a list (no
/// sketch allocated, 4 bytes a value); past [`DISTINCT_EXACT_MAX`] they are
/// fed into the HLL. The coupon is what the HLL itself would derive from the
/// value, and the stored bytes are always the HLL's, so a list and a sketch
/// of the same values estimate and store alike.
#[derive(Clone, Debug)]
pub enum Distinct {
    Exact(Vec<Coupon>),
    Sketch(Box<HllSketch>),
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct::Exact(Vec::new())
    }
}

fn new_hll() -> HllSketch {
    // lg_k 12 is within the crate's accepted range (4..=21), so this cannot fail.
    HllSketch::new(HLL_LG_K, HllType::Hll4).unwrap_or_else(|_| unreachable!("lg_k 12 is valid"))
}

/// Grows a list by half its length at a time: doubling would leave up to half
/// of a small bucket's list unused.
fn push_compact<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 2 + 4);
    }
    list.push(item);
}

/// `list.contains(&c)` without an early exit per element, so the compiler
/// compares eight coupons at a time: the list scan is the bulk of a small
/// bucket's distinct-count update.
fn contains(list: &[Coupon], c: Coupon) -> bool {
    list.chunks(8)
        .any(|chunk| chunk.iter().fold(false, |seen, x| seen | (*x == c)))
}

impl Distinct {
    pub fn insert(&mut self, value: &str) {
        self.insert_coupon(Coupon::from_value(value));
    }

    fn insert_coupon(&mut self, coupon: Coupon) {
        match self {
            Distinct::Exact(list) => {
                if contains(list, coupon) {
                    return;
                }
                if list.len() < DISTINCT_EXACT_MAX {
                    push_compact(list, coupon);
                } else {
                    let mut sketch = self.to_sketch();
                    sketch.update_with_coupon(coupon);
                    *self = Distinct::Sketch(Box::new(sketch));
                }
            }
            Distinct::Sketch(s) => s.update_with_coupon(coupon),
        }
    }

    /// The HLL of these values (a copy when already one).
    fn to_sketch(&self) -> HllSketch {
        match self {
            Distinct::Exact(list) => {
                let mut sketch = new_hll();
                list.iter().for_each(|c| sketch.update_with_coupon(*c));
                sketch
            }
            Distinct::Sketch(s) => (**s).clone(),
        }
    }

    pub fn is_sketch(&self) -> bool {
        matches!(self, Distinct::Sketch(_))
    }

    pub fn merge(&mut self, other: &Distinct) {
        match (&mut *self, other) {
            (_, Distinct::Exact(list)) => list.iter().for_each(|c| self.insert_coupon(*c)),
            (Distinct::Exact(mine), Distinct::Sketch(theirs)) => {
                let mut sketch = (**theirs).clone();
                mine.iter().for_each(|c| sketch.update_with_coupon(*c));
                *self = Distinct::Sketch(Box::new(sketch));
            }
            (Distinct::Sketch(mine), Distinct::Sketch(theirs)) => {
                if theirs.is_empty() {
                    return;
                }
                if mine.is_empty() {
                    *mine = theirs.clone();
                    return;
                }
                let Ok(mut union) = HllUnion::new(HLL_LG_K) else {
                    return;
                };
                union.update(mine);
                union.update(theirs);
                **mine = union.to_sketch(HllType::Hll4);
            }
        }
    }

    pub fn estimate(&self) -> f64 {
        match self {
            Distinct::Exact(list) if list.is_empty() => 0.0,
            Distinct::Exact(_) => self.to_sketch().estimate(),
            Distinct::Sketch(s) => s.estimate(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Distinct::Exact(_) => self.to_sketch().serialize(),
            Distinct::Sketch(s) => s.serialize(),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Distinct, SketchError> {
        HllSketch::deserialize(bytes)
            .map(|s| Distinct::Sketch(Box::new(s)))
            .map_err(|e| SketchError::NotHll(e.to_string()))
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Distinct::Exact(list) => list.capacity() * std::mem::size_of::<Coupon>(),
            Distinct::Sketch(s) => s.estimated_size(),
        }
    }
}

/// Quantile sketch with a relative-error guarantee.
///
/// A small bucket keeps its values in a list (8 bytes a value, no store
/// allocated); past [`QUANTILES_EXACT_MAX`] they are fed, in the order they
/// came, into the DDSketch. The stored bytes are always the DDSketch's, built
/// from the same values in the same order, so a list and a sketch answer and
/// store alike.
#[derive(Clone)]
pub struct Quantiles {
    relative_error: f64,
    mode: QuantilesMode,
}

#[derive(Clone)]
enum QuantilesMode {
    Exact(Vec<f64>),
    Sketch(Box<DDSketch>),
}

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Quantiles(count={})", self.count())
    }
}

fn new_ddsketch(relative_error: f64) -> DDSketch {
    // The crate decodes stored sketches with 2,048 bins and a 1e-9 floor;
    // building with the same lets decoded and live sketches merge. At 1 %
    // that covers values over ~18 orders of magnitude.
    DDSketch::new(DdConfig::new(relative_error, 2048, 1e-9))
}

impl Quantiles {
    pub fn new(relative_error: f64) -> Quantiles {
        Quantiles {
            relative_error,
            mode: QuantilesMode::Exact(Vec::new()),
        }
    }

    pub fn insert(&mut self, value: f64) {
        match &mut self.mode {
            QuantilesMode::Exact(values) if values.len() < QUANTILES_EXACT_MAX => {
                push_compact(values, value)
            }
            QuantilesMode::Exact(_) => {
                let mut sketch = self.to_sketch();
                sketch.add(value);
                self.mode = QuantilesMode::Sketch(Box::new(sketch));
            }
            QuantilesMode::Sketch(s) => s.add(value),
        }
    }

    /// The DDSketch of these values (a copy when already one).
    fn to_sketch(&self) -> DDSketch {
        match &self.mode {
            QuantilesMode::Exact(values) => {
                let mut sketch = new_ddsketch(self.relative_error);
                values.iter().for_each(|v| sketch.add(*v));
                sketch
            }
            QuantilesMode::Sketch(s) => (**s).clone(),
        }
    }

    pub fn is_sketch(&self) -> bool {
        matches!(self.mode, QuantilesMode::Sketch(_))
    }

    pub fn merge(&mut self, other: &Quantiles) -> Result<(), SketchError> {
        match (&mut self.mode, &other.mode) {
            (_, QuantilesMode::Exact(values)) => {
                values.iter().for_each(|v| self.insert(*v));
                Ok(())
            }
            (QuantilesMode::Exact(_), QuantilesMode::Sketch(theirs)) => {
                let mut sketch = self.to_sketch();
                merge_ddsketch(&mut sketch, theirs)?;
                self.mode = QuantilesMode::Sketch(Box::new(sketch));
                Ok(())
            }
            (QuantilesMode::Sketch(mine), QuantilesMode::Sketch(theirs)) => {
                merge_ddsketch(mine, theirs)
            }
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match &self.mode {
            QuantilesMode::Exact(values) if values.is_empty() => None,
            QuantilesMode::Exact(_) => self.to_sketch().quantile(q).ok().flatten(),
            QuantilesMode::Sketch(s) => s.quantile(q).ok().flatten(),
        }
    }

    pub fn count(&self) -> usize {
        match &self.mode {
            QuantilesMode::Exact(values) => values.len(),
            QuantilesMode::Sketch(s) => s.count(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_sketch().to_java_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Quantiles, SketchError> {
        let sketch = DDSketch::from_java_bytes(bytes)
            .map_err(|e| SketchError::NotDdSketch(format!("{e:?}")))?;
        Ok(Quantiles {
            // Only sketches built by the same spec merge, so the accuracy the
            // spec gives is not needed here: the decoded sketch carries it.
            relative_error: 0.0,
            mode: QuantilesMode::Sketch(Box::new(sketch)),
        })
    }

    pub fn heap_size(&self) -> usize {
        match &self.mode {
            QuantilesMode::Exact(values) => values.capacity() * 8,
            QuantilesMode::Sketch(s) => s.length() * 8 + 128,
        }
    }
}

fn merge_ddsketch(mine: &mut DDSketch, theirs: &DDSketch) -> Result<(), SketchError> {
    mine.merge(theirs)
        .map_err(|e| SketchError::AccuracyMismatch(e.to_string()))
}

/// Most frequent values of an attribute. The frequent-items map (4·K entries
/// of strings, a few KB) is made when the first value arrives, not with the
/// bucket: many buckets never see the attribute.
#[derive(Clone)]
pub struct TopK {
    sketch: Option<Box<FrequentItemsSketch<String>>>,
    k: usize,
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items = self.sketch.as_ref().map_or(0, |s| s.num_active_items());
        write!(f, "TopK(k={}, items={items})", self.k)
    }
}

impl TopK {
    pub fn map_size(k: usize) -> usize {
        (4 * k).max(16).next_power_of_two()
    }

    pub fn new(k: usize) -> TopK {
        TopK { sketch: None, k }
    }

    fn sketch_mut(&mut self) -> &mut FrequentItemsSketch<String> {
        let map_size = Self::map_size(self.k);
        self.sketch.get_or_insert_with(|| {
            Box::new(
                FrequentItemsSketch::new(map_size)
                    .unwrap_or_else(|_| unreachable!("power-of-two map sizes ≥ 16 are valid")),
            )
        })
    }

    pub fn insert(&mut self, value: &str) {
        self.sketch_mut().update_ref(value);
    }

    pub fn merge(&mut self, other: &TopK) {
        if let Some(theirs) = &other.sketch {
            self.sketch_mut().merge(theirs);
        }
    }

    /// The K most frequent values with their estimated counts, largest first
    /// (ties by value, so the order is stable).
    pub fn top(&self) -> Vec<(String, u64)> {
        let Some(sketch) = &self.sketch else {
            return Vec::new();
        };
        let mut rows: Vec<(String, u64)> = sketch
            .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
            .into_iter()
            .map(|r| (r.item().clone(), r.estimate()))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(self.k);
        rows
    }

    /// Estimated count of one value.
    pub fn estimate(&self, value: &str) -> u64 {
        self.sketch.as_ref().map_or(0, |s| s.estimate(value))
    }

    /// Events that had the attribute.
    pub fn total(&self) -> u64 {
        self.sketch.as_ref().map_or(0, |s| s.total_weight())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.sketch {
            Some(s) => s.serialize(),
            None => TopK::new(self.k).sketch_mut().serialize(),
        }
    }

    pub fn from_bytes(bytes: &[u8], k: usize) -> Result<TopK, SketchError> {
        FrequentItemsSketch::deserialize(bytes)
            .map(|sketch| TopK {
                sketch: Some(Box::new(sketch)),
                k,
            })
            .map_err(|e| SketchError::NotFrequentItems(e.to_string()))
    }

    pub fn heap_size(&self) -> usize {
        self.sketch.as_ref().map_or(0, |s| s.estimated_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_is_exact_when_small_and_merges() {
        let mut a = Distinct::default();
        let mut b = Distinct::default();
        for i in 0..50 {
            a.insert(&format!("u{i}"));
            b.insert(&format!("u{}", i + 25));
        }
        assert_eq!(a.estimate().round(), 50.0);
        a.merge(&b);
        assert_eq!(a.estimate().round(), 75.0);
        let back = Distinct::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back.estimate().round(), 75.0);
    }

    #[test]
    fn hll_error_within_stated_bound_at_scale() {
        let mut parts: Vec<Distinct> = (0..10).map(|_| Distinct::default()).collect();
        for i in 0..100_000 {
            parts[i % 10].insert(&format!("user-{i}"));
        }
        let mut all = Distinct::default();
        for p in &parts {
            all.merge(&Distinct::from_bytes(&p.to_bytes()).unwrap());
        }
        let err = (all.estimate() - 100_000.0).abs() / 100_000.0;
        assert!(err < 3.0 * 0.0163, "relative error {err}");
        assert!(
            all.to_bytes().len() <= 2200,
            "{} bytes",
            all.to_bytes().len()
        );
    }

    #[test]
    fn ddsketch_round_trips_and_merges() {
        let mut a = Quantiles::new(0.01);
        let mut b = Quantiles::new(0.01);
        for i in 1..=1000 {
            a.insert(i as f64);
            b.insert((i + 1000) as f64);
        }
        a.merge(&Quantiles::from_bytes(&b.to_bytes()).unwrap())
            .unwrap();
        let p50 = a.quantile(0.5).unwrap();
        assert!((p50 - 1000.0).abs() <= 0.01 * 1000.0 + 1.0, "{p50}");
        assert_eq!(a.count(), 2000);
    }

    /// Deterministic log-normal values (xorshift + Box–Muller), no RNG crate needed.
    fn log_normal(n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let z =
                    (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
                (mu + sigma * z).exp()
            })
            .collect()
    }

    #[test]
    fn quantiles_of_100k_log_normal_values_within_stated_error() {
        let values = log_normal(100_000, 7.0, 0.8); // page loads around 1.1 s, long tail
                                                    // Sketched in 60 per-minute pieces, stored, read back and merged, as an hour is.
        let mut hour = Quantiles::new(0.01);
        for chunk in values.chunks(values.len() / 60 + 1) {
            let mut minute = Quantiles::new(0.01);
            chunk.iter().for_each(|v| minute.insert(*v));
            hour.merge(&Quantiles::from_bytes(&minute.to_bytes()).unwrap())
                .unwrap();
        }
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.5, 0.95, 0.99] {
            // DDSketch's rank convention: the value at rank ⌊q·(n−1)⌋.
            let exact = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
            let estimate = hour.quantile(q).unwrap();
            let err = (estimate - exact).abs() / exact;
            assert!(
                err <= 0.01 + 1e-9,
                "p{}: exact {exact}, estimate {estimate}, error {err}",
                q * 100.0
            );
        }
    }

    /// Issue 15: a bucket that started as a list and was promoted answers and
    /// stores exactly as the crate's sketch fed the same values from the start,
    /// and both are within the stated error of the truth.
    #[test]
    fn promoted_lists_answer_like_sketches_from_the_start() {
        for n in [10, DISTINCT_EXACT_MAX, DISTINCT_EXACT_MAX + 1, 5_000] {
            let mut ours = Distinct::default();
            let mut reference = new_hll();
            for i in 0..n {
                let v = format!("user-{}", i % (n - n / 10).max(1));
                ours.insert(&v);
                reference.update(v.as_str());
            }
            assert_eq!(
                ours.is_sketch(),
                n > DISTINCT_EXACT_MAX + DISTINCT_EXACT_MAX / 9
            );
            assert_eq!(ours.estimate(), reference.estimate(), "{n} values");
            assert_eq!(ours.to_bytes(), reference.serialize(), "{n} values");
            let truth = (n - n / 10).max(1) as f64;
            assert!((ours.estimate() - truth).abs() <= 3.0 * 0.0163 * truth + 1.0);
            // Merging a list into a promoted sketch and the other way round.
            let mut small = Distinct::default();
            small.insert("someone-else");
            let mut a = ours.clone();
            a.merge(&small);
            let mut b = small.clone();
            b.merge(&ours);
            assert_eq!(a.estimate(), b.estimate());
        }
        let values = log_normal(QUANTILES_EXACT_MAX * 4, 7.0, 0.8);
        for n in [
            3,
            QUANTILES_EXACT_MAX,
            QUANTILES_EXACT_MAX + 1,
            values.len(),
        ] {
            let mut ours = Quantiles::new(0.01);
            let mut reference = new_ddsketch(0.01);
            for v in &values[..n] {
                ours.insert(*v);
                reference.add(*v);
            }
            assert_eq!(ours.is_sketch(), n > QUANTILES_EXACT_MAX);
            assert_eq!(ours.to_bytes(), reference.to_java_bytes(), "{n} values");
            let mut sorted = values[..n].to_vec();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                let got = ours.quantile(q).unwrap();
                assert_eq!(Some(got), reference.quantile(q).unwrap(), "q {q} of {n}");
                let exact = sorted[(q * (n - 1) as f64).floor() as usize];
                assert!((got - exact).abs() <= 0.01 * exact + 1e-9, "q {q} of {n}");
            }
        }
    }

    #[test]
    fn small_buckets_allocate_no_sketch() {
        let mut d = Distinct::default();
        let mut q = Quantiles::new(0.01);
        let t = TopK::new(10);
        for i in 0..100 {
            d.insert(&format!("u{i}"));
            q.insert(300.0 + i as f64);
        }
        assert!(!d.is_sketch() && !q.is_sketch());
        assert!(d.heap_size() <= 100 * 4 * 3 / 2 + 16, "{}", d.heap_size());
        assert!(q.heap_size() <= 100 * 8 * 3 / 2 + 32, "{}", q.heap_size());
        assert_eq!((t.heap_size(), t.total()), (0, 0));
        assert!(t.top().is_empty());
        assert_eq!(TopK::from_bytes(&t.to_bytes(), 10).unwrap().total(), 0);
    }

    #[test]
    fn topk_orders_and_merges() {
        let mut a = TopK::new(2);
        let mut b = TopK::new(2);
        for (v, n) in [("/a", 5), ("/b", 3), ("/c", 1)] {
            for _ in 0..n {
                a.insert(v);
            }
        }
        for _ in 0..4 {
            b.insert("/c");
        }
        a.merge(&TopK::from_bytes(&b.to_bytes(), 2).unwrap());
        assert_eq!(a.top(), vec![("/a".to_string(), 5), ("/c".to_string(), 5)]);
        assert_eq!(a.total(), 13);
    }
}
