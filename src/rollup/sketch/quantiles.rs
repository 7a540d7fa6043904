//! Quantiles with DDSketch's relative-error guarantee, in the bytes of the
//! `sketches-ddsketch` crate (Java `DDSketchWithExactSummaryStatistics`).
//!
//! In: metric values, or stored sketch bytes. Out: quantiles, merged sketches
//! and stored bytes.
//!
//! Why not the crate's sketch while a bucket is open: its store is a `u64`
//! per bin, allocated in chunks of 128 bins, and building it for every open
//! bucket cost most of a flush. Here a bucket keeps one counter per bin of
//! its occupied key range, a byte wide until a bin passes 255. The keys are
//! the crate's own (`floor(ln v / ln γ)`), the count, minimum, maximum and sum
//! are kept exactly as the crate keeps them, so the stored bytes are the
//! bytes the crate would write for the same values in the same order (a test
//! pins this). Past the crate's 2,048-bin limit, or once decoded from
//! storage, a sketch is the crate's, which collapses its lowest bins as before.

use sketches_ddsketch::{Config as DdConfig, DDSketch};

use crate::rollup::error::SketchError;

/// Bins the crate keeps before collapsing the lowest ones; stored sketches
/// are decoded with this limit, and live ones must merge with them.
const MAX_BINS: i64 = 2048;
/// Values at or below this count as zero (the crate's default floor).
const MIN_POSITIVE: f64 = 1e-9;

/// Quantile sketch with a relative-error guarantee.
#[derive(Clone)]
pub struct Quantiles {
    relative_error: f64,
    /// `ln γ`, γ = (1 + α) / (1 − α): a value's bin is `floor(ln v / ln γ)`.
    gamma_ln: f64,
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Bins(Box<Bins>),
    Crate(Box<DDSketch>),
}

/// What the crate's sketch keeps, with narrow counters.
#[derive(Clone, Default)]
struct Bins {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    zero: u64,
    positive: Counters,
    negative: Counters,
}

/// A count per key over `[offset, offset + len)`.
#[derive(Clone, Default)]
struct Counters {
    offset: i32,
    counts: Counts,
}

#[derive(Clone)]
enum Counts {
    Narrow(Vec<u8>),
    Wide(Vec<u32>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Narrow(Vec::new())
    }
}

impl Counts {
    fn len(&self) -> usize {
        match self {
            Counts::Narrow(c) => c.len(),
            Counts::Wide(c) => c.len(),
        }
    }

    fn get(&self, i: usize) -> u64 {
        match self {
            Counts::Narrow(c) => c[i] as u64,
            Counts::Wide(c) => c[i] as u64,
        }
    }

    fn heap_size(&self) -> usize {
        match self {
            Counts::Narrow(c) => c.capacity(),
            Counts::Wide(c) => c.capacity() * 4,
        }
    }
}

/// Keys a range grows by beyond what it needs, so a bucket's first values do
/// not each move its counters.
const SLACK: i64 = 8;

impl Counters {
    fn end(&self) -> i64 {
        self.offset as i64 + self.counts.len() as i64
    }

    /// The key range `[lo, hi)` that holds both this range and `[key_lo, key_hi)`.
    fn span_with(&self, key_lo: i64, key_hi: i64) -> (i64, i64) {
        if self.counts.len() == 0 {
            (key_lo, key_hi)
        } else {
            ((self.offset as i64).min(key_lo), self.end().max(key_hi))
        }
    }

    /// Whether `[lo, hi)` can be held without passing the crate's bin limit.
    fn can_hold(&self, lo: i64, hi: i64) -> bool {
        let (lo, hi) = self.span_with(lo, hi);
        hi - lo <= MAX_BINS
    }

    /// Adds `n` at `key`, growing the range (call [`Counters::can_hold`] first);
    /// false, with nothing changed, when the counter would pass `u32::MAX`.
    fn add(&mut self, key: i32, n: u64) -> bool {
        let index = self.index_for(key as i64);
        if let Counts::Narrow(c) = &mut self.counts {
            let sum = c[index] as u64 + n;
            if sum <= u8::MAX as u64 {
                c[index] = sum as u8;
                return true;
            }
            self.counts = Counts::Wide(c.iter().map(|&x| x as u32).collect());
        }
        let Counts::Wide(c) = &mut self.counts else {
            return false;
        };
        let sum = c[index] as u64 + n;
        if sum > u32::MAX as u64 {
            return false;
        }
        c[index] = sum as u32;
        true
    }

