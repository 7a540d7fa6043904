//! Periodic documents in `pipeline_stats`, so a Grafana panel (pipeline mode)
//! can chart the daemon itself: rates, rejections, queue depth, lag.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use chrono::Utc;
use mongodb::Collection;

use crate::ingest::metrics::IngestMetrics;
use crate::ingest::writer::Writer;
use crate::rollup::Rollups;

pub struct StatsReporter {
    pub collection: Collection<Document>,
    pub writer_id: String,
    pub interval: Duration,
    pub metrics: Arc<IngestMetrics>,
    pub writer: Writer,
    pub rollups: Arc<std::sync::OnceLock<Arc<Rollups>>>,
}

impl StatsReporter {
    /// Writes one document per interval until the task is aborted.
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.tick().await;
        let mut last = Snapshot::take(&self.metrics);
        loop {
            ticker.tick().await;
            let now = Snapshot::take(&self.metrics);
            let doc = self.document(&last, &now);
            last = now;
            if let Err(e) = self.collection.insert_one(doc).await {
                tracing::debug!("could not write pipeline_stats: {e}");
            }
        }
    }

    fn document(&self, before: &Snapshot, now: &Snapshot) -> Document {
        let secs = self.interval.as_secs_f64();
        let accepted = now.accepted.saturating_sub(before.accepted);
        let lag_n = now.lag_count.saturating_sub(before.lag_count);
        let lag_ms = now.lag_sum_ms.saturating_sub(before.lag_sum_ms);
        let now_ms = Utc::now().timestamp_millis();
        let materialization_lag = self
            .rollups
            .get()
            .and_then(|r| r.materialization_lag_secs(now_ms))
            .map(bson::Bson::Double)
            .unwrap_or(bson::Bson::Null);
        doc! {
            "timestamp": bson::DateTime::from_millis(now_ms),
            "writerId": &self.writer_id,
            "component": "ingest",
            "intervalSeconds": secs,
            "eventsAccepted": accepted as i64,
            "eventsRejected": now.rejected.saturating_sub(before.rejected) as i64,
            "eventsPerSecond": accepted as f64 / secs,
            "writesFailed": now.writes_failed.saturating_sub(before.writes_failed) as i64,
            "queueDepth": self.writer.queued() as i64,
            "ingestionLagMsAvg": if lag_n > 0 { lag_ms as f64 / lag_n as f64 } else { 0.0 },
            "totalAccepted": now.accepted as i64,
            "materializationLagSeconds": materialization_lag,
        }
    }
}

struct Snapshot {
    accepted: u64,
    rejected: u64,
    writes_failed: u64,
    lag_sum_ms: u64,
    lag_count: u64,
}

impl Snapshot {
    fn take(m: &IngestMetrics) -> Snapshot {
        Snapshot {
            accepted: m.accepted.get(),
            rejected: m.rejected_total.load(Ordering::Relaxed),
            writes_failed: m.writes_failed.get(),
            lag_sum_ms: m.lag_sum_ms.load(Ordering::Relaxed),
            lag_count: m.lag_count.load(Ordering::Relaxed),
        }
    }
}
