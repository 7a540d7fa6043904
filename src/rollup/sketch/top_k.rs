//! Most frequent values of an attribute: Apache DataSketches' frequent-items
//! sketch (reverse purge), in its stored bytes.
//!
//! In: attribute values, or stored sketch bytes. Out: the top K with their
//! estimated counts, merged sketches and stored bytes.
//!
//! Why not the crate's `FrequentItemsSketch<String>` while a bucket is open:
//! its map allocates a key, a count and a state per slot (a few KB for a map
//! of 64) and a `String` per item, and each update hashes the value with a
//! 128-bit hash. Here the items of a bucket sit back to back in one string,
//! with a 32-bit hash and a count each; the algorithm is the crate's (the map
//! grows 8 → max size, holds at most 3/4 of its size, and a full map subtracts
//! the median count from every item and drops those left at zero, adding it to
//! the error offset), so the counts, the error bound and the bytes' meaning
//! are the crate's. The bytes are the crate's format; items are written in
//! the order they came rather than in the crate's hash order, which its
//! decoder does not depend on (a test decodes them with the crate).

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};

use crate::event::short_eq;
use crate::rollup::error::SketchError;

/// The crate's smallest map (log2).
const LG_MIN_MAP_SIZE: u8 = 3;
/// The crate's sample for a purge's median.
const SAMPLE_SIZE: usize = 1024;
/// DataSketches' family id of frequent-items sketches.
const FAMILY_FREQUENCY: u8 = 10;

/// Most frequent values of an attribute. Nothing is allocated until the first value.
#[derive(Clone)]
pub struct TopK {
    k: usize,
    lg_max: u8,
    /// The map size the crate would have grown to: written in the bytes.
    lg_cur: u8,
    total: u64,
    /// Subtracted from every count so far by purges: the maximum error.
    offset: u64,
    items: Items,
}

/// The tracked values, in arrival order: `text[ends[i-1]..ends[i]]` has hash
/// `hashes[i]` and count `counts[i]`.
#[derive(Clone, Default)]
struct Items {
    hashes: Vec<u32>,
    counts: Vec<u64>,
    ends: Vec<u32>,
    text: String,
}

impl Items {
    fn len(&self) -> usize {
        self.hashes.len()
    }

    fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn find(&self, hash: u32, value: &str) -> Option<usize> {
        // A scan of a few dozen hashes, which the compiler vectorises, beats a
        // hash table at these sizes.
        let mut at = 0;
        while let Some(i) = self.hashes[at..].iter().position(|h| *h == hash) {
            if short_eq(self.value(at + i), value) {
                return Some(at + i);
            }
            at += i + 1;
        }
        None
    }

    fn push(&mut self, hash: u32, value: &str, count: u64) {
        grow_compact(&mut self.hashes);
        grow_compact(&mut self.counts);
        grow_compact(&mut self.ends);
        if self.text.len() + value.len() > self.text.capacity() {
            self.text
                .reserve_exact(value.len() + (self.text.len() / 4).max(16));
        }
        self.hashes.push(hash);
        self.counts.push(count);
        self.text.push_str(value);
        self.ends.push(self.text.len() as u32);
    }

    /// Keeps the items whose count stays above zero once `by` is subtracted.
    fn subtract(&mut self, by: u64) {
        let mut kept = Items::default();
        for i in 0..self.len() {
            if self.counts[i] > by {
                kept.push(self.hashes[i], self.value(i), self.counts[i] - by);
            }
        }
        *self = kept;
    }

    fn heap_size(&self) -> usize {
        self.hashes.capacity() * 4
            + self.counts.capacity() * 8
            + self.ends.capacity() * 4
            + self.text.capacity()
    }
}

/// Grows by a quarter at a time: doubling would leave up to half of a small
/// bucket's lists unused.
fn grow_compact<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 4 + 4);
    }
}

fn hash(value: &str) -> u32 {
    xxhash_rust::xxh3::xxh3_64(value.as_bytes()) as u32
}

/// Items a map of 2^lg holds before it grows or purges (the crate's 3/4 load).
fn capacity(lg: u8) -> usize {
    (1usize << lg) * 3 / 4
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopK(k={}, items={})", self.k, self.items.len())
    }
}