    /// The counter index of `key`, growing the range by up to [`SLACK`] more
    /// on the side that grew, within the bin limit and `i32`.
    fn index_for(&mut self, key: i64) -> usize {
        let (lo, hi) = (self.offset as i64, self.end());
        if self.counts.len() == 0 {
            let lo = (key - SLACK / 2).max(i32::MIN as i64);
            let hi = (key + 1 + SLACK / 2).min(i32::MAX as i64 + 1);
            self.offset = lo as i32;
            self.grow(0, (hi - lo) as usize);
        } else if key < lo {
            let new_lo = (key - SLACK)
                .max(hi - MAX_BINS)
                .max(i32::MIN as i64)
                .min(key);
            self.grow((lo - new_lo) as usize, 0);
            self.offset = new_lo as i32;
        } else if key >= hi {
            let new_hi = (key + 1 + SLACK)
                .min(lo + MAX_BINS)
                .min(i32::MAX as i64 + 1)
                .max(key + 1);
            self.grow(0, (new_hi - hi) as usize);
        }
        (key - self.offset as i64) as usize
    }

    /// Adds `front` zero counters before the current ones and `back` after.
    fn grow(&mut self, front: usize, back: usize) {
        fn grow<T: Copy + Default>(c: &mut Vec<T>, front: usize, back: usize) {
            // Exact sizes: an open bucket holds hundreds of these.
            c.reserve_exact(front + back);
            c.splice(0..0, std::iter::repeat_n(T::default(), front));
            c.resize(c.len() + back, T::default());
        }
        match &mut self.counts {
            Counts::Narrow(c) => grow(c, front, back),
            Counts::Wide(c) => grow(c, front, back),
        }
    }

    /// Adds every count of `other` (call [`Counters::can_hold`] with its range first).
    fn merge(&mut self, other: &Counters) -> bool {
        let occupied = |i: &usize| other.counts.get(*i) > 0;
        let Some(first) = (0..other.counts.len()).find(occupied) else {
            return true;
        };
        let last = (0..other.counts.len())
            .rev()
            .find(occupied)
            .unwrap_or(first);
        // Grown once to the other's occupied keys, narrow counters add as
        // bytes when none passes 255: merging minutes into hours per bin
        // (a range check each) was a tenth of a flush.
        let at = other.offset as i64 + first as i64;
        self.index_for(at);
        self.index_for(other.offset as i64 + last as i64);
        let from = (at - self.offset as i64) as usize;
        if let (Counts::Narrow(mine), Counts::Narrow(theirs)) = (&mut self.counts, &other.counts) {
            let mine = &mut mine[from..=from + (last - first)];
            let theirs = &theirs[first..=last];
            if mine
                .iter()
                .zip(theirs)
                .all(|(a, b)| a.checked_add(*b).is_some())
            {
                mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += *b);
                return true;
            }
        }
        (first..=last).all(|i| {
            let n = other.counts.get(i);
            n == 0 || self.add(other.offset + i as i32, n)
        })
    }

    fn occupied(&self) -> usize {
        match &self.counts {
            Counts::Narrow(c) => c.iter().filter(|n| **n > 0).count(),
            Counts::Wide(c) => c.iter().filter(|n| **n > 0).count(),
        }
    }

    /// Whether every key of `other` can be added without passing the bin limit.
    fn can_take(&self, other: &Counters) -> bool {
        other.counts.len() == 0 || self.can_hold(other.offset as i64, other.end())
    }
}

fn gamma(relative_error: f64) -> f64 {
    (1.0 + relative_error) / (1.0 - relative_error)
}

pub(super) fn new_ddsketch(relative_error: f64) -> DDSketch {
    // The crate decodes stored sketches with 2,048 bins and a 1e-9 floor;
    // building with the same lets decoded and live sketches merge. At 1 %
    // that covers values over ~18 orders of magnitude.
    DDSketch::new(DdConfig::new(relative_error, MAX_BINS as u32, MIN_POSITIVE))
}

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Quantiles(count={})", self.count())
    }
}

impl Quantiles {
    pub fn new(relative_error: f64) -> Quantiles {
        Quantiles {
            relative_error,
            gamma_ln: gamma(relative_error).ln(),
            mode: Mode::Bins(Box::new(Bins {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                ..Bins::default()
            })),
        }
    }

