//! Distinct counts: Apache DataSketches HLL (lgK 12, HLL_4), in its stored bytes.
//!
//! In: dimension values, or stored sketch bytes. Out: estimates, merged
//! sketches and stored bytes.
//!
//! A small bucket keeps the HLL coupons of its distinct values (the 32 bits
//! the HLL derives from a value's 128-bit MurmurHash3: a 26-bit slot and a
//! register value) in a sorted list: 4 bytes a value, no sketch allocated, a
//! binary search per value and a linear merge per bucket merge. Its stored
//! bytes are the HLL's own list or set mode, which hold exactly these
//! coupons, so the crate reads them as the sketch it would have built. Past
//! [`DISTINCT_EXACT_MAX`] values the bucket becomes the crate's HLL.
//!
//! A bucket that others are merged into (an hour, day or month window, a
//! query's total) keeps the crate's union once past the list, so that each
//! further merge folds into it in place: a fresh union per merge copied and
//! re-packed all 4,096 registers twice, which was most of a flush.
//! Stored, it is packed into HLL_4 as before, by [`hll4_image`]: the crate's
//! own packing goes through its HLL_4 update, ~160k instructions a document.

use datasketches::hll::{HllSketch, HllType, HllUnion};

use crate::rollup::error::SketchError;

/// log2 of the HLL register count: 4,096 registers.
pub const HLL_LG_K: u8 = 12;

/// Distinct values a [`Distinct`] keeps as coupons before it becomes an HLL:
/// 1 KB, half of what the dense HLL_4 array takes, and below the 384 coupons
/// past which the crate leaves its set mode at lgK 12.
pub(super) const DISTINCT_EXACT_MAX: usize = 256;

/// The HLL image's flag for compact storage (no empty slots written).
const COMPACT: u8 = 8;

/// Distinct-count sketch.
#[derive(Clone, Debug)]
pub enum Distinct {
    /// Sorted, distinct coupons.
    Exact(Vec<u32>),
    /// Past the list, filled by values (a busy minute) or read from storage.
    Sketch(Box<HllSketch>),
    /// Past the list, filled by merges: the crate's union (HLL_8 registers).
    Union(Box<HllUnion>),
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

/// The HLL coupon of a value, as `datasketches::hll::Coupon::from_value(&str)`
/// makes it: MurmurHash3 x64/128 with DataSketches' seed over the value's
/// bytes and the `0xff` that Rust's `Hash for str` appends; the low 26 bits of
/// the first half are the slot, the leading zeros of the second (capped at 62)
/// plus one the register value.
pub(super) fn coupon(value: &str) -> u32 {
    let (lo, hi) = murmur3_x64_128_str(value.as_bytes(), 9001);
    let register = hi.leading_zeros().min(62) + 1;
    (register << 26) | (lo as u32 & ((1 << 26) - 1))
}

fn murmur3_x64_128_str(value: &[u8], seed: u64) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let fmix = |mut k: u64| {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    };
    let mix1 = |k1: u64| k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix2 = |k2: u64| k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let words = |b: &[u8]| {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..16]);
        (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
    };
    let (mut h1, mut h2) = (seed, seed);
    let mut block = |k1: u64, k2: u64| {
        h1 ^= mix1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    };
    let whole = value.len() / 16 * 16;
    for chunk in value[..whole].chunks_exact(16) {
        let (k1, k2) = words(chunk);
        block(k1, k2);
    }
    // The rest of the value and the 0xff terminator, zero-padded: one last
    // block when they fill it, else the tail (zero bytes add nothing to it).
    let rest = &value[whole..];
    let mut last = [0u8; 16];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0xff;
    let (k1, k2) = words(&last);
    if rest.len() + 1 == 16 {
        block(k1, k2);
    } else {
        h2 ^= mix2(k2);
        h1 ^= mix1(k1);
    }
    let total = (value.len() + 1) as u64;
    h1 ^= total;
    h2 ^= total;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// The crate's compact list-mode (fewer than 8 coupons) or set-mode image of
