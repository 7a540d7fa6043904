//! The ingest path's own metrics, registered in the daemon's registry and
//! served at `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

pub struct IngestMetrics {
    pub accepted: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub requests: Family<StatusLabel, Counter>,
    pub batch_size: Histogram,
    pub write_latency: Histogram,
    pub queue_depth: Gauge,
    pub ingestion_lag: Histogram,
    pub writes_ok: Counter,
    pub writes_failed: Counter,
    pub writes_timed_out: Counter,
    pub writes_unanswered: Gauge,
    pub writes_looked_up: Gauge,
    pub dead_letter_failures: Counter,
    /// Running totals, read by the `pipeline_stats` reporter.
    pub rejected_total: AtomicU64,
    pub lag_sum_ms: AtomicU64,
    pub lag_count: AtomicU64,
    /// Rejections per reason since start (the Prometheus family cannot be read back).
    pub rejected_by_reason: Mutex<BTreeMap<String, u64>>,
    pub write_latency_sum_us: AtomicU64,
    pub write_count: AtomicU64,
    /// Slowest insert since the reporter last took it (it resets this to 0).
    pub write_latency_max_us: AtomicU64,
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> IngestMetrics {
        let m = IngestMetrics {
            accepted: Counter::default(),
            rejected: Family::default(),
            requests: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            write_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            queue_depth: Gauge::default(),
            ingestion_lag: Histogram::new(exponential_buckets(0.01, 3.0, 14)),
            writes_ok: Counter::default(),
            writes_failed: Counter::default(),
            writes_timed_out: Counter::default(),
            writes_unanswered: Gauge::default(),
            writes_looked_up: Gauge::default(),
            dead_letter_failures: Counter::default(),
            rejected_total: AtomicU64::new(0),
            lag_sum_ms: AtomicU64::new(0),
            lag_count: AtomicU64::new(0),
            rejected_by_reason: Mutex::new(BTreeMap::new()),
            write_latency_sum_us: AtomicU64::new(0),
            write_count: AtomicU64::new(0),
            write_latency_max_us: AtomicU64::new(0),
        };
        let r = registry.sub_registry_with_prefix("ingest");
        r.register(
            "events_accepted",
            "Events stored in the events collection",
            m.accepted.clone(),
        );
        r.register(
            "events_rejected",
            "Events refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "requests",
            "Requests to POST /v1/events, by HTTP status",
            m.requests.clone(),
        );
        r.register(
            "batch_size_events",
            "Events per insert into MongoDB",
            m.batch_size.clone(),
        );
        r.register(
            "write_latency_seconds",
            "Duration of inserts into MongoDB",
            m.write_latency.clone(),
        );
        r.register(
            "queue_depth_events",
            "Events accepted and waiting for MongoDB",
            m.queue_depth.clone(),
        );
        r.register(
            "ingestion_lag_seconds",
            "Time from an event's timestamp to its storage",
            m.ingestion_lag.clone(),
        );
        r.register(
            "writes_ok",
            "Inserts acknowledged by MongoDB",
            m.writes_ok.clone(),
        );
        r.register(
            "writes_failed",
            "Inserts that failed (refused, or no answer in the end)",
            m.writes_failed.clone(),
        );
        r.register(
            "writes_timed_out",
            "Inserts not answered within write_timeout_ms: their requests got a 503, and what they stored was counted when MongoDB answered",
            m.writes_timed_out.clone(),
        );
        r.register(
            "writes_unanswered",
            "Inserts past write_timeout_ms still waiting for MongoDB's answer (their events are neither acknowledged nor counted yet)",
            m.writes_unanswered.clone(),
        );
        r.register(
            "writes_looked_up",
            "Inserts whose outcome is unknown (their connection broke) being looked up in events (up to 30 s after MongoDB answers again); what is found is counted",
            m.writes_looked_up.clone(),
        );
        r.register(
            "dead_letter_write_failures",
            "Rejected events that could not be written to dead_letters",
            m.dead_letter_failures.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        *self
            .rejected_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// One insert into MongoDB took `seconds`.
    pub fn observe_write(&self, seconds: f64) {
        self.write_latency.observe(seconds);
        let us = (seconds.max(0.0) * 1_000_000.0) as u64;
        self.write_latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.write_count.fetch_add(1, Ordering::Relaxed);
        self.write_latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Rejections per reason since start.
    pub fn rejected_by_reason(&self) -> BTreeMap<String, u64> {
        self.rejected_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn observe_lag(&self, seconds: f64) {
        self.ingestion_lag.observe(seconds);
        self.lag_sum_ms
            .fetch_add((seconds.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
        self.lag_count.fetch_add(1, Ordering::Relaxed);
    }
}