    pub fn insert(&mut self, value: f64) {
        let gamma_ln = self.gamma_ln;
        let added = match &mut self.mode {
            Mode::Crate(s) => {
                s.add(value);
                return;
            }
            Mode::Bins(b) => {
                let ok = if value > MIN_POSITIVE {
                    let key = key(value, gamma_ln);
                    b.positive.can_hold(key as i64, key as i64 + 1) && b.positive.add(key, 1)
                } else if value < -MIN_POSITIVE {
                    let key = key(-value, gamma_ln);
                    b.negative.can_hold(key as i64, key as i64 + 1) && b.negative.add(key, 1)
                } else {
                    b.zero += 1;
                    true
                };
                if ok {
                    b.count += 1;
                    b.min = b.min.min(value);
                    b.max = b.max.max(value);
                    b.sum += value;
                }
                ok
            }
        };
        if !added {
            let mut sketch = self.to_crate();
            sketch.add(value);
            self.mode = Mode::Crate(Box::new(sketch));
        }
    }

    /// The crate's sketch of these values (a copy when already one).
    fn to_crate(&self) -> DDSketch {
        match &self.mode {
            Mode::Crate(s) => (**s).clone(),
            // Our bytes are the crate's format, so decoding them gives the crate's sketch.
            Mode::Bins(_) => DDSketch::from_java_bytes(&self.to_bytes())
                .unwrap_or_else(|_| new_ddsketch(self.relative_error)),
        }
    }

    /// Whether this is the crate's sketch (decoded, or past the narrow store's limits).
    pub fn is_sketch(&self) -> bool {
        matches!(self.mode, Mode::Crate(_))
    }

    pub fn merge(&mut self, other: &Quantiles) -> Result<(), SketchError> {
        if let (Mode::Bins(mine), Mode::Bins(theirs)) = (&mut self.mode, &other.mode) {
            // No counter can pass u32::MAX while the total does not, so the
            // merge below cannot stop half way.
            if self.gamma_ln == other.gamma_ln
                && mine.count + theirs.count <= u32::MAX as u64
                && mine.positive.can_take(&theirs.positive)
                && mine.negative.can_take(&theirs.negative)
            {
                let merged =
                    mine.positive.merge(&theirs.positive) && mine.negative.merge(&theirs.negative);
                debug_assert!(merged, "counters bounded by the total");
                mine.zero += theirs.zero;
                mine.count += theirs.count;
                mine.min = mine.min.min(theirs.min);
                mine.max = mine.max.max(theirs.max);
                mine.sum += theirs.sum;
                return Ok(());
            }
        }
        let mut sketch = self.to_crate();
        let theirs = match &other.mode {
            Mode::Crate(s) => std::borrow::Cow::Borrowed(&**s),
            Mode::Bins(_) => std::borrow::Cow::Owned(other.to_crate()),
        };
        sketch
            .merge(&theirs)
            .map_err(|e| SketchError::AccuracyMismatch(e.to_string()))?;
        self.mode = Mode::Crate(Box::new(sketch));
        Ok(())
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match &self.mode {
            Mode::Bins(b) if b.count == 0 => None,
            Mode::Bins(_) => self.to_crate().quantile(q).ok().flatten(),
            Mode::Crate(s) => s.quantile(q).ok().flatten(),
        }
    }

    pub fn count(&self) -> usize {
        match &self.mode {
            Mode::Bins(b) => b.count as usize,
            Mode::Crate(s) => s.count(),
        }
    }

