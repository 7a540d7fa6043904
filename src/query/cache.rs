//! Closed buckets are immutable: once every rollup in a bucket is final and
//! the bucket is older than the horizon, it cannot change. This cache keeps
//! their merged cells per (data source, query shape), bounded in bytes, so a
//! refresh reads only the open tail from MongoDB.
//!
//! In: a fresh grid and the closed range [from, until) of it ([`BucketCache::put`]).
//! Out: the cached cells from a panel's start on and where they end
//! ([`BucketCache::get`]); the caller reads the rest. A refresh after a hit
//! only extends its entry with the buckets closed since, so the cells are
//! copied once per hit, not twice.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::grid::{Cell, Grid};

struct Entry {
    grid: Grid,
    /// Cached buckets cover [from, until): every bucket there is closed.
    from: i64,
    until: i64,
    bytes: usize,
    last_used: u64,
    created_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    /// Queries that found their closed buckets cached and read only the tail.
    pub tail_reads: u64,
    /// Queries read in full.
    pub full_reads: u64,
    pub buckets_served: u64,
    pub evictions: u64,
}

pub struct BucketCache {
    state: Mutex<State>,
}

struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
    stats: CacheStats,
    ttl_ms: i64,
}

impl State {
    /// Evicts the least recently used entries until within budget.
    fn evict(&mut self) {
        while self.entries.values().map(|e| e.bytes).sum::<usize>() > self.stats.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evictions += 1;
        }
    }
}

/// What the cache can serve for a query: cells before `until`, to merge with a read of the rest.
pub struct Hit {
    pub grid: Grid,
    pub until: i64,
    pub buckets: u64,
    /// When the oldest cells of the entry were read from MongoDB.
    pub created_ms: i64,
}

