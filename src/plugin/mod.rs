//! `gpx_mongopulse`, the Grafana backend data-source plugin.
//!
//! In: Grafana's plugin-protocol requests over gRPC, each carrying the data
//! source's settings. Out: CheckHealth answers and Prometheus metrics about the
//! plugin itself.

mod data;
mod health;
mod instances;
mod live;
mod metrics;
mod own_stats;
mod resources;
pub mod settings;

use std::sync::Arc;

use grafana_plugin_sdk::backend::{self, DataSourceInstanceSettings};
use grafana_plugin_sdk::prelude::*;
use serde_json::Value;
use thiserror::Error;

pub use health::HealthReport;
pub use instances::{Instance, Instances};
use metrics::PluginMetrics;
use settings::DataSourceSettings;

/// The plugin: shared state behind an `Arc`, because the SDK clones the
/// service for each gRPC server it registers.
#[derive(Clone, GrafanaPlugin)]
#[grafana_plugin(plugin_type = "datasource")]
pub struct MongoPulsePlugin {
    state: Arc<State>,
}

struct State {
    instances: Instances,
    metrics: PluginMetrics,
    live: Arc<crate::live::LiveHub>,
}

/// A request arrived without what the plugin needs to serve it.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("this request carries no data-source settings; it must come from a configured Mongo Pulse data source")]
    NoDataSource,
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error("{0}")]
    Connect(String),
}

impl Default for MongoPulsePlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl MongoPulsePlugin {
    pub fn new() -> Self {
        MongoPulsePlugin {
            state: Arc::new(State {
                instances: Instances::default(),
                metrics: PluginMetrics::new(),
                live: Arc::new(crate::live::LiveHub::default()),
            }),
        }
    }

    /// The cached client for the data source a request is about.
    pub async fn instance(
        &self,
        settings: Option<&DataSourceInstanceSettings<Value, Value>>,
    ) -> Result<Arc<Instance>, PluginError> {
        let ds = settings.ok_or(PluginError::NoDataSource)?;
        let parsed =
            DataSourceSettings::from_grafana(&ds.json_data, &ds.decrypted_secure_json_data)?;
        let before = self.state.instances.built();
        let instance = self
            .state
            .instances
            .get(&ds.uid, ds.updated, parsed)
            .await
            .map_err(|e| PluginError::Connect(e.to_string()))?;
        if self.state.instances.built() != before {
            self.state.metrics.clients_built.inc();
        }
        Ok(instance)
    }
}

#[derive(Debug, Error)]
#[error("{0}")]
pub struct DiagnosticsError(String);

#[backend::async_trait]
impl backend::DiagnosticsService for MongoPulsePlugin {
    type CheckHealthError = DiagnosticsError;
    type CollectMetricsError = DiagnosticsError;

    async fn check_health(
        &self,
        request: backend::CheckHealthRequest<Self>,
    ) -> Result<backend::CheckHealthResponse, Self::CheckHealthError> {
        let settings = request.plugin_context.instance_settings.as_ref();
        let report = match self.instance(settings).await {
            Ok(instance) => {
                let mut report = health::check(&instance).await;
                if let Value::Object(details) = &mut report.details {
                    details.insert(
                        "cache".into(),
                        serde_json::to_value(instance.cache.stats()).unwrap_or_default(),
                    );
                }
                report
            }
            Err(e) => HealthReport::failed(capitalise(&e.to_string())),
        };
        self.state.metrics.health_checks(report.ok).inc();
        tracing::info!(ok = report.ok, message = %report.message, "health check");
        let response = if report.ok {
            backend::CheckHealthResponse::ok(report.message)
        } else {
            backend::CheckHealthResponse::error(report.message)
        };
        Ok(response.with_json_details(report.details))
    }