    /// The crate's Java-compatible bytes (see `sketches_ddsketch::encoding`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let b = match &self.mode {
            Mode::Crate(s) => return s.to_java_bytes(),
            Mode::Bins(b) => b,
        };
        let mut out = Vec::with_capacity(64 + 3 * b.positive.counts.len());
        if b.count != 0 {
            out.push(FLAG_COUNT);
            var_double(&mut out, b.count as f64);
            out.push(FLAG_MIN);
            out.extend_from_slice(&b.min.to_le_bytes());
            out.push(FLAG_MAX);
            out.extend_from_slice(&b.max.to_le_bytes());
        }
        if b.sum != 0.0 {
            out.push(FLAG_SUM);
            out.extend_from_slice(&b.sum.to_le_bytes());
        }
        out.push(FLAG_INDEX_MAPPING_LOG);
        out.extend_from_slice(&gamma(self.relative_error).to_le_bytes());
        out.extend_from_slice(&0.0f64.to_le_bytes());
        if b.zero != 0 {
            out.push(FLAG_ZERO_COUNT);
            var_double(&mut out, b.zero as f64);
        }
        for (counters, flag) in [
            (&b.positive, FLAG_POSITIVE_BINS),
            (&b.negative, FLAG_NEGATIVE_BINS),
        ] {
            let bins = counters.occupied();
            if bins == 0 {
                continue;
            }
            out.push(flag);
            unsigned_var_long(&mut out, bins as u64);
            match &counters.counts {
                Counts::Narrow(c) => write_narrow_bins(&mut out, c, counters.offset, bins),
                Counts::Wide(c) => write_bins(&mut out, c, counters.offset, bins),
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Quantiles, SketchError> {
        let sketch = DDSketch::from_java_bytes(bytes)
            .map_err(|e| SketchError::NotDdSketch(format!("{e:?}")))?;
        Ok(Quantiles {
            // Only sketches built by the same spec merge, so the accuracy the
            // spec gives is not needed here: the decoded sketch carries it.
            relative_error: 0.0,
            gamma_ln: f64::NAN,
            mode: Mode::Crate(Box::new(sketch)),
        })
    }

    pub fn heap_size(&self) -> usize {
        match &self.mode {
            Mode::Bins(b) => {
                std::mem::size_of::<Bins>()
                    + b.positive.counts.heap_size()
                    + b.negative.counts.heap_size()
            }
            Mode::Crate(s) => s.length() * 8 + 128,
        }
    }
}

/// The crate's key for a positive value (`Config::key`: `floor(ln v / ln γ)`),
/// so that the same value lands in the same bin. `ln` costs more than the
/// rest of an insert, so it is first approximated (error below 1e-9 of a key):
/// only a value within 1e-6 of a bin boundary needs the exact `ln`, computed
/// as the crate does.
fn key(value: f64, gamma_ln: f64) -> i32 {
    let x = fast_ln(value) / gamma_ln;
    let below = x.floor();
    if x - below > 1e-6 && below + 1.0 - x > 1e-6 {
        below as i32
    } else {
        (value.ln() / gamma_ln).floor() as i32
    }
}

/// Natural logarithm of a positive, finite, normal value to ~1e-12 absolute:
/// v = m·2^e with m in [√½, √2), ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.172.
/// Anything else (subnormal, infinite, NaN) takes `f64::ln`.
fn fast_ln(value: f64) -> f64 {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    if exponent == 0 || exponent == 0x7ff || value <= 0.0 {
        return value.ln();
    }
    let mut e = exponent - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // atanh series to s^13: the first term left out is below 0.172^15/15 ≈ 2e-13.
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 / 13.0)))));
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * series
}

// The Java format's flag bytes: (subflag << 2) | type, as the crate writes
// them; type 0 is a sketch feature.
const FLAG_COUNT: u8 = 0x28 << 2;
const FLAG_SUM: u8 = 0x21 << 2;
const FLAG_MIN: u8 = 0x22 << 2;
const FLAG_MAX: u8 = 0x23 << 2;
const FLAG_ZERO_COUNT: u8 = 1 << 2;
const FLAG_INDEX_MAPPING_LOG: u8 = 2;
/// Index deltas and counts (subflag 1) for the positive (1) and negative (3) stores.
const FLAG_POSITIVE_BINS: u8 = (1 << 2) | 1;
const FLAG_NEGATIVE_BINS: u8 = (1 << 2) | 3;

