//! `mongopulsed`, the companion daemon.
//!
//! In: a [`Config`] and a shutdown signal. Out: a process that keeps MongoDB's
//! collections ready, and answers health checks until told to stop.

pub mod config;

use std::future::Future;
use std::time::Duration;

use bson::doc;
use thiserror::Error;

pub use config::{Config, ConfigError, LogFormat};

use crate::store::{build_client, classify_error, ConnectError, Redactor};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot listen on {address}: {reason}. Choose another http.listen address or stop what uses it")]
    Listen { address: String, reason: String },
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let timeout = Duration::from_secs_f64(config.mongodb.connect_timeout_secs);
    let client = build_client(&config.mongodb.uri, "mongopulsed", timeout).await?;
    let redactor = Redactor::for_uri(&config.mongodb.uri);
    let db = client.database(&config.mongodb.database);
    db.run_command(doc! { "ping": 1 })
        .await
        .map_err(|e| classify_error(&e, &redactor))?;
    tracing::info!(hosts = redactor.hosts(), database = %config.mongodb.database, "connected to MongoDB");
    shutdown.await;
    tracing::info!("shutting down");
    Ok(())
}