/// these coupons (`datasketches::hll` serialization, HLL_4 target).
fn exact_bytes(coupons: &[u32]) -> Vec<u8> {
    const SERIAL_VERSION: u8 = 1;
    const FAMILY_HLL: u8 = 7;
    const EMPTY: u8 = 4;
    const MODE_LIST: u8 = 0;
    const MODE_SET: u8 = 1;
    let n = coupons.len();
    let mut out = Vec::with_capacity(12 + 4 * n);
    if n < 8 {
        out.extend_from_slice(&[2, SERIAL_VERSION, FAMILY_HLL, HLL_LG_K, 3]);
        out.push(if n == 0 { COMPACT | EMPTY } else { COMPACT });
        out.push(n as u8);
        out.push(MODE_LIST);
    } else {
        // The crate's set starts at 32 slots and doubles past 3/4 full.
        let mut lg = 5u8;
        while 4 * n > 3 << lg {
            lg += 1;
        }
        out.extend_from_slice(&[3, SERIAL_VERSION, FAMILY_HLL, HLL_LG_K, lg, COMPACT, 0]);
        out.push(MODE_SET);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for c in coupons {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out
}

/// The crate's sketch of at most [`DISTINCT_EXACT_MAX`] coupons (what an
/// exact list holds): their list/set image read back.
fn sketch_of(coupons: &[u32]) -> HllSketch {
    // The image is ours and well formed; an empty sketch would only be a
    // wrong estimate, never a panic.
    HllSketch::deserialize(&exact_bytes(coupons)).unwrap_or_else(|_| new_hll())
}

fn new_union() -> HllUnion {
    // As in `new_hll`: lg_k 12 is within the crate's range.
    HllUnion::new(HLL_LG_K).unwrap_or_else(|_| unreachable!("lg_k 12 is valid"))
}

/// Adds coupons to a union through their list/set image, in pieces the set
/// mode holds: the crate takes coupons in no other way.
fn fold_coupons(union: &mut HllUnion, coupons: &[u32]) {
    for piece in coupons.chunks(DISTINCT_EXACT_MAX) {
        if let Ok(s) = HllSketch::deserialize(&exact_bytes(piece)) {
            union.update(&s);
        }
    }
}

/// The crate's HLL_4 image of the registers in its HLL_8 image, or `None`
/// when `hll8` is not a dense lgK 12 HLL_8 image (a union still holding a
/// list or set, which the crate packs cheaply itself).
///
/// The crate makes its HLL_4 from HLL_8 register by register through
/// `Array4::update`, which ends in a canonical state: `cur_min` is the
/// smallest register, a nibble holds `register − cur_min`, and a register 15
/// or more above `cur_min` is a nibble of 15 with an aux entry (a coupon of
/// slot and value). The estimator's fields (HIP sum, kxq0, kxq1, the
/// out-of-order flag) are copied, as the crate's conversion does. A test
/// holds the result to the crate's bytes.
fn hll4_image(hll8: &[u8]) -> Option<Vec<u8>> {
    const PREAMBLE: usize = 40;
    const OUT_OF_ORDER: u8 = 16;
    // Mode byte: current mode HLL (2), target type in bits 2..4 (HLL_4 0, HLL_8 2).
    const HLL_AS_HLL8: u8 = 2 | (2 << 2);
    const HLL_AS_HLL4: u8 = 2;
    const AUX_TOKEN: u8 = 15;
    let registers = hll8.get(PREAMBLE..)?;
    if registers.len() != 1 << HLL_LG_K || hll8[3] != HLL_LG_K || hll8[7] != HLL_AS_HLL8 {
        return None;
    }
    let cur_min = registers.iter().copied().min()?;
    let max = registers.iter().copied().max()?;
    let at_cur_min: u32 = registers.iter().map(|r| (*r == cur_min) as u32).sum();
    let mut out = Vec::with_capacity(PREAMBLE + registers.len() / 2 + 64);
    out.extend_from_slice(&hll8[..4]); // preamble ints, serial version, family, lgK
    out.push(0); // lgArr: unused with compact aux entries
    out.push(COMPACT | (hll8[5] & OUT_OF_ORDER));
    out.push(cur_min);
    out.push(HLL_AS_HLL4);
    out.extend_from_slice(&hll8[8..32]); // HIP sum, kxq0, kxq1
    out.extend_from_slice(&at_cur_min.to_le_bytes());
    let aux_count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    if max - cur_min < AUX_TOKEN {
        // The common case, no aux entries: eight registers at a time. Each
        // byte is at least cur_min, so the subtraction borrows across none;
        // then every byte below 16 is paired with the next one's high nibble,
        // and the even bytes are gathered.
        let less = u64::from(cur_min) * 0x0101_0101_0101_0101;
        for eight in registers.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(eight);
            let x = u64::from_le_bytes(word) - less;
            let pairs = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
            let halves = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
            let packed = (halves | (halves >> 16)) as u32;
            out.extend_from_slice(&packed.to_le_bytes());
        }
        return Some(out);
    }
    let mut aux = Vec::new();
    let mut nibble = |slot: usize, register: u8| {
        let above = register - cur_min;
        if above < AUX_TOKEN {
            above
        } else {
            aux.push(((register as u32) << 26) | slot as u32);
            AUX_TOKEN
        }
    };
    for (pair, r) in registers.chunks_exact(2).enumerate() {
        let low = nibble(2 * pair, r[0]);
        let high = nibble(2 * pair + 1, r[1]);
        out.push(low | (high << 4));
    }
    out[aux_count_at..aux_count_at + 4].copy_from_slice(&(aux.len() as u32).to_le_bytes());
    for coupon in aux {
        out.extend_from_slice(&coupon.to_le_bytes());
    }
    Some(out)
}

/// The sorted union of two sorted coupon lists.
fn merge_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Distinct {
    pub fn insert(&mut self, value: &str) {
        match self {
            Distinct::Exact(list) => {
                let c = coupon(value);
                let Err(at) = list.binary_search(&c) else {
                    return;
                };
                if list.len() < DISTINCT_EXACT_MAX {
                    // A quarter more at a time: doubling would leave up to half
                    // of a small bucket's list unused.
                    if list.len() == list.capacity() {
                        list.reserve_exact(list.len() / 4 + 4);
                    }
                    list.insert(at, c);
                } else {
                    let mut sketch = sketch_of(list);
                    sketch.update(value);
                    *self = Distinct::Sketch(Box::new(sketch));
                }
            }
            Distinct::Sketch(s) => s.update(value),
            Distinct::Union(u) => u.update_value(value),
        }
    }

    pub fn is_sketch(&self) -> bool {
        !matches!(self, Distinct::Exact(_))
    }

    pub fn merge(&mut self, other: &Distinct) {
        if other.is_empty() {
            return;
        }
        match (&*self, other) {
            (Distinct::Exact(mine), Distinct::Exact(theirs)) => {
                let all = merge_sorted(mine, theirs);
                if all.len() <= DISTINCT_EXACT_MAX {
                    *self = Distinct::Exact(all);
                    return;
                }
            }
            // Nothing to merge with: a copy keeps the compact form.
            _ if self.is_empty() => {
                *self = other.clone();
                return;
            }
            _ => {}
        }
        let mut union = match std::mem::take(self) {
            Distinct::Union(u) => u,
            Distinct::Exact(list) => {
                let mut u = Box::new(new_union());
                fold_coupons(&mut u, &list);
                u
            }
            Distinct::Sketch(s) => {
                let mut u = Box::new(new_union());
                u.update(&s);
                u
            }
        };
        match other {
            Distinct::Exact(theirs) => fold_coupons(&mut union, theirs),
            Distinct::Sketch(theirs) => union.update(theirs),
            Distinct::Union(theirs) => union.update(&theirs.to_sketch(HllType::Hll8)),
        }
        *self = Distinct::Union(union);
    }

    fn is_empty(&self) -> bool {
        match self {
            Distinct::Exact(list) => list.is_empty(),
            Distinct::Sketch(s) => s.is_empty(),
            Distinct::Union(u) => u.is_empty(),
        }
    }

    pub fn estimate(&self) -> f64 {
        match self {
            Distinct::Exact(list) if list.is_empty() => 0.0,
            Distinct::Exact(list) => sketch_of(list).estimate(),
            Distinct::Sketch(s) => s.estimate(),
            Distinct::Union(u) => u.estimate(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Distinct::Exact(list) => exact_bytes(list),
            Distinct::Sketch(s) => s.serialize(),
            Distinct::Union(u) => {
                let hll8 = u.to_sketch(HllType::Hll8).serialize();
                hll4_image(&hll8).unwrap_or_else(|| u.to_sketch(HllType::Hll4).serialize())
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Distinct, SketchError> {
        HllSketch::deserialize(bytes)
            .map(|s| Distinct::Sketch(Box::new(s)))
            .map_err(|e| SketchError::NotHll(e.to_string()))
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Distinct::Exact(list) => list.capacity() * 4,
            Distinct::Sketch(s) => s.estimated_size(),
            Distinct::Union(u) => u.estimated_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The aux entries are a set: the crate writes them in its map's order.
    fn split(image: &[u8]) -> (&[u8], Vec<u32>) {
        let (head, aux) = image.split_at(40 + (1 << (HLL_LG_K - 1)));
        let mut aux: Vec<u32> = aux
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        aux.sort_unstable();
        (head, aux)
    }

    #[test]
    fn our_hll4_packing_is_the_crates() {
        // Sparse (cur_min 0), dense (cur_min above 0), and dense enough for
        // registers 15 above cur_min (aux entries); in order and out of order.
        let mut aux_seen = 0;
        for (values, parts) in [(600, 1), (5_000, 3), (60_000, 1), (2_000_000, 4)] {
            let mut union = HllUnion::new(HLL_LG_K).unwrap();
            for p in 0..parts {
                let mut part = new_hll();
                (p..values)
                    .step_by(parts)
                    .for_each(|i| part.update(format!("v{i}")));
                union.update(&part);
            }
            let ours = hll4_image(&union.to_sketch(HllType::Hll8).serialize()).unwrap();
            let theirs = union.to_sketch(HllType::Hll4).serialize();
            assert_eq!(split(&ours), split(&theirs), "{values} values in {parts}");
            aux_seen += split(&ours).1.len();
            let read = HllSketch::deserialize(&ours).unwrap();
            assert_eq!(read.serialize(), theirs, "{values} values in {parts}");
        }
        assert!(aux_seen > 0, "no case reached the aux entries");
    }

    #[test]
    fn lists_and_sets_are_left_to_the_crate() {
        let mut union = HllUnion::new(HLL_LG_K).unwrap();
        (0..300).for_each(|i| union.update_value(format!("v{i}")));
        assert!(hll4_image(&union.to_sketch(HllType::Hll8).serialize()).is_none());
    }
}
