//! `mongopulsed`, the companion daemon.
//!
//! In: a [`Config`] and a shutdown signal. Out: the HTTP API on `http.listen`
//! (`http.rs`: the router; the events endpoint is `ingest::http`'s), raw events
//! and rollups in MongoDB, `pipeline_stats` documents; on shutdown, every
//! accepted event flushed before [`run`] returns. This module only wires the
//! stages together: it is the one place that knows them all.

pub mod config;
mod http;
pub mod loadgen;
mod stats;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::registry::Registry;
use thiserror::Error;

pub use config::{Config, ConfigError, LogFormat};

use crate::alerting::AlertEngine;
use crate::ingest::auth::{Auth, KEYS_ENV};
use crate::ingest::dead_letters::DeadLetters;
use crate::ingest::http::EventsState;
use crate::ingest::metrics::IngestMetrics;
use crate::ingest::record::Recorder;
use crate::ingest::writer::Writer;
use crate::ingest::Validator;
use crate::rollup::engine::RollupMetrics;
use crate::rollup::recover::{count_late_writes, recover};
use crate::rollup::store::ensure_rollup_indexes;
use crate::rollup::{RollupConfig, Rollups};
use crate::store::readiness::Readiness;
use crate::store::schema::{ensure_raw_storage, Retention};
use crate::store::{build_client, ConnectError, Redactor};
use config::RetentionConfig;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot listen on {address}: {reason}. Choose another http.listen address or stop what uses it")]
    Listen { address: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the HTTP server failed: {0}")]
    Serve(String),
    #[error("backfill failed: {0}")]
    Backfill(String),
    #[error("loadgen: {0}")]
    Loadgen(String),
    #[error("stopped, but these tasks failed: {0} (the log above says what each left undone)")]
    Tasks(String),
}

