//! NATS JetStream: a durable pull consumer with explicit acks.
//!
//! In: messages of a stream. Out: each one handed to [`Intake::settle`] and
//! acknowledged only once it is settled; on stop, those still waiting are
//! given back (`nak`) for the next run. A message's coordinate is its stream
//! sequence, which every redelivery keeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use bson::doc;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::intake::{Intake, Message, Settled};
use super::{stopped, SourceMetrics, Supervisor};
use crate::store::Redactor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Names the source in metrics, readiness, dead letters and event ids; every
    /// daemon sharing this consumer must give it the same name.
    pub name: String,
    #[serde(default = "default_url")]
    pub url: String,
    /// The JetStream stream to consume.
    pub stream: String,
    /// When set, the stream is created with these subjects if it does not exist.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The durable consumer's name; daemons sharing it share the messages.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Only messages of this subject (empty: all of the stream).
    #[serde(default)]
    pub filter_subject: String,
    /// Seconds the server waits for an ack before redelivering.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_secs: f64,
    /// Messages taken and not yet acknowledged (the consumer's `max_ack_pending`).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub tls_required: bool,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub root_certificate: Option<PathBuf>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_consumer() -> String {
    "mongopulse".into()
}
fn default_ack_wait() -> f64 {
    30.0
}
fn default_in_flight() -> usize {
    256
}

impl NatsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.stream.is_empty() {
            return Err("stream must name the JetStream stream to consume".into());
        }
        if self.consumer.is_empty() {
            return Err("consumer must not be empty".into());
        }
        let w = self.ack_wait_secs;
        if !(w.is_finite() && w >= 1.0) {
            return Err(format!("ack_wait_secs must be at least 1, got {w}"));
        }
        if !(1..=65_535).contains(&self.max_in_flight) {
            return Err(format!(
                "max_in_flight must be between 1 and 65535, got {}",
                self.max_in_flight
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err("user and password go together".into());
        }
        Ok(())
    }
}

/// The token of a `nats://TOKEN@host` URL (userinfo without a password).
fn url_token(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    (!userinfo.contains(':') && !userinfo.is_empty()).then_some(userinfo)
}

/// The URL with its password or token masked, for logs, errors and `print-config`.
pub fn masked_url(url: &str) -> String {
    match url_token(url) {
        Some(token) => url.replacen(&format!("{token}@"), "****@", 1),
        None => Redactor::redact_uri(url),
    }
}

/// Consumes until `stop`, reconnecting with backoff whenever the broker goes away.
pub async fn run(c: NatsConfig, intake: Arc<Intake>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(c.max_in_flight));
    let mut tasks = JoinSet::new();
    // The redactor learns the secret from the fields that hold it, or from the URL.
    let secret_url = match c
        .password
        .as_deref()
        .or(c.token.as_deref())
        .or(url_token(&c.url))
    {
        Some(secret) => format!(
            "nats://{}:{secret}@server",
            c.user.as_deref().unwrap_or("token")
        ),
        None => c.url.clone(),
    };
    let mut supervisor = Supervisor::new("NATS", &c.name, &secret_url, &intake);
    while let Err(why) = consume(&c, &intake, &slots, &mut tasks, &mut stop, &mut supervisor).await
    {
        if !supervisor.down(&why, &mut stop).await {
            break;
        }
    }
    // Those still waiting give their messages back on stop (see `settle`).
    while tasks.join_next().await.is_some() {}
    supervisor.stopped();
}

