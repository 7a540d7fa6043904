//! The plugin's own metrics, served to Grafana through CollectMetrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct PluginMetrics {
    registry: Registry,
    queries_ok: Counter,
    queries_failed: Counter,
    query_seconds: Histogram,
    pub clients_built: Counter,
    health_ok: Counter,
    health_failed: Counter,
}

impl PluginMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mongopulse_plugin");
        let clients_built = Counter::default();
        registry.register(
            "clients_built",
            "MongoDB clients built (one per data source, again when its settings change)",
            clients_built.clone(),
        );
        let health_ok = Counter::default();
        registry.register(
            "health_checks_ok",
            "CheckHealth calls that succeeded",
            health_ok.clone(),
        );
        let health_failed = Counter::default();
        registry.register(
            "health_checks_failed",
            "CheckHealth calls that failed",
            health_failed.clone(),
        );
        let queries_ok = Counter::default();
        registry.register("queries_ok", "Queries answered", queries_ok.clone());
        let queries_failed = Counter::default();
        registry.register(
            "queries_failed",
            "Queries answered with an error",
            queries_failed.clone(),
        );
        let query_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "query_duration_seconds",
            "Time to answer one query",
            query_seconds.clone(),
        );
        PluginMetrics {
            registry,
            queries_ok,
            queries_failed,
            query_seconds,
            clients_built,
            health_ok,
            health_failed,
        }
    }

    pub fn health_checks(&self, ok: bool) -> &Counter {
        if ok {
            &self.health_ok
        } else {
            &self.health_failed
        }
    }

    pub fn observe_query(&self, ok: bool, took: std::time::Duration) {
        if ok {
            &self.queries_ok
        } else {
            &self.queries_failed
        }
        .inc();
        self.query_seconds.observe(took.as_secs_f64());
    }

    /// Queries answered and failed since start.
    pub fn queries(&self) -> (u64, u64) {
        (self.queries_ok.get(), self.queries_failed.get())
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
