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
use datasketches::hll::{HllSketch, HllType, HllUnion};
use sketches_ddsketch::{Config as DdConfig, DDSketch};

/// log2 of the HLL register count: 4,096 registers.
pub const HLL_LG_K: u8 = 12;

/// Distinct-count sketch.
#[derive(Clone, Debug)]
pub struct Distinct(HllSketch);

impl Default for Distinct {
    fn default() -> Self {
        Distinct(new_hll())
    }
}

fn new_hll() -> HllSketch {
    // lg_k 12 is within the crate's accepted range (4..=21), so this cannot fail.
    HllSketch::new(HLL_LG_K, HllType::Hll4).unwrap_or_else(|_| unreachable!("lg_k 12 is valid"))
}

impl Distinct {
    pub fn insert(&mut self, value: &str) {
        self.0.update(value);
    }

    pub fn merge(&mut self, other: &Distinct) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            *self = other.clone();
            return;
        }
        let mut union = match HllUnion::new(HLL_LG_K) {
            Ok(u) => u,
            Err(_) => return,
        };
        union.update(&self.0);
        union.update(&other.0);
        self.0 = union.to_sketch(HllType::Hll4);
    }

    pub fn estimate(&self) -> f64 {
        self.0.estimate()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Distinct, String> {
        HllSketch::deserialize(bytes)
            .map(Distinct)
            .map_err(|e| format!("not a HyperLogLog sketch: {e}"))
    }

    pub fn heap_size(&self) -> usize {
        self.0.estimated_size()
    }
}

/// Quantile sketch with a relative-error guarantee.
#[derive(Clone)]
pub struct Quantiles(DDSketch);

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Quantiles(count={})", self.0.count())
    }
}

impl Quantiles {
    pub fn new(relative_error: f64) -> Quantiles {
        // The crate decodes stored sketches with 2,048 bins and a 1e-9 floor;
        // building with the same lets decoded and live sketches merge. At 1 %
        // that covers values over ~18 orders of magnitude.
        Quantiles(DDSketch::new(DdConfig::new(relative_error, 2048, 1e-9)))
    }

    pub fn insert(&mut self, value: f64) {
        self.0.add(value);
    }

    pub fn merge(&mut self, other: &Quantiles) -> Result<(), String> {
        self.0
            .merge(&other.0)
            .map_err(|e| format!("quantile sketches with different accuracy cannot merge: {e}"))
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    pub fn count(&self) -> usize {
        self.0.count()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_java_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Quantiles, String> {
        DDSketch::from_java_bytes(bytes)
            .map(Quantiles)
            .map_err(|e| format!("not a DDSketch: {e:?}"))
    }

    pub fn heap_size(&self) -> usize {
        self.0.length() * 8 + 128
    }
}

/// Most frequent values of an attribute.
#[derive(Clone)]
pub struct TopK {
    sketch: FrequentItemsSketch<String>,
    k: usize,
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TopK(k={}, items={})",
            self.k,
            self.sketch.num_active_items()
        )
    }
}

impl TopK {
    pub fn map_size(k: usize) -> usize {
        (4 * k).max(16).next_power_of_two()
    }

    pub fn new(k: usize) -> TopK {
        let sketch = FrequentItemsSketch::new(Self::map_size(k))
            .unwrap_or_else(|_| unreachable!("power-of-two map sizes ≥ 16 are valid"));
        TopK { sketch, k }
    }

    pub fn insert(&mut self, value: &str) {
        self.sketch.update_ref(value);
    }

    pub fn merge(&mut self, other: &TopK) {
        self.sketch.merge(&other.sketch);
    }

    /// The K most frequent values with their estimated counts, largest first
    /// (ties by value, so the order is stable).
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self
            .sketch
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
        self.sketch.estimate(value)
    }

    /// Events that had the attribute.
    pub fn total(&self) -> u64 {
        self.sketch.total_weight()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.sketch.serialize()
    }

    pub fn from_bytes(bytes: &[u8], k: usize) -> Result<TopK, String> {
        FrequentItemsSketch::deserialize(bytes)
            .map(|sketch| TopK { sketch, k })
            .map_err(|e| format!("not a frequent-items sketch: {e}"))
    }

    pub fn heap_size(&self) -> usize {
        self.sketch.estimated_size()
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