impl BucketCache {
    pub fn new(max_bytes: usize, ttl_ms: i64) -> Self {
        BucketCache {
            state: Mutex::new(State {
                entries: HashMap::new(),
                clock: 0,
                stats: CacheStats {
                    max_bytes,
                    ..CacheStats::default()
                },
                ttl_ms,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            entries: s.entries.len(),
            bytes: s.entries.values().map(|e| e.bytes).sum(),
            ..s.stats
        }
    }

    /// Cached cells for [from, …) when the entry covers `from`.
    pub fn get(&self, key: &str, from: i64, now_ms: i64) -> Option<Hit> {
        let mut s = self.lock();
        s.clock += 1;
        let clock = s.clock;
        let ttl = s.ttl_ms;
        let entry = s.entries.get_mut(key)?;
        if entry.from > from || entry.until <= from || now_ms - entry.created_ms > ttl {
            return None;
        }
        entry.last_used = clock;
        let mut grid = Grid::new();
        let mut buckets = 0;
        for (k, cells) in &entry.grid {
            let kept: std::collections::BTreeMap<i64, Cell> = cells
                .range(from..entry.until)
                .map(|(t, c)| (*t, c.clone()))
                .collect();
            buckets += kept.len() as u64;
            if !kept.is_empty() {
                grid.insert(k.clone(), kept);
            }
        }
        let until = entry.until;
        Some(Hit {
            grid,
            until,
            buckets,
            created_ms: entry.created_ms,
        })
    }

    pub fn record_read(&self, tail_only: bool, buckets_served: u64) {
        let mut s = self.lock();
        if tail_only {
            s.stats.tail_reads += 1;
        } else {
            s.stats.full_reads += 1;
        }
        s.stats.buckets_served += buckets_served;
    }

    /// Keeps the closed cells of [from, until) of a fresh result.
    pub fn put(&self, key: String, grid: &Grid, from: i64, until: i64, now_ms: i64) {
        if until <= from {
            return;
        }
        if self.extend(&key, grid, from, until, now_ms) {
            return;
        }
        let mut kept = Grid::new();
        let mut bytes = key.len() + 64;
        for (k, cells) in grid {
            let closed: std::collections::BTreeMap<i64, Cell> = cells
                .range(from..until)
                .map(|(t, c)| (*t, c.clone()))
                .collect();
            bytes += closed.values().map(Cell::size).sum::<usize>() + key_bytes(k);
            if !closed.is_empty() {
                kept.insert(k.clone(), closed);
            }
        }
        let mut s = self.lock();
        if bytes > s.stats.max_bytes {
            return;
        }
        s.clock += 1;
        let clock = s.clock;
        s.entries.insert(
            key,
            Entry {
                grid: kept,
                from,
                until,
                bytes,
                last_used: clock,
                created_ms: now_ms,
            },
        );
        s.evict();
    }

    /// Brings an entry that already holds the start of [from, until) up to
    /// `until`: a refresh after a hit copies only the buckets that closed since
    /// the entry was written, and drops those before `from`, instead of copying
    /// every cached cell back in (which cost as much as the hit itself). False
    /// when there is no such entry, and the caller writes a new one.
    fn extend(&self, key: &str, grid: &Grid, from: i64, until: i64, now_ms: i64) -> bool {
        let mut s = self.lock();
        let ttl = s.ttl_ms;
        s.clock += 1;
        let clock = s.clock;
        let Some(e) = s.entries.get_mut(key) else {
            return false;
        };
        if e.from > from || e.until < from || now_ms - e.created_ms > ttl {
            return false;
        }
        e.last_used = clock;
        if e.from < from {
            for cells in e.grid.values_mut() {
                let kept = cells.split_off(&from);
                let gone = std::mem::replace(cells, kept);
                e.bytes = e
                    .bytes
                    .saturating_sub(gone.values().map(Cell::size).sum::<usize>());
            }
            e.grid.retain(|k, cells| {
                let keep = !cells.is_empty();
                if !keep {
                    e.bytes = e.bytes.saturating_sub(key_bytes(k));
                }
                keep
            });
            e.from = from;
        }
        if until > e.until {
            for (k, cells) in grid {
                let mut fresh = cells.range(e.until..until).peekable();
                if fresh.peek().is_none() {
                    continue;
                }
                let held = match e.grid.get_mut(k) {
                    Some(held) => held,
                    None => {
                        e.bytes += key_bytes(k);
                        e.grid.entry(k.clone()).or_default()
                    }
                };
                for (t, c) in fresh {
                    e.bytes += c.size();
                    held.insert(*t, c.clone());
                }
            }
            e.until = until;
            // The entry's age stays that of its oldest cells.
            e.created_ms = e.created_ms.min(now_ms);
        }
        s.evict();
        true
    }
}

/// Approximate bytes of a group key, for the cache's memory bound.
fn key_bytes(k: &[Option<String>]) -> usize {
    k.iter()
        .map(|v| v.as_ref().map_or(8, |s| s.len() + 24))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// One group, a cell per minute in [from, to) counting its own minute.
    fn grid(from: i64, to: i64) -> Grid {
        let cells = (from / MIN..to / MIN)
            .map(|m| {
                let c = Cell {
                    count: m as u64,
                    closed: true,
                    ..Cell::default()
                };
                (m * MIN, c)
            })
            .collect();
        Grid::from([(vec![Some("FR".to_string())], cells)])
    }

    fn counts(g: &Grid) -> Vec<(i64, u64)> {
        g.values()
            .flat_map(|cells| cells.iter().map(|(t, c)| (*t, c.count)))
            .collect()
    }

    #[test]
    fn a_sliding_panel_extends_its_entry_with_the_buckets_closed_since() {
        let cache = BucketCache::new(1 << 20, 3_600_000);
        cache.put("k".into(), &grid(0, 20 * MIN), 0, 10 * MIN, 0);
        // A minute later: the panel starts a minute later and one more bucket closed.
        cache.put("k".into(), &grid(MIN, 21 * MIN), MIN, 11 * MIN, 0);
        let hit = cache.get("k", MIN, 0).expect("hit");
        assert_eq!(hit.until, 11 * MIN);
        assert_eq!(hit.buckets, 10);
        assert_eq!(counts(&hit.grid), counts(&grid(MIN, 11 * MIN)));
        // The bytes held are those of a fresh entry for the same range.
        let extended = cache.stats().bytes;
        let fresh = BucketCache::new(1 << 20, 3_600_000);
        fresh.put("k".into(), &grid(MIN, 21 * MIN), MIN, 11 * MIN, 0);
        assert_eq!(extended, fresh.stats().bytes);
    }

    #[test]
    fn an_entry_that_already_holds_the_range_is_kept_as_it_is() {
        let cache = BucketCache::new(1 << 20, 3_600_000);
        cache.put("k".into(), &grid(0, 20 * MIN), 0, 10 * MIN, 0);
        // A grid whose cells differ: closed buckets never change, so the entry's stand.
        let mut other = grid(0, 20 * MIN);
        other.values_mut().for_each(|cells| {
            cells.values_mut().for_each(|c| c.count += 1000);
        });
        cache.put("k".into(), &other, 0, 10 * MIN, 0);
        let hit = cache.get("k", 0, 0).expect("hit");
        assert_eq!(counts(&hit.grid), counts(&grid(0, 10 * MIN)));
    }

    #[test]
    fn an_expired_or_later_entry_is_replaced_not_extended() {
        let cache = BucketCache::new(1 << 20, 3_600_000);
        cache.put("k".into(), &grid(5 * MIN, 20 * MIN), 5 * MIN, 10 * MIN, 0);
        // Starts before the entry: a new entry for the whole range.
        cache.put("k".into(), &grid(0, 20 * MIN), 0, 12 * MIN, 0);
        let hit = cache.get("k", 0, 0).expect("hit");
        assert_eq!(counts(&hit.grid), counts(&grid(0, 12 * MIN)));
        // Past its time to live: replaced, with the new read's age.
        cache.put("k".into(), &grid(0, 20 * MIN), 0, 13 * MIN, 4_000_000);
        assert_eq!(cache.get("k", 0, 4_000_000).expect("hit").until, 13 * MIN);
        assert!(cache.get("k", 0, 8_000_000).is_none());
    }
}