fn unsigned_var_long(out: &mut Vec<u8>, mut value: u64) {
    let length = ((63 - value.leading_zeros() as i32) / 7).clamp(0, 8);
    for _ in 0..length {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn var_double(out: &mut Vec<u8>, value: f64) {
    let (bytes, len) = var_double_bytes(value);
    out.extend_from_slice(&bytes[..len as usize]);
}

/// The non-empty bins as the crate writes them: each key as a signed varlong delta
/// from the previous one, then its count as a var-double. Most bins of an open bucket
/// are a few keys apart and hold a few values, so both usually take a byte or two,
/// written here without a call per byte.
fn write_bins<T: Copy + Into<u64>>(out: &mut Vec<u8>, counts: &[T], offset: i32, bins: usize) {
    out.reserve(bins * 4);
    let mut previous = 0i64;
    for (i, n) in counts.iter().enumerate() {
        write_bin(out, &mut previous, offset as i64 + i as i64, (*n).into());
    }
}

/// [`write_bins`] for byte-wide counters, read eight at a time: a bucket's bins are
/// sparse over its key range, and only the non-empty ones are visited.
fn write_narrow_bins(out: &mut Vec<u8>, counts: &[u8], offset: i32, bins: usize) {
    out.reserve(bins * 4);
    let mut previous = 0i64;
    let mut chunks = counts.chunks_exact(8);
    let mut at = offset as i64;
    for chunk in chunks.by_ref() {
        let mut word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        while word != 0 {
            let byte = word.trailing_zeros() / 8;
            write_bin(
                out,
                &mut previous,
                at + byte as i64,
                (word >> (byte * 8)) & 0xFF,
            );
            word &= !(0xFF << (byte * 8));
        }
        at += 8;
    }
    for (i, n) in chunks.remainder().iter().enumerate() {
        write_bin(out, &mut previous, at + i as i64, *n as u64);
    }
}

#[inline(always)]
fn write_bin(out: &mut Vec<u8>, previous: &mut i64, key: i64, n: u64) {
    if n == 0 {
        return;
    }
    let delta = key - *previous;
    let zigzag = ((delta >> 63) ^ (delta << 1)) as u64;
    if zigzag < 0x80 {
        out.push(zigzag as u8);
    } else {
        unsigned_var_long(out, zigzag);
    }
    match SMALL_COUNTS.get(n as usize) {
        Some(&(bytes, 1)) => out.push(bytes[0]),
        Some(&(bytes, 2)) => out.extend_from_slice(&[bytes[0], bytes[1]]),
        _ => var_double(out, n as f64),
    }
    *previous = key;
}

/// [`var_double`] of every count a byte-wide counter holds, worked out at compile
/// time: most bins of a bucket hold a few values, and the encoding loop cost more
/// than the rest of writing a bin.
static SMALL_COUNTS: [([u8; 9], u8); 256] = {
    let mut table = [([0u8; 9], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        table[n] = var_double_bytes(n as f64);
        n += 1;
    }
    table
};

/// The crate's `VarEncodingHelper.encodeVarDouble`: at most 9 bytes.
const fn var_double_bytes(value: f64) -> ([u8; 9], u8) {
    let mut out = [0u8; 9];
    let mut bits = (value + 1.0)
        .to_bits()
        .wrapping_sub(1.0f64.to_bits())
        .rotate_left(6);
    let mut i = 0;
    while i < 8 {
        let next = (bits >> 57) as u8;
        bits <<= 7;
        if bits == 0 {
            out[i] = next;
            return (out, i as u8 + 1);
        }
        out[i] = next | 0x80;
        i += 1;
    }
    out[8] = (bits >> 56) as u8;
    (out, 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The approximate path gives the crate's key for every value, at bin
    /// boundaries too, over the whole positive range.
    #[test]
    fn keys_are_the_crates() {
        for alpha in [0.01, 0.02, 0.005, 0.1] {
            let gamma_ln = gamma(alpha).ln();
            let exact = |v: f64| (v.ln() / gamma_ln).floor() as i32;
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for i in 0..200_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = match i % 4 {
                    // Any positive finite double.
                    0 => f64::from_bits(state % 0x7FF0_0000_0000_0000).max(f64::MIN_POSITIVE),
                    // Milliseconds and counts.
                    1 => (state % 100_000) as f64 + 1.0,
                    2 => (state % 1_000_000) as f64 / 1000.0 + 1e-9,
                    // Right at, just below and just above a bin boundary.
                    _ => {
                        let k = (state % 4000) as f64 - 2000.0;
                        let boundary = (k * gamma_ln).exp();
                        match state % 3 {
                            0 => boundary,
                            1 => f64::from_bits(boundary.to_bits() - 1),
                            _ => f64::from_bits(boundary.to_bits() + 1),
                        }
                    }
                };
                assert_eq!(key(v, gamma_ln), exact(v), "{v:e} at alpha {alpha}");
            }
        }
        assert!((fast_ln(1e-300) - 1e-300f64.ln()).abs() < 1e-9);
        assert_eq!(fast_ln(f64::INFINITY), f64::INFINITY);
    }
}
