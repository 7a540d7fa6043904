//! Periodic documents in `pipeline_stats`, so a Grafana panel (pipeline mode)
//! can chart the daemon itself: rates, rejections by reason, queue depth,
//! ingestion and write latency, partial and final materialization lag. The
//! provisioned *Mongo Pulse — operations* dashboard reads these fields.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
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
            let now_ms = Utc::now().timestamp_millis();
            let rollups = self.rollups.get();
            let gauges = Gauges {
                now_ms,
                queue_depth: self.writer.queued() as i64,
                materialization_lag_secs: rollups.and_then(|r| r.materialization_lag_secs(now_ms)),
                partial_lag_secs: rollups.and_then(|r| r.partial_lag_secs(now_ms)),
                // Taken (and reset) here, so each document has the slowest insert of its interval.
                write_latency_max_us: self.metrics.write_latency_max_us.swap(0, Ordering::Relaxed),
            };
            let doc = document(&self.writer_id, self.interval, &last, &now, &gauges);
            last = now;
            if let Err(e) = self.collection.insert_one(doc).await {
                tracing::debug!("could not write pipeline_stats: {e}");
            }
        }
    }
}

/// Running totals, read at each interval; documents hold the differences.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub accepted: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub writes_failed: u64,
    pub lag_sum_ms: u64,
    pub lag_count: u64,
    pub write_sum_us: u64,
    pub write_count: u64,
}

impl Snapshot {
    fn take(m: &IngestMetrics) -> Snapshot {
        Snapshot {
            accepted: m.accepted.get(),
            rejected: m.rejected_total.load(Ordering::Relaxed),
            rejected_by_reason: m.rejected_by_reason(),
            writes_failed: m.writes_failed.get(),
            lag_sum_ms: m.lag_sum_ms.load(Ordering::Relaxed),
            lag_count: m.lag_count.load(Ordering::Relaxed),
            write_sum_us: m.write_latency_sum_us.load(Ordering::Relaxed),
            write_count: m.write_count.load(Ordering::Relaxed),
        }
    }
}

/// Values that are read as they are now, not as differences.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    pub now_ms: i64,
    pub queue_depth: i64,
    pub materialization_lag_secs: Option<f64>,
    pub partial_lag_secs: Option<f64>,
    pub write_latency_max_us: u64,
}

/// One `pipeline_stats` document for the interval between two snapshots.
///
/// `rejectedByReason` is an array of `{reason, count}` (every reason seen since
/// start, 0 when none this interval) so a pipeline can `$unwind` it into one row
/// per reason and the series do not have gaps.
pub fn document(
    writer_id: &str,
    interval: Duration,
    before: &Snapshot,
    now: &Snapshot,
    g: &Gauges,
) -> Document {
    let secs = interval.as_secs_f64();
    let accepted = now.accepted.saturating_sub(before.accepted);
    let rejected = now.rejected.saturating_sub(before.rejected);
    let lag_n = now.lag_count.saturating_sub(before.lag_count);
    let lag_ms = now.lag_sum_ms.saturating_sub(before.lag_sum_ms);
    let writes = now.write_count.saturating_sub(before.write_count);
    let write_us = now.write_sum_us.saturating_sub(before.write_sum_us);
    let by_reason: Vec<Bson> = now
        .rejected_by_reason
        .iter()
        .map(|(reason, total)| {
            let n = total.saturating_sub(*before.rejected_by_reason.get(reason).unwrap_or(&0));
            Bson::Document(doc! {
                "reason": reason,
                "count": n as i64,
                "perSecond": n as f64 / secs,
            })
        })
        .collect();
    let opt = |v: Option<f64>| v.map(Bson::Double).unwrap_or(Bson::Null);
    doc! {
        "timestamp": bson::DateTime::from_millis(g.now_ms),
        "writerId": writer_id,
        "component": "ingest",
        "intervalSeconds": secs,
        "eventsAccepted": accepted as i64,
        "eventsRejected": rejected as i64,
        "eventsPerSecond": accepted as f64 / secs,
        "rejectedPerSecond": rejected as f64 / secs,
        "rejectedByReason": by_reason,
        "writesFailed": now.writes_failed.saturating_sub(before.writes_failed) as i64,
        "queueDepth": g.queue_depth,
        "ingestionLagMsAvg": if lag_n > 0 { lag_ms as f64 / lag_n as f64 } else { 0.0 },
        "writes": writes as i64,
        "writeLatencyMsAvg": if writes > 0 { write_us as f64 / writes as f64 / 1000.0 } else { 0.0 },
        "writeLatencyMsMax": g.write_latency_max_us as f64 / 1000.0,
        "totalAccepted": now.accepted as i64,
        "materializationLagSeconds": opt(g.materialization_lag_secs),
        "partialLagSeconds": opt(g.partial_lag_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_holds_the_interval_differences_and_every_reason_seen() {
        let before = Snapshot {
            accepted: 100,
            rejected: 3,
            rejected_by_reason: BTreeMap::from([("late".to_string(), 3)]),
            lag_sum_ms: 1_000,
            lag_count: 10,
            write_sum_us: 4_000,
            write_count: 2,
            ..Snapshot::default()
        };
        let now = Snapshot {
            accepted: 300,
            rejected: 8,
            rejected_by_reason: BTreeMap::from([
                ("late".to_string(), 3),
                ("invalid_event_type".to_string(), 5),
            ]),
            lag_sum_ms: 2_000,
            lag_count: 20,
            write_sum_us: 10_000,
            write_count: 4,
            ..Snapshot::default()
        };
        let g = Gauges {
            now_ms: 1_733_754_600_000,
            queue_depth: 7,
            materialization_lag_secs: Some(150.0),
            partial_lag_secs: None,
            write_latency_max_us: 3_500,
        };
        let d = document("main", Duration::from_secs(10), &before, &now, &g);
        assert_eq!(d.get_i64("eventsAccepted").unwrap(), 200);
        assert_eq!(d.get_f64("eventsPerSecond").unwrap(), 20.0);
        assert_eq!(d.get_f64("rejectedPerSecond").unwrap(), 0.5);
        assert_eq!(d.get_f64("ingestionLagMsAvg").unwrap(), 100.0);
        assert_eq!(d.get_f64("writeLatencyMsAvg").unwrap(), 3.0);
        assert_eq!(d.get_f64("writeLatencyMsMax").unwrap(), 3.5);
        assert_eq!(d.get_i64("queueDepth").unwrap(), 7);
        assert_eq!(d.get_f64("materializationLagSeconds").unwrap(), 150.0);
        assert_eq!(d.get("partialLagSeconds"), Some(&Bson::Null));
        let reasons: Vec<(String, i64)> = d
            .get_array("rejectedByReason")
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.as_document().unwrap();
                (
                    r.get_str("reason").unwrap().to_string(),
                    r.get_i64("count").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("invalid_event_type".to_string(), 5),
                ("late".to_string(), 0)
            ],
            "a reason with no rejection this interval is still there, at 0"
        );
    }
}