    async fn collect_metrics(
        &self,
        request: backend::CollectMetricsRequest<Self>,
    ) -> Result<backend::CollectMetricsResponse, Self::CollectMetricsError> {
        let mut text = self
            .state
            .metrics
            .encode()
            .map_err(|e| DiagnosticsError(format!("could not encode metrics: {e}")))?;
        // The cache belongs to the data source the request is about.
        if let Ok(instance) = self
            .instance(request.plugin_context.instance_settings.as_ref())
            .await
        {
            text = with_cache_metrics(text, &instance.uid, instance.cache.stats());
        }
        text = with_live_metrics(text, &self.state.live);
        Ok(backend::CollectMetricsResponse::new(Some(
            backend::MetricsPayload::prometheus(text.into_bytes()),
        )))
    }
}

/// Appends the cache counters before OpenMetrics' `# EOF`.
fn with_cache_metrics(text: String, uid: &str, s: crate::query::cache::CacheStats) -> String {
    let body = text
        .trim_end()
        .strip_suffix("# EOF")
        .unwrap_or(&text)
        .to_string();
    let uid = uid.replace(['\\', '"'], "_");
    let mut out = body;
    for (name, kind, help, v) in [
        (
            "mongopulse_plugin_cache_tail_reads",
            "counter",
            "Queries that read only the open tail, closed buckets coming from the cache",
            s.tail_reads,
        ),
        (
            "mongopulse_plugin_cache_full_reads",
            "counter",
            "Queries read in full from MongoDB",
            s.full_reads,
        ),
        (
            "mongopulse_plugin_cache_buckets_served",
            "counter",
            "Buckets served from the cache",
            s.buckets_served,
        ),
        (
            "mongopulse_plugin_cache_evictions",
            "counter",
            "Cache entries evicted for memory",
            s.evictions,
        ),
        (
            "mongopulse_plugin_cache_bytes",
            "gauge",
            "Approximate bytes held by the cache",
            s.bytes as u64,
        ),
    ] {
        let suffix = if kind == "counter" { "_total" } else { "" };
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n{name}{suffix}{{datasource=\"{uid}\"}} {v}\n"));
    }
    out.push_str("# EOF\n");
    out
}

fn with_live_metrics(text: String, live: &crate::live::LiveHub) -> String {
    let mut out = text
        .trim_end()
        .strip_suffix("# EOF")
        .unwrap_or(&text)
        .to_string();
    for (name, kind, help, v) in [
        ("mongopulse_plugin_live_change_streams_opened", "counter", "Change streams opened for live panels (one per data source, again after a lost stream)", live.streams_opened()),
        ("mongopulse_plugin_live_resyncs", "counter", "Times live channels re-read the rollups after a lost change stream", live.resyncs()),
        ("mongopulse_plugin_live_open_feeds", "gauge", "Data sources with a change stream open now", live.open_feeds() as u64),
    ] {
        let suffix = if kind == "counter" { "_total" } else { "" };
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n{name}{suffix} {v}\n"));
    }
    out.push_str("# EOF\n");
    out
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Log filter for the plugin. The SDK records whole requests, decrypted secure
/// settings included, in its debug spans and in an info span around request
/// conversion, so its target is held at `warn` whatever `RUST_LOG` says.
pub fn log_filter(from_env: Option<&str>) -> String {
    let mut directives: Vec<&str> = from_env
        .unwrap_or("info")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains("grafana_plugin_sdk"))
        .collect();
    if directives.is_empty() {
        directives.push("info");
    }
    directives.push("grafana_plugin_sdk=warn");
    directives.join(",")
}

/// Serves the plugin: prints the go-plugin handshake, then answers Grafana
/// until the process is stopped.
pub async fn serve() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::prelude::*;
    // The handshake must be the first and only line on stdout.
    let listener = backend::initialize().await?;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(backend::layer())
        .init();
    let plugin = MongoPulsePlugin::new();
    backend::Plugin::new()
        .diagnostics_service(plugin.clone())
        .data_service(plugin.clone())
        .resource_service(plugin.clone())
        .stream_service(plugin)
        .start(listener)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_logs_are_capped_whatever_rust_log_says() {
        assert_eq!(log_filter(None), "info,grafana_plugin_sdk=warn");
        assert_eq!(
            log_filter(Some("trace,grafana_plugin_sdk=trace")),
            "trace,grafana_plugin_sdk=warn"
        );
    }
}