/// Runs the daemon until `shutdown` completes, then flushes and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let timeout = Duration::from_secs_f64(config.mongodb.connect_timeout_secs);
    let client = build_client(&config.mongodb.uri, "mongopulsed", timeout).await?;
    let redactor = Redactor::for_uri(&config.mongodb.uri);
    let db = client.database(&config.mongodb.database);
    let names = config.mongodb.collections.clone();

    let auth = Arc::new(
        Auth::new(&config.auth, std::env::var(KEYS_ENV).ok().as_deref())
            .map_err(DaemonError::Config)?,
    );
    let mut registry = Registry::with_prefix("mongopulse");
    let metrics = Arc::new(IngestMetrics::register(&mut registry));
    let rollup_metrics = RollupMetrics::register(&mut registry);
    let (writer, writer_task) = Writer::start(
        db.collection(&names.events),
        config.ingest.writer.clone(),
        metrics.clone(),
        redactor.clone(),
    )
    .map_err(DaemonError::Config)?;

    let readiness = Arc::new(Readiness::new(db.clone(), redactor.clone()));
    let retention = Retention {
        raw: RetentionConfig::days(config.retention.raw_days),
        dead_letters: RetentionConfig::days(config.retention.dead_letters_days),
        pipeline_stats: RetentionConfig::days(config.retention.pipeline_stats_days),
    };
    let rollups = Arc::new(OnceLock::new());
    let recorder = Arc::new(OnceLock::new());
    let (stop_rollups, rollups_stopped) = tokio::sync::watch::channel(false);
    let (final_until_tx, final_until_rx) = tokio::sync::watch::channel(i64::MIN);
    let (late_writes_read_tx, late_writes_read) = tokio::sync::watch::channel(false);
    let prepare_task = tokio::spawn(prepare(Preparation {
        db: db.clone(),
        names: names.clone(),
        retention,
        rollup_config: config.rollups.clone(),
        writer_id: config.writer_id.clone(),
        late_write_wait: Duration::from_millis(config.ingest.writer.write_timeout_ms),
        readiness: readiness.clone(),
        redactor: redactor.clone(),
        rollups: rollups.clone(),
        recorder: recorder.clone(),
        rollup_metrics,
        final_until: final_until_tx,
        late_writes_read: late_writes_read_tx,
        stop: rollups_stopped.clone(),
    }));
    let alerts = if config.alerting.enabled {
        let engine = Arc::new(
            AlertEngine::new(config.alerting.clone(), db.clone(), names.clone())
                .map_err(|e| DaemonError::Config(e.to_string()))?,
        );
        let task = tokio::spawn(engine.clone().run(final_until_rx, rollups_stopped.clone()));
        Some((engine, task))
    } else {
        None
    };

    let stats_task = (config.stats.interval_secs > 0.0).then(|| {
        tokio::spawn(
            stats::StatsReporter {
                collection: db.collection(&names.pipeline_stats),
                writer_id: config.writer_id.clone(),
                interval: Duration::from_secs_f64(config.stats.interval_secs),
                metrics: metrics.clone(),
                writer: writer.clone(),
                rollups: rollups.clone(),
            }
            .run(),
        )
    });

    let events = Arc::new(EventsState {
        validator: Validator {
            limits: config.ingest.limits.clone(),
            max_age: chrono::Duration::milliseconds(
                (config.retention.raw_days * 86_400_000.0) as i64,
            ),
        },
        writer: writer.clone(),
        auth: auth.clone(),
        dead_letters: DeadLetters::new(
            db.collection(&names.dead_letters),
            config.ingest.dead_letter_max_raw_bytes,
            timeout,
        ),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        retry_after_secs: config.ingest.retry_after_secs,
        writer_id: config.writer_id.clone(),
        recorder,
    });
    let source_metrics = crate::sources::SourceMetrics::register(&mut registry);
    let (stop_sources, sources_stop) = tokio::sync::watch::channel(false);
    let source_tasks = crate::sources::start(
        &config.ingest.sources,
        Arc::new(crate::sources::Intake {
            dead_letters: events
                .dead_letters
                .keeping(config.ingest.limits.max_body_bytes),
            events: events.clone(),
            metrics: source_metrics,
            waiting: Default::default(),
            dead_lettered: Default::default(),
            late_writes_read,
        }),
        sources_stop,
    );
    let daemon = Arc::new(http::DaemonState {
        auth,
        readiness,
        registry: Arc::new(registry),
        metrics,
        writer: writer.clone(),
        alerts: alerts.as_ref().map(|(e, _)| e.clone()),
    });
    drop(writer);

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .map_err(|e| DaemonError::Listen {
            address: config.http.listen.clone(),
            reason: e.to_string(),
        })?;
    let address = listener.local_addr().map_err(|e| DaemonError::Listen {
        address: config.http.listen.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!("listening on http://{address}");

    let served = axum::serve(listener, http::router(events, daemon))
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("stopped accepting requests; flushing accepted events");
    // Sources hold the writer too: they stop taking messages and give back to their
    // broker those not stored, before the writer's last handle goes.
    let _ = stop_sources.send(true);
    for task in source_tasks {
        if let Err(e) = task.await {
            tracing::error!("a broker source failed ({e}): its unacknowledged messages are redelivered at the next start");
        }
    }
    if let Some(t) = stats_task {
        t.abort();
    }
    // The router and its state are gone, so the writer's last handle is
    // dropped: it flushes what it holds and ends. A task that panicked is a
    // failure to report, never a clean stop.
    let mut failed: Vec<&str> = Vec::new();
    match writer_task.await {
        Ok(()) => tracing::info!("all accepted events are stored; writing rollups"),
        Err(e) => {
            tracing::error!(
                "the event writer failed ({e}): every event answered 2xx was stored, but \
                 requests in flight were not acknowledged and their clients must retry"
            );
            failed.push("event writer");
        }
    }
    let _ = stop_rollups.send(true);
    match prepare_task.await {
        Ok(Some(flusher)) => {
            if let Err(e) = flusher.await {
                tracing::error!(
                    "the rollup flusher failed ({e}): the next start rebuilds the rollups \
                     from the stored events after the last checkpoint"
                );
                failed.push("rollup flusher");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!("preparing the database failed ({e})");
            failed.push("database preparation");
        }
    }
    if let Some((_, task)) = alerts {
        if let Err(e) = task.await {
            tracing::error!(
                "the alert engine failed ({e}): alert states are restored from `alerts` at the next start"
            );
            failed.push("alert engine");
        }
    }
    served.map_err(|e| DaemonError::Serve(e.to_string()))?;
    if !failed.is_empty() {
        return Err(DaemonError::Tasks(failed.join(", ")));
    }
    tracing::info!("bye");
    Ok(())
}

/// `mongopulsed backfill`: recomputes rollups of [from, to) from raw events.
pub async fn backfill(
    config: Config,
    from: &str,
    to: &str,
    spec: Option<&str>,
    force: bool,
) -> Result<(), DaemonError> {
    use crate::rollup::backfill::{backfill, BackfillRequest};
    let from_ms = parse_time(from).map_err(|e| DaemonError::Config(format!("--from: {e}")))?;
    let to_ms = parse_time(to).map_err(|e| DaemonError::Config(format!("--to: {e}")))?;
    let mut specs = config
        .rollups
        .validate()
        .map_err(|e| DaemonError::Config(e.to_string()))?;
    if let Some(name) = spec {
        specs.retain(|s| s.name == name);
        if specs.is_empty() {
            return Err(DaemonError::Config(format!(
                "--spec '{name}' names no configured rollup spec"
            )));
        }
    }
    let timeout = Duration::from_secs_f64(config.mongodb.connect_timeout_secs);
    let client = build_client(&config.mongodb.uri, "mongopulsed-backfill", timeout).await?;
    let redactor = Redactor::for_uri(&config.mongodb.uri);
    let db = client.database(&config.mongodb.database);
    let names = &config.mongodb.collections;
    ensure_rollup_indexes(&db, names, &config.rollups.ttl)
        .await
        .map_err(|e| crate::store::classify_error(&e, &redactor))?;
    let lateness_ms = (config.rollups.allowed_lateness_secs * 1000.0) as i64;
    let report = backfill(
        &db,
        names,
        BackfillRequest {
            from_ms,
            to_ms,
            specs,
            writer: config.writer_id.clone(),
            final_before_ms: chrono::Utc::now().timestamp_millis() - lateness_ms,
            force,
        },
    )
    .await
    .map_err(|e| DaemonError::Backfill(redactor.clean(&e.to_string())))?;
    tracing::info!(
        events = report.events,
        minute_documents = report.minute_documents,
        upper_documents = report.upper_documents,
        "backfill done"
    );
    Ok(())
}

/// RFC 3339 or epoch milliseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|d| d.timestamp_millis())
        .map_err(|e| {
            format!(
                "'{text}' is neither RFC 3339 (2024-12-09T14:00:00Z) nor epoch milliseconds: {e}"
            )
        })
}

struct Preparation {
    db: mongodb::Database,
    names: crate::store::CollectionNames,
    retention: Retention,
    rollup_config: RollupConfig,
    writer_id: String,
    /// How long after recovery the previous run's last inserts are looked for.
    late_write_wait: Duration,
    readiness: Arc<Readiness>,
    redactor: Redactor,
    rollups: Arc<OnceLock<Arc<Rollups>>>,
    /// The same rollups, as the events endpoint sees them.
    recorder: Arc<OnceLock<Arc<dyn Recorder>>>,
    rollup_metrics: RollupMetrics,
    final_until: tokio::sync::watch::Sender<i64>,
    /// Turns true once the previous run's last inserts had their time to land and
    /// were read (at once when there was no previous run to wait for).
    late_writes_read: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Creates the collections and rebuilds the rollup windows, retrying until
/// MongoDB answers; the API answers 503 until this is done. Returns the
/// rollup flusher's task, which ends after a last flush once `stop` is set.
async fn prepare(p: Preparation) -> Option<tokio::task::JoinHandle<()>> {
    let mut backoff = Duration::from_millis(500);
    let mut stop = p.stop.clone();
    let recovered = loop {
        if *stop.borrow() {
            return None;
        }
        let attempt = async {
            for line in ensure_raw_storage(&p.db, &p.names, p.retention)
                .await
                .map_err(|e| format!("cannot prepare collections: {e}"))?
            {
                tracing::info!("{line}");
            }
            for line in ensure_rollup_indexes(&p.db, &p.names, &p.rollup_config.ttl)
                .await
                .map_err(|e| format!("cannot create rollup indexes: {e}"))?
            {
                tracing::info!("{line}");
            }
            let specs = p.rollup_config.validate().map_err(|e| e.to_string())?;
            p.readiness
                .set_problem("rebuilding rollup windows from raw events".into());
            recover(&p.db, &p.names, &p.rollup_config, specs, &p.writer_id)
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(r) => break r,
            Err(e) => {
                let why = p.redactor.clean(&e);
                tracing::warn!("{why}; retrying in {} ms", backoff.as_millis());
                p.readiness.set_problem(why);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    if let Some(cp) = recovered.checkpoint {
        tracing::info!(
            replayed_events = recovered.replayed_events,
            loaded_documents = recovered.loaded_documents,
            "rollups recovered from the checkpoint at {}",
            chrono::DateTime::from_timestamp_millis(cp.minutes_ms)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default()
        );
    }
    let mut windows = recovered.windows;
    windows.set_max_open_tuples(p.rollup_config.max_open_tuples);
    let rollups = Arc::new(Rollups::new(
        windows,
        p.db.clone(),
        p.names.clone(),
        &p.writer_id,
        p.rollup_metrics,
        p.final_until,
    ));
    let interval = Duration::from_millis(p.rollup_config.flush_interval_ms);
    let mut stop_flushing = p.stop.clone();
    let flusher = tokio::spawn(rollups.clone().run(interval, async move {
        let _ = stop_flushing.wait_for(|stopped| *stopped).await;
    }));
    match recovered.late_writes {
        Some(late) => {
            let counted = count_late_writes(
                rollups.clone(),
                p.db.clone(),
                p.names.clone(),
                p.writer_id.clone(),
                late,
                p.late_write_wait,
                p.redactor.clone(),
            );
            let read = p.late_writes_read;
            tokio::spawn(async move {
                counted.await;
                let _ = read.send(true);
            });
        }
        None => {
            let _ = p.late_writes_read.send(true);
        }
    }
    let _ = p.recorder.set(rollups.clone());
    let _ = p.rollups.set(rollups);
    p.readiness.set_ready();
    Some(flusher)
}
