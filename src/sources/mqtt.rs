//! MQTT 3.1.1: topics subscribed at QoS 1 in a persistent session, manual acks.
//!
//! In: PUBLISH packets of the subscribed topics. Out: each one handed to
//! [`Intake::settle`]; its PUBACK is sent once it is settled, in the order the
//! packets came (as MQTT requires). The broker keeps the session (and what it
//! has not had a PUBACK for) while the daemon is away, and resends those with
//! DUP set. MQTT has no coordinate that survives a redelivery but the message
//! itself: a message's coordinate is a 128-bit hash of its topic and payload.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::intake::{Intake, Message, Settled};
use super::{stopped, SourceMetrics, Supervisor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Names the source in metrics, readiness, dead letters and event ids.
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Topic filters subscribed at QoS 1 (`events/#`).
    pub topics: Vec<String>,
    /// The persistent session's client id: the broker keeps what this client has
    /// not acknowledged under it, so give each daemon its own and keep it.
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> u64 {
    30
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return Err("topics must list at least one topic filter".into());
        }
        if self.client_id.is_empty() || self.client_id.len() > 23 {
            return Err("client_id must be 1 to 23 characters (MQTT 3.1.1)".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("a password needs a username".into());
        }
        if self.keep_alive_secs < 5 {
            return Err("keep_alive_secs must be at least 5".into());
        }
        Ok(())
    }
}

/// Messages handed to `settle` and not yet acknowledged, oldest first, with the
/// connection each came on.
type Pending = VecDeque<(JoinHandle<Settled>, Publish, u64)>;

/// Consumes until `stop`; the client reconnects (with backoff) whenever the broker goes away.
pub async fn run(c: MqttConfig, intake: Arc<Intake>, mut stop: watch::Receiver<bool>) {
    let label = SourceMetrics::label(&c.name);
    let mut options = MqttOptions::new(c.client_id.clone(), c.host.clone(), c.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(c.keep_alive_secs));
    let largest = intake.events.validator.limits.max_body_bytes + 1024;
    options.set_max_packet_size(largest, largest);
    if let Some(user) = &c.username {
        options.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let mut pending: Pending = VecDeque::new();
    // A packet id names a message only within its connection: a PUBACK for one that
    // came before a reconnect could acknowledge another message; the broker resends
    // those anyway (DUP), and they are then found stored.
    let mut connection = 0u64;
    // The redactor learns the password from a URL of the same shape as the others.
    let as_url = format!(
        "mqtt://{}:{}@{}:{}",
        c.username.as_deref().unwrap_or(""),
        c.password.as_deref().unwrap_or(""),
        c.host,
        c.port
    );
    let mut supervisor = Supervisor::new("MQTT", &c.name, &as_url, &intake);
    loop {
        tokio::select! {
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connection += 1;
                    let subscribed = client
                        .try_subscribe_many(c.topics.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)));
                    if let Err(e) = subscribed {
                        tracing::warn!(source = c.name, "cannot subscribe: {e}");
                        continue;
                    }
                    supervisor.up();
                    tracing::info!(source = c.name, "consuming MQTT topics {:?} as '{}'", c.topics, c.client_id);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let (taker, name, mut stop) = (intake.clone(), c.name.clone(), stop.clone());
                    let message = publish.clone();
                    pending.push_back((
                        tokio::spawn(async move { take_one(&taker, &name, &message, &mut stop).await }),
                        publish,
                        connection,
                    ));
                    intake.metrics.in_flight.get_or_create(&label).set(pending.len() as i64);
                }
                Ok(_) => {}
                Err(e) => {
                    if !supervisor.down(&e.to_string(), &mut stop).await {
                        break;
                    }
                }
            },
            settled = oldest(&mut pending) => {
                // `oldest` only resolves when there is one.
                let Some((_, publish, on)) = pending.pop_front() else { continue };
                if on == connection {
                    acknowledge(&intake, &c.name, &client, &publish, settled);
                }
                intake.metrics.in_flight.get_or_create(&label).set(pending.len() as i64);
            }
            _ = stopped(&mut stop) => break,
        }
    }
    // Stop: those waiting return at once (unacknowledged, resent next session);
    // PUBACK the settled ones in order and let the event loop send them.
    while let Some((task, publish, on)) = pending.pop_front() {
        let settled = task.await.unwrap_or(Settled::Unacked);
        if on == connection {
            acknowledge(&intake, &c.name, &client, &publish, settled);
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                break;
            }
        }
    })
    .await;
    supervisor.stopped();
}

/// The oldest message's outcome (never, if there is none).
async fn oldest(pending: &mut Pending) -> Settled {
    match pending.front_mut() {
        Some((task, _, _)) => task.await.unwrap_or(Settled::Unacked),
        None => std::future::pending().await,
    }
}

/// Queues the PUBACK without waiting: the event loop that sends it is the caller's
/// own loop, so waiting for room in its queue could wait for itself.
fn acknowledge(
    intake: &Intake,
    source: &str,
    client: &AsyncClient,
    publish: &Publish,
    settled: Settled,
) {
    if settled != Settled::Ack {
        // No PUBACK: the broker resends it at the next session.
        return;
    }
    match client.try_ack(publish) {
        Ok(()) => {
            intake
                .metrics
                .messages_acked
                .get_or_create(&SourceMetrics::label(source))
                .inc();
        }
        // Resent by the broker later, and then found stored.
        Err(e) => tracing::warn!(source, "could not acknowledge a stored message: {e}"),
    }
}

async fn take_one(
    intake: &Intake,
    source: &str,
    publish: &Publish,
    stop: &mut watch::Receiver<bool>,
) -> Settled {
    let mut identity = xxhash_rust::xxh3::Xxh3::new();
    identity.update(publish.topic.as_bytes());
    identity.update(&[0]);
    identity.update(&publish.payload);
    let m = Message {
        source,
        body: &publish.payload,
        id_prefix: format!("{source}:{:032x}", identity.digest128()),
        origin: doc! {
            "source": source,
            "kind": "mqtt",
            "topic": &publish.topic,
            "packetId": publish.pkid as i32,
            "dup": publish.dup,
        },
        redelivered: publish.dup,
    };
    intake.settle(&m, stop).await
}