async fn consume(
    c: &NatsConfig,
    intake: &Arc<Intake>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    stop: &mut watch::Receiver<bool>,
    supervisor: &mut Supervisor,
) -> Result<(), String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("mongopulsed source {}", c.name))
        .connection_timeout(Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&c.user, &c.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &c.token {
        options = options.token(token.clone());
    }
    if c.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &c.root_certificate {
        options = options.add_root_certificates(ca.clone());
    }
    let client = options
        .connect(c.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", masked_url(&c.url)))?;
    let js = jetstream::new(client);
    let stream = if c.subjects.is_empty() {
        js.get_stream(&c.stream).await.map_err(|e| {
            format!(
                "stream '{}': {e}; create it, or set `subjects` so the daemon creates it",
                c.stream
            )
        })?
    } else {
        js.get_or_create_stream(stream::Config {
            name: c.stream.clone(),
            subjects: c.subjects.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream '{}': {e}", c.stream))?
    };
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &c.consumer,
            consumer::pull::Config {
                durable_name: Some(c.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs_f64(c.ack_wait_secs),
                max_ack_pending: c.max_in_flight as i64,
                filter_subject: c.filter_subject.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer '{}': {e}", c.consumer))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(c.max_in_flight.min(1000))
        .messages()
        .await
        .map_err(|e| format!("cannot pull from consumer '{}': {e}", c.consumer))?;

    let label = SourceMetrics::label(&c.name);
    supervisor.up();
    tracing::info!(
        source = c.name,
        "consuming NATS stream '{}' as '{}'",
        c.stream,
        c.consumer
    );
    let mut backlog_tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = stopped(stop) => return Ok(()),
        };
        let next = loop {
            tokio::select! {
                m = messages.next() => break m,
                _ = stopped(stop) => return Ok(()),
                _ = backlog_tick.tick() => {
                    // The server's count, so a lag shows even while nothing is fetched.
                    if let Ok(info) = consumer.info().await {
                        let held = info.num_pending + info.num_ack_pending as u64;
                        intake.metrics.backlog.get_or_create(&label).set(held as i64);
                    }
                }
            }
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(format!("pulling messages: {e}")),
            None => return Err("the consumer's message stream ended".into()),
        };
        while tasks.try_join_next().is_some() {}
        let (intake, name, mut stop) = (intake.clone(), c.name.clone(), stop.clone());
        let ack_wait_secs = c.ack_wait_secs;
        tasks.spawn(async move {
            let _permit = permit;
            take_one(&intake, &name, ack_wait_secs, message, &mut stop).await;
        });
    }
}

async fn take_one(
    intake: &Intake,
    source: &str,
    ack_wait_secs: f64,
    message: jetstream::Message,
    stop: &mut watch::Receiver<bool>,
) {
    let label = SourceMetrics::label(source);
    let in_flight = intake.metrics.in_flight.get_or_create(&label).clone();
    in_flight.inc();
    let (sequence, delivered, stream) = match message.info() {
        Ok(i) => (i.stream_sequence, i.delivered, i.stream.to_string()),
        Err(e) => {
            // Not a JetStream delivery (no ack subject): nothing to settle or acknowledge.
            tracing::warn!(source, "ignored a message without JetStream metadata: {e}");
            in_flight.dec();
            return;
        }
    };
    let m = Message {
        source,
        body: &message.payload,
        id_prefix: format!("{source}:{sequence}"),
        origin: doc! {
            "source": source,
            "kind": "nats",
            "stream": &stream,
            "subject": message.subject.as_str(),
            "sequence": sequence as i64,
            "delivered": delivered,
        },
        redelivered: delivered > 1,
    };
    // While it waits (MongoDB down), tell the server it is being worked on, so it is
    // not redelivered to another daemon sharing the consumer meanwhile.
    let settled = {
        let settle = intake.settle(&m, stop);
        tokio::pin!(settle);
        let mut progress = tokio::time::interval(Duration::from_secs_f64(ack_wait_secs / 2.0));
        progress.tick().await;
        loop {
            tokio::select! {
                s = &mut settle => break s,
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    };
    match settled {
        Settled::Ack => match message.ack().await {
            Ok(()) => {
                intake.metrics.messages_acked.get_or_create(&label).inc();
            }
            // Redelivered later, and then found stored: nothing is counted twice.
            Err(e) => tracing::warn!(
                source,
                sequence,
                "could not acknowledge a stored message: {e}"
            ),
        },
        Settled::Unacked => {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
    in_flight.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_or_password_in_the_url_is_masked() {
        assert_eq!(
            masked_url("nats://s3cr3t@nats:4222"),
            "nats://****@nats:4222"
        );
        assert_eq!(url_token("nats://s3cr3t@nats:4222"), Some("s3cr3t"));
        assert!(!masked_url("nats://u:pw-9@nats:4222").contains("pw-9"));
        assert_eq!(masked_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(url_token("nats://127.0.0.1:4222"), None);
    }
}
