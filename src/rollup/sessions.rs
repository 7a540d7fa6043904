//! Session windows: per `sessionId`, a session lasts while events keep coming
//! less than `gap` apart. Closed sessions are summed into `sessions` rollups
//! per minute of their last event (the session's end), by the spec's
//! dimensions (without `eventType`, taken from the session's first event):
//! `sessions`, `durationMsSum` (mean duration = ÷ sessions), `events` (events
//! per session = ÷ sessions) and `bounces` (single-event sessions; bounce rate
//! = ÷ sessions). Pure, like `windows.rs`: the watermark comes from there.

use std::collections::HashMap;

use bson::RawDocumentBuf;

use super::aggregate::{dimension_values, document_id};
use super::bson_writer::BsonWriter;
use super::level::{Level, MINUTE_MS};
use super::spec::Spec;
use super::windows::{Pending, WindowKey};
use crate::event::Event;

#[derive(Clone, Debug)]
struct OpenSession {
    first_ms: i64,
    last_ms: i64,
    events: u64,
    dims: Box<[Option<Box<str>>]>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSums {
    pub sessions: u64,
    pub duration_ms: u64,
    pub events: u64,
    pub bounces: u64,
}

#[derive(Debug)]
struct Bucket {
    sums: SessionSums,
    dirty: bool,
    is_final: bool,
    version: u64,
}

pub struct Sessions {
    spec: u16,
    gap_ms: i64,
    /// Buckets starting before this were already written final before a
    /// restart; sessions replayed into them must not be counted again.
    skip_before_ms: i64,
    open: HashMap<Box<str>, OpenSession>,
    buckets: HashMap<WindowKey, Bucket>,
    watermark_ms: i64,
    version: u64,
}

impl Sessions {
    pub fn new(spec: u16, gap_ms: i64, skip_before_ms: i64) -> Sessions {
        Sessions {
            spec,
            gap_ms,
            skip_before_ms,
            open: HashMap::new(),
            buckets: HashMap::new(),
            watermark_ms: i64::MIN,
            version: 0,
        }
    }

    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    pub fn record(&mut self, specs: &[Spec], event: &Event) {
        let spec = &specs[self.spec as usize];
        if !spec.covers(&event.event_type) {
            return;
        }
        let Some(id) = event.dimension("sessionId") else {
            return;
        };
        let ms = event.timestamp.timestamp_millis();
        if let Some(s) = self.open.get_mut(id.as_ref()) {
            if ms <= s.last_ms + self.gap_ms && ms >= s.first_ms - self.gap_ms {
                s.first_ms = s.first_ms.min(ms);
                s.last_ms = s.last_ms.max(ms);
                s.events += 1;
                return;
            }
            // Far after the open session: that one is over, a new one starts.
            if ms > s.last_ms + self.gap_ms {
                let done = s.clone();
                self.close(done);
            } else {
                // Far before it: the earlier session already closed; count this one alone.
                let dims = session_dims(spec, event);
                self.close(OpenSession {
                    first_ms: ms,
                    last_ms: ms,
                    events: 1,
                    dims,
                });
                return;
            }
        }
        let dims = session_dims(spec, event);
        self.open.insert(
            id.as_ref().into(),
            OpenSession {
                first_ms: ms,
                last_ms: ms,
                events: 1,
                dims,
            },
        );
    }

    fn close(&mut self, s: OpenSession) {
        let start = Level::Minute.bucket_start(s.last_ms);
        if start < self.skip_before_ms {
            return;
        }
        self.version += 1;
        let key = WindowKey {
            spec: self.spec,
            start,
            dims: s.dims,
        };
        let b = self.buckets.entry(key).or_insert(Bucket {
            sums: SessionSums::default(),
            dirty: true,
            is_final: false,
            version: 0,
        });
        b.sums.sessions += 1;
        b.sums.duration_ms += (s.last_ms - s.first_ms).max(0) as u64;
        b.sums.events += s.events;
        b.sums.bounces += (s.events == 1) as u64;
        b.dirty = true;
        b.version = self.version;
    }

