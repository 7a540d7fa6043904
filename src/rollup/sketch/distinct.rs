//! Distinct counts: Apache DataSketches HLL (lgK 12, HLL_4), in its stored bytes.
//!
//! In: dimension values, or stored sketch bytes. Out: estimates, merged
//! sketches and stored bytes.

use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};

use crate::rollup::error::SketchError;

/// log2 of the HLL register count: 4,096 registers.
pub const HLL_LG_K: u8 = 12;

/// Distinct values a [`Distinct`] keeps as a plain list before it becomes an
/// HLL: 1 KB of coupons, half of what the dense HLL_4 array takes.
pub(super) const DISTINCT_EXACT_MAX: usize = 256;

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

pub(super) fn new_hll() -> HllSketch {
    // lg_k 12 is within the crate's accepted range (4..=21), so this cannot fail.
    HllSketch::new(HLL_LG_K, HllType::Hll4).unwrap_or_else(|_| unreachable!("lg_k 12 is valid"))
}

/// Grows a list by a quarter of its length at a time: doubling would leave up
/// to half of a small bucket's list unused.
fn push_compact<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 4 + 4);
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
