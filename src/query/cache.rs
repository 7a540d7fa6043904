//! Closed buckets are immutable: once every rollup in a bucket is final and
//! the bucket is older than the horizon, it cannot change. This cache keeps
//! their merged cells per (data source, query shape), bounded in bytes, so a
//! refresh reads only the open tail from MongoDB.

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
        let mut kept = Grid::new();
        let mut bytes = key.len() + 64;
        for (k, cells) in grid {
            let closed: std::collections::BTreeMap<i64, Cell> = cells
                .range(from..until)
                .map(|(t, c)| (*t, c.clone()))
                .collect();
            bytes += closed.values().map(Cell::size).sum::<usize>()
                + k.iter()
                    .map(|v| v.as_ref().map_or(8, |s| s.len() + 24))
                    .sum::<usize>();
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
        // Evict the least recently used until within budget.
        while s.entries.values().map(|e| e.bytes).sum::<usize>() > s.stats.max_bytes {
            let Some(oldest) = s
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            s.entries.remove(&oldest);
            s.stats.evictions += 1;
        }
    }
}