    /// Closes sessions idle for `gap` at the watermark, and buckets no session can still end in.
    pub fn advance(&mut self, _specs: &[Spec], watermark_ms: i64) {
        self.watermark_ms = watermark_ms;
        let ended: Vec<Box<str>> = self
            .open
            .iter()
            .filter(|(_, s)| s.last_ms + self.gap_ms <= watermark_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ended {
            if let Some(s) = self.open.remove(&id) {
                self.close(s);
            }
        }
        for (key, b) in self.buckets.iter_mut() {
            if !b.is_final && key.start + MINUTE_MS + self.gap_ms <= watermark_ms {
                self.version += 1;
                b.is_final = true;
                b.dirty = true;
                b.version = self.version;
            }
        }
    }

    pub fn flush(&mut self, specs: &[Spec], writer: &str, now_ms: i64) -> Vec<Pending> {
        let spec = &specs[self.spec as usize];
        let mut out = Vec::new();
        for (key, b) in self.buckets.iter_mut().filter(|(_, b)| b.dirty) {
            b.dirty = false;
            out.push(Pending {
                level: Level::Minute,
                key: key.clone(),
                version: b.version,
                is_final: b.is_final,
                doc: session_document(spec, key, &b.sums, writer, b.is_final, now_ms),
            });
        }
        out
    }

    pub fn commit(&mut self, written: &[Pending]) {
        for p in written {
            if p.is_final
                && self
                    .buckets
                    .get(&p.key)
                    .is_some_and(|b| b.version == p.version)
            {
                self.buckets.remove(&p.key);
            }
        }
    }

    pub fn abandon(&mut self, written: &[Pending]) {
        for p in written {
            if let Some(b) = self.buckets.get_mut(&p.key) {
                b.dirty = true;
            }
        }
    }

    /// Every session bucket before this is final and written (call after a
    /// commit). Recovery replays events from here minus the gap.
    pub fn checkpoint_ms(&self) -> i64 {
        let earliest = self
            .buckets
            .keys()
            .map(|k| k.start)
            .min()
            .unwrap_or(i64::MAX);
        // Sessions still open can end no earlier than the watermark's minute.
        earliest.min(Level::Minute.bucket_start(self.watermark_ms.max(i64::MIN / 2)))
    }
}

fn session_dims(spec: &Spec, event: &Event) -> Box<[Option<Box<str>>]> {
    spec.dimensions
        .iter()
        .zip(dimension_values(spec, event).iter())
        .map(|(name, v)| {
            if name == "eventType" {
                None
            } else {
                v.as_deref().map(Box::from)
            }
        })
        .collect()
}

pub fn session_document(
    spec: &Spec,
    key: &WindowKey,
    s: &SessionSums,
    writer: &str,
    is_final: bool,
    now_ms: i64,
) -> RawDocumentBuf {
    let mut w = BsonWriter::new(384);
    w.str(
        "_id",
        &format!(
            "sessions:{}",
            document_id(spec, Level::Minute, key.start, &key.dims, writer)
        ),
    );
    w.str("spec", &spec.name);
    w.str("granularity", "minute");
    w.date_time("timestamp", key.start);
    w.str("writer", writer);
    w.begin_document("dimensions");
    for (name, value) in spec.dimensions.iter().zip(key.dims.iter()) {
        if name != "eventType" {
            match value {
                Some(v) => w.str(name, v),
                None => w.null(name),
            }
        }
    }
    w.end();
    w.i64("sessions", s.sessions as i64);
    w.i64("durationMsSum", s.duration_ms as i64);
    w.i64("events", s.events as i64);
    w.i64("bounces", s.bounces as i64);
    w.bool("final", is_final);
    w.date_time("computedAt", now_ms);
    w.finish()
}
