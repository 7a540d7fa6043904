//! Broker sources: events consumed from Kafka, NATS JetStream, AMQP 0-9-1 (RabbitMQ) and MQTT.
//!
//! In: the `[[ingest.sources]]` of the configuration, and messages from those
//! brokers (one event, a JSON array or NDJSON, as an HTTP body). Out: events
//! stored and counted exactly as `POST /v1/events` stores them (same validator,
//! same recorder), bad messages in `dead_letters` with their coordinates, and a
//! broker acknowledgement for each message only once MongoDB has acknowledged
//! all of it.
//!
//! [`intake`] is the one message path every broker shares; [`kafka`], [`nats`],
//! [`amqp`] and [`mqtt`] only fetch, acknowledge and say where a message came from. Every
//! event without an id gets `<source>:<coordinate>#<index>`, a coordinate the
//! broker keeps across redeliveries, so the rollups' id ledger (see
//! `rollup::ids`) drops the copies a redelivery brings.

pub mod amqp;
pub mod intake;
pub mod kafka;
pub mod mqtt;
pub mod nats;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::Redactor;
pub use intake::Intake;

/// One `[[ingest.sources]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Kafka(kafka::KafkaConfig),
    Nats(nats::NatsConfig),
    Amqp(amqp::AmqpConfig),
    Mqtt(mqtt::MqttConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Kafka(c) => &c.name,
            SourceConfig::Nats(c) => &c.name,
            SourceConfig::Amqp(c) => &c.name,
            SourceConfig::Mqtt(c) => &c.name,
        }
    }

    /// Checked at start, so a typo stops the daemon instead of a source that never runs.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(format!(
                "ingest.sources: name '{name}' must be letters, digits, '_', '-' or '.' (it names the source in metrics, readiness, dead letters and event ids)"
            ));
        }
        match self {
            SourceConfig::Kafka(c) => c.validate(),
            SourceConfig::Nats(c) => c.validate(),
            SourceConfig::Amqp(c) => c.validate(),
            SourceConfig::Mqtt(c) => c.validate(),
        }
        .map_err(|e| format!("ingest.sources '{name}': {e}"))
    }

    /// The same entry with its secrets masked, for `print-config`.
    pub fn redacted(&self) -> SourceConfig {
        match self {
            SourceConfig::Kafka(c) => SourceConfig::Kafka(c.redacted()),
            SourceConfig::Nats(c) => SourceConfig::Nats(nats::NatsConfig {
                password: c.password.as_ref().map(|_| "****".into()),
                token: c.token.as_ref().map(|_| "****".into()),
                url: nats::masked_url(&c.url),
                ..c.clone()
            }),
            SourceConfig::Amqp(c) => SourceConfig::Amqp(amqp::AmqpConfig {
                url: Redactor::redact_uri(&c.url),
                ..c.clone()
            }),
            SourceConfig::Mqtt(c) => SourceConfig::Mqtt(mqtt::MqttConfig {
                password: c.password.as_ref().map(|_| "****".into()),
                ..c.clone()
            }),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub source: String,
    /// `stored`, `duplicate` or `dead_letter`.
    pub outcome: &'static str,
}

/// What `/metrics` says of each source.
#[derive(Default)]
pub struct SourceMetrics {
    /// Events by outcome.
    pub events: Family<OutcomeLabel, Counter>,
    pub messages_acked: Family<SourceLabel, Counter>,
    /// Messages handed back to the broker's care (not acknowledged) and retried later.
    pub retries: Family<SourceLabel, Counter>,
    /// Messages taken from the broker and not yet acknowledged.
    pub in_flight: Family<SourceLabel, Gauge>,
    /// 1 while connected and consuming, 0 while down.
    pub up: Family<SourceLabel, Gauge>,
    /// Messages the broker holds for this source that it has not acknowledged yet
    /// (Kafka: lag of the assigned partitions; NATS: pending + unacknowledged; AMQP:
    /// ready in the queue), read every few seconds.
    pub backlog: Family<SourceLabel, Gauge>,
    /// Kafka: per assigned partition, high watermark − committed offset.
    pub kafka_lag: Family<kafka::PartitionLabel, Gauge>,
}

impl SourceMetrics {
    pub fn register(registry: &mut Registry) -> Arc<SourceMetrics> {
        let m = Arc::new(SourceMetrics::default());
        let r = registry.sub_registry_with_prefix("source");
        r.register(
            "events",
            "Events taken from broker sources, by outcome (stored, duplicate, dead_letter)",
            m.events.clone(),
        );
        r.register(
            "messages_acked",
            "Broker messages acknowledged (every event stored, a duplicate or dead-lettered)",
            m.messages_acked.clone(),
        );
        r.register(
            "retries",
            "Times a message could not be stored yet (MongoDB slow or down) and was retried unacknowledged",
            m.retries.clone(),
        );
        r.register(
            "in_flight",
            "Messages taken from the broker and not yet acknowledged",
            m.in_flight.clone(),
        );
        r.register(
            "up",
            "1 while the source is connected and consuming, 0 while it is down",
            m.up.clone(),
        );
        r.register(
            "backlog",
            "Messages the broker still holds for this source (Kafka: lag of its partitions; NATS: pending and unacknowledged; AMQP: ready in the queue)",
            m.backlog.clone(),
        );
        r.register(
            "kafka_lag",
            "Kafka consumer lag of each partition this daemon holds: high watermark minus committed offset",
            m.kafka_lag.clone(),
        );
        m
    }

    pub fn label(source: &str) -> SourceLabel {
        SourceLabel {
            source: source.to_string(),
        }
    }
}

/// Starts one task per source; each runs until `stop` turns true, then finishes
/// (or hands back to the broker) the messages it holds and ends.
pub fn start(
    configs: &[SourceConfig],
    intake: Arc<Intake>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    configs
        .iter()
        .map(|c| {
            intake
                .events
                .readiness
                .set_source(c.name(), Some("connecting".into()));
            let intake = intake.clone();
            let stop = stop.clone();
            match c.clone() {
                SourceConfig::Kafka(c) => tokio::spawn(kafka::run(c, intake, stop)),
                SourceConfig::Nats(c) => tokio::spawn(nats::run(c, intake, stop)),
                SourceConfig::Amqp(c) => tokio::spawn(amqp::run(c, intake, stop)),
                SourceConfig::Mqtt(c) => tokio::spawn(mqtt::run(c, intake, stop)),
            }
        })
        .collect()
}

/// Returns once `stop` turns true. The borrow `wait_for` returns must not live
/// across another await of a spawned task (it is not `Send`), so it ends here.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What every source does around its connection: `/metrics`' `up`, readiness, the log
/// line when it goes down, and the wait before reconnecting (250 ms doubling to 10 s).
pub(crate) struct Supervisor {
    broker: &'static str,
    name: String,
    label: SourceLabel,
    intake: Arc<Intake>,
    redactor: Redactor,
    pause: Duration,
    /// Why the source is down, while it is.
    down_since: Option<String>,
}

impl Supervisor {
    /// `url` is only read for the secrets to keep out of the log.
    pub fn new(broker: &'static str, name: &str, url: &str, intake: &Arc<Intake>) -> Self {
        Self::with_redactor(broker, name, Redactor::for_uri(url), intake)
    }

    pub fn with_redactor(
        broker: &'static str,
        name: &str,
        redactor: Redactor,
        intake: &Arc<Intake>,
    ) -> Self {
        Supervisor {
            broker,
            name: name.to_string(),
            label: SourceMetrics::label(name),
            intake: intake.clone(),
            redactor,
            pause: FIRST_RECONNECT,
            down_since: None,
        }
    }

    /// The source is connected and consuming.
    pub fn up(&mut self) {
        self.intake.metrics.up.get_or_create(&self.label).set(1);
        self.intake.events.readiness.set_source(&self.name, None);
        self.pause = FIRST_RECONNECT;
        if self.down_since.take().is_some() {
            tracing::info!(source = self.name, "{} source up again", self.broker);
        }
    }

    /// The source cannot reach its broker (`why`): `/metrics`, readiness, and a log
    /// line when the reason is new.
    pub fn report_down(&mut self, why: &str) {
        let why = self.redactor.clean(why);
        let (broker, name) = (self.broker, self.name.as_str());
        self.intake.metrics.up.get_or_create(&self.label).set(0);
        if self.down_since.as_deref() != Some(why.as_str()) {
            tracing::warn!(source = name, "{broker} source down: {why}; reconnecting");
        }
        self.intake
            .events
            .readiness
            .set_source(name, Some(format!("{broker}: {why}")));
        self.down_since = Some(why);
    }

    /// The source lost its broker (`why`); waits before the next try. `false` if
    /// `stop` turned true meanwhile.
    pub async fn down(&mut self, why: &str, stop: &mut watch::Receiver<bool>) -> bool {
        self.report_down(why);
        let pause = self.pause;
        self.pause = (self.pause * 2).min(LONGEST_RECONNECT);
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = stopped(stop) => false,
        }
    }

    pub fn stopped(&self) {
        self.intake.metrics.up.get_or_create(&self.label).set(0);
        tracing::info!(source = self.name, "{} source stopped", self.broker);
    }
}

const FIRST_RECONNECT: Duration = Duration::from_millis(250);
const LONGEST_RECONNECT: Duration = Duration::from_secs(10);
