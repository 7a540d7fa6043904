//! AMQP 0-9-1 (RabbitMQ): a queue consumed with manual acks and a bounded prefetch.
//!
//! In: deliveries of one queue. Out: each one handed to [`Intake::settle`] and
//! acknowledged once settled; on stop, those still waiting are given back
//! (`nack` with requeue). AMQP has no coordinate that survives a redelivery but
//! the message itself: a message's coordinate is its `message_id` property when
//! the publisher sets one, else a 128-bit hash of its body.

use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::intake::{Intake, Message, Settled};
use super::{stopped, SourceMetrics, Supervisor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Names the source in metrics, readiness, dead letters and event ids; every
    /// daemon sharing this queue must give it the same name.
    pub name: String,
    /// `amqp://user:password@host:5672/vhost` (`amqps://` for TLS); the vhost `/` is `%2f`.
    #[serde(default = "default_url")]
    pub url: String,
    pub queue: String,
    /// Declares the queue (durable) if it does not exist.
    #[serde(default = "yes")]
    pub declare: bool,
    /// Deliveries the broker sends before any is acknowledged (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
}

fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn yes() -> bool {
    true
}
fn default_prefetch() -> u16 {
    256
}

impl AmqpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.queue.is_empty() {
            return Err("queue must name the queue to consume".into());
        }
        if self.prefetch == 0 {
            return Err("prefetch must be at least 1 (0 would mean no bound)".into());
        }
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err("url must start with amqp:// or amqps://".into());
        }
        Ok(())
    }
}

/// Consumes until `stop`, reconnecting with backoff whenever the broker goes away.
pub async fn run(c: AmqpConfig, intake: Arc<Intake>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(c.prefetch as usize));
    let mut tasks = JoinSet::new();
    let mut supervisor = Supervisor::new("AMQP", &c.name, &c.url, &intake);
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

async fn open(c: &AmqpConfig) -> Result<(Connection, Channel), String> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("mongopulsed source {}", c.name).into());
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&c.url, properties),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_string())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    channel
        .basic_qos(c.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("basic.qos: {e}"))?;
    Ok((connection, channel))
}

async fn consume(
    c: &AmqpConfig,
    intake: &Arc<Intake>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    stop: &mut watch::Receiver<bool>,
    supervisor: &mut Supervisor,
) -> Result<(), String> {
    let (connection, channel) = open(c).await?;
    let declare = QueueDeclareOptions {
        durable: true,
        passive: !c.declare,
        ..Default::default()
    };
    channel
        .queue_declare(c.queue.as_str().into(), declare, FieldTable::default())
        .await
        .map_err(|e| {
            format!(
                "queue '{}': {e}{}",
                c.queue,
                if c.declare {
                    ""
                } else {
                    " (declare = false: it must exist)"
                }
            )
        })?;
    let mut deliveries = channel
        .basic_consume(
            c.queue.as_str().into(),
            format!("mongopulsed-{}", c.name).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume queue '{}': {e}", c.queue))?;

    let label = SourceMetrics::label(&c.name);
    supervisor.up();
    tracing::info!(source = c.name, "consuming AMQP queue '{}'", c.queue);
    let mut backlog_tick = tokio::time::interval(Duration::from_secs(2));
    let outcome = loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = stopped(stop) => break Ok(()),
        };
        let next = loop {
            tokio::select! {
                d = deliveries.next() => break Some(d),
                _ = stopped(stop) => break None,
                _ = backlog_tick.tick() => {
                    // A passive declare answers with the count of ready messages.
                    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                    if let Ok(q) = channel
                        .queue_declare(c.queue.as_str().into(), passive, FieldTable::default())
                        .await
                    {
                        intake.metrics.backlog.get_or_create(&label).set(q.message_count() as i64);
                    }
                }
            }
        };
        let delivery = match next {
            None => break Ok(()),
            Some(Some(Ok(d))) => d,
            Some(Some(Err(e))) => break Err(format!("consuming: {e}")),
            Some(None) => break Err("the broker cancelled the consumer".into()),
        };
        while tasks.try_join_next().is_some() {}
        let (intake, c, mut stop) = (intake.clone(), c.clone(), stop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            take_one(&intake, &c, delivery, &mut stop).await;
        });
    };
    if outcome.is_ok() {
        // Stopping: let the waiting deliveries give themselves back first.
        while tasks.join_next().await.is_some() {}
        let _ = connection.close(200, "mongopulsed stopping".into()).await;
    }
    outcome
}

async fn take_one(
    intake: &Intake,
    c: &AmqpConfig,
    delivery: lapin::message::Delivery,
    stop: &mut watch::Receiver<bool>,
) {
    let source = c.name.as_str();
    let label = SourceMetrics::label(source);
    let in_flight = intake.metrics.in_flight.get_or_create(&label).clone();
    in_flight.inc();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_string());
    let coordinate = match &message_id {
        Some(id) => format!("id:{id}"),
        None => format!("body:{:032x}", xxhash_rust::xxh3::xxh3_128(&delivery.data)),
    };
    let m = Message {
        source,
        body: &delivery.data,
        id_prefix: format!("{source}:{coordinate}"),
        origin: doc! {
            "source": source,
            "kind": "amqp",
            "queue": &c.queue,
            "exchange": delivery.exchange.as_str(),
            "routingKey": delivery.routing_key.as_str(),
            "deliveryTag": delivery.delivery_tag as i64,
            "messageId": message_id,
            "redelivered": delivery.redelivered,
        },
        redelivered: delivery.redelivered,
    };
    match intake.settle(&m, stop).await {
        Settled::Ack => match delivery.ack(BasicAckOptions::default()).await {
            Ok(_) => {
                intake.metrics.messages_acked.get_or_create(&label).inc();
            }
            // Redelivered later, and then found stored: nothing is counted twice.
            Err(e) => tracing::warn!(source, "could not acknowledge a stored message: {e}"),
        },
        Settled::Unacked => {
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = delivery.nack(requeue).await;
        }
    }
    in_flight.dec();
}