impl TopK {
    pub fn map_size(k: usize) -> usize {
        (4 * k).max(16).next_power_of_two()
    }

    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            lg_max: Self::map_size(k).trailing_zeros() as u8,
            lg_cur: LG_MIN_MAP_SIZE,
            total: 0,
            offset: 0,
            items: Items::default(),
        }
    }

    pub fn insert(&mut self, value: &str) {
        self.add(hash(value), value, 1);
    }

    fn add(&mut self, hash: u32, value: &str, count: u64) {
        self.total += count;
        match self.items.find(hash, value) {
            Some(i) => self.items.counts[i] += count,
            None => {
                self.items.push(hash, value, count);
                self.grow_or_purge();
            }
        }
    }

    fn grow_or_purge(&mut self) {
        if self.items.len() <= capacity(self.lg_cur) {
            return;
        }
        if self.lg_cur < self.lg_max {
            self.lg_cur += 1;
            return;
        }
        // The crate's purge: the median of a sample of the counts (the first
        // ones held) is subtracted from all.
        let limit = SAMPLE_SIZE.min(capacity(self.lg_max)).min(self.items.len());
        let mut sample = self.items.counts[..limit].to_vec();
        let mid = sample.len() / 2;
        let (_, median, _) = sample.select_nth_unstable(mid);
        let median = *median;
        self.items.subtract(median);
        self.offset += median;
    }

    pub fn merge(&mut self, other: &TopK) {
        if other.total == 0 {
            return;
        }
        let total = self.total + other.total;
        for i in 0..other.items.len() {
            self.add(
                other.items.hashes[i],
                other.items.value(i),
                other.items.counts[i],
            );
        }
        self.offset += other.offset;
        self.total = total;
    }

    /// The K most frequent values with their estimated counts, largest first
    /// (ties by value, so the order is stable).
    pub fn top(&self) -> Vec<(&str, u64)> {
        let items = &self.items;
        let mut rows: Vec<(u64, &str)> = (0..items.len())
            .map(|i| (items.counts[i], items.value(i)))
            .collect();
        let order = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        // Every flush writes the top K: select them first, then sort only those.
        if rows.len() > self.k {
            rows.select_nth_unstable_by(self.k, order);
            rows.truncate(self.k);
        }
        rows.sort_unstable_by(order);
        rows.into_iter()
            .map(|(count, value)| (value, count + self.offset))
            .collect()
    }

    /// Estimated count of one value.
    pub fn estimate(&self, value: &str) -> u64 {
        self.items
            .find(hash(value), value)
            .map_or(0, |i| self.items.counts[i] + self.offset)
    }

    /// Events that had the attribute.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The crate's bytes (`FrequentItemsSketch<String>::serialize`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 12 * self.items.len() + self.items.text.len());
        let empty = self.total == 0;
        out.push(if empty { 1 } else { 4 }); // preamble longs
        out.push(1); // serial version
        out.push(FAMILY_FREQUENCY);
        out.push(self.lg_max);
        out.push(if empty { LG_MIN_MAP_SIZE } else { self.lg_cur });
        out.push(if empty { 5 } else { 0 }); // empty flags
        out.extend_from_slice(&0u16.to_le_bytes());
        if empty {
            return out;
        }
        out.extend_from_slice(&(self.items.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.total.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        for count in &self.items.counts {
            out.extend_from_slice(&count.to_le_bytes());
        }
        for i in 0..self.items.len() {
            let value = self.items.value(i);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Reads stored bytes (checked by the crate's decoder).
    pub fn from_bytes(bytes: &[u8], k: usize) -> Result<TopK, SketchError> {
        let sketch = FrequentItemsSketch::<String>::deserialize(bytes)
            .map_err(|e| SketchError::NotFrequentItems(e.to_string()))?;
        let mut top = TopK::new(k);
        top.lg_max = sketch.lg_max_map_size();
        top.lg_cur = sketch.lg_cur_map_size();
        top.total = sketch.total_weight();
        top.offset = sketch.maximum_error();
        for row in sketch.frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0) {
            let value = row.item();
            top.items.push(hash(value), value, row.lower_bound());
        }
        Ok(top)
    }

    pub fn heap_size(&self) -> usize {
        self.items.heap_size()
    }
}
