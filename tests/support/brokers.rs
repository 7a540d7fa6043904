//! The brokers of the source tests and benchmark (`tests/sources.rs`,
//! `benches/source_throughput.rs`): their test clients (publishers, and what the
//! broker says of its consumers), and the daemon started with a source entry.
//! Addresses default to the loopback brokers `scripts/brokers.sh` starts.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use chrono::Utc;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::Value;

use super::daemon::{seed_event, Daemon};
use super::mongo::TestMongo;

pub fn nats_url() -> String {
    std::env::var("MONGOPULSE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn amqp_url() -> String {
    std::env::var("MONGOPULSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or earlier run) uses: streams and queues outlive a run.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default() % 1_000_000_000
    )
}

/// Starts the daemon with `sources` (TOML of `[[ingest.sources]]` entries) in a config file.
pub async fn daemon_with(mongo: &TestMongo, sources: &str, env: &[(&str, &str)]) -> Daemon {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.toml", unique("sources")));
    std::fs::write(&path, sources).expect("write the daemon's config file");
    let path = path.display().to_string();
    // Every event of a test is stamped in one minute, just before the test starts.
    // With the default lateness (120 s, then 60 s idle) that minute becomes final about
    // three minutes in, and what is not stored by then is dead-lettered as late: on a
    // busy machine with SecantusDB a two-daemon test still works through its backlog
    // then. These tests are about delivery, not lateness: an hour of it.
    let mut all = vec![
        ("MONGOPULSE_CONFIG", path.as_str()),
        ("MONGOPULSE__ROLLUPS__ALLOWED_LATENESS_SECS", "3600"),
    ];
    all.extend_from_slice(env);
    Daemon::start(mongo, &all).await
}

/// The messages of a test: `seq`s spread over single events, arrays and NDJSON.
pub fn bodies(seqs: std::ops::Range<usize>, at: chrono::DateTime<Utc>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = seqs.start;
    let mut shape = 0;
    while seq < seqs.end {
        let n = [1, 3, 2][shape % 3].min(seqs.end - seq);
        let events: Vec<Value> = (seq..seq + n).map(|s| seed_event(s, at)).collect();
        out.push(match shape % 3 {
            0 => events[0].to_string().into_bytes(),
            1 => Value::Array(events).to_string().into_bytes(),
            _ => events
                .iter()
                .map(|e| format!("{e}\n"))
                .collect::<String>()
                .into_bytes(),
        });
        seq += n;
        shape += 1;
    }
    out
}

/// The sample `selector` names in a `/metrics` text (labels in any order), 0 if absent.
pub fn metric(text: &str, selector: &str) -> f64 {
    super::prom::value(text, selector).unwrap_or(0.0)
}

pub struct Nats {
    pub js: jetstream::Context,
    pub stream: String,
    pub subject: String,
}

impl Nats {
    pub async fn new() -> Nats {
        let client = async_nats::connect(nats_url()).await.unwrap_or_else(|e| {
            panic!(
                "NATS is not answering at {} ({e}); .ci/run starts it",
                nats_url()
            )
        });
        let js = jetstream::new(client);
        let stream = unique("PULSE");
        let subject = format!("{}.events", stream.to_lowercase());
        js.create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("create the test's stream");
        Nats {
            js,
            stream,
            subject,
        }
    }

    pub async fn publish(&self, bodies: &[Vec<u8>]) {
        // In windows: the client bounds the publish acknowledgements awaited at once,
        // and a publish waits for room among them.
        for window in bodies.chunks(256) {
            let mut acks = Vec::with_capacity(window.len());
            for b in window {
                acks.push(
                    self.js
                        .publish(self.subject.clone(), b.clone().into())
                        .await
                        .expect("publish"),
                );
            }
            for a in acks {
                a.await.expect("the stream stored the message");
            }
        }
    }

    pub fn source(&self, extra: &str) -> String {
        format!(
            "[[ingest.sources]]\nkind = \"nats\"\nname = \"clicks\"\nurl = \"{}\"\nstream = \"{}\"\nack_wait_secs = 2\n{extra}\n",
            nats_url(),
            self.stream
        )
    }

    /// (messages not yet delivered, delivered and not acknowledged, last acked stream seq).
    pub async fn consumer_state(&self) -> (u64, usize, u64) {
        let stream = self.js.get_stream(&self.stream).await.expect("stream");
        let mut c: consumer::PullConsumer =
            stream.get_consumer("mongopulse").await.expect("consumer");
        let info = c.info().await.expect("consumer info");
        (
            info.num_pending,
            info.num_ack_pending,
            info.ack_floor.stream_sequence,
        )
    }

    pub async fn wait_all_acked(&self) {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let (pending, unacked, _) = self.consumer_state().await;
            if pending == 0 && unacked == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never all acknowledged: {pending} pending, {unacked} unacked"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

pub struct Rabbit {
    connection: lapin::Connection,
    pub channel: lapin::Channel,
    pub queue: String,
}

impl Rabbit {
    pub async fn new() -> Rabbit {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ is not answering ({e}); .ci/run starts it"));
        let channel = conn.create_channel().await.expect("channel");
        let queue = unique("pulse");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await
            .expect("declare the test's queue");
        Rabbit {
            connection: conn,
            channel,
            queue,
        }
    }

    pub async fn publish(&self, bodies: &[Vec<u8>]) {
        for b in bodies {
            self.channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    b,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
        }
    }

    /// Messages in the queue (ready, or delivered and unacknowledged), per a passive declare
    /// (ready) and the consumer count. RabbitMQ's `message_count` holds only the ready ones.
    pub async fn ready(&self) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
            .expect("queue")
            .message_count()
    }

    /// The bodies the queue holds once no consumer is left (a killed daemon's
    /// unacknowledged deliveries are back in it by then), read on a channel of their
    /// own and all given back when it closes.
    pub async fn held_once_no_consumer(&self) -> Vec<Vec<u8>> {
        use futures_util::StreamExt;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let deadline = Instant::now() + super::PATIENCE;
        let held = loop {
            let q = self
                .channel
                .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
                .await
                .expect("queue");
            if q.consumer_count() == 0 {
                break q.message_count() as usize;
            }
            assert!(Instant::now() < deadline, "the queue keeps a consumer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let reader = self.connection.create_channel().await.expect("channel");
        let mut deliveries = reader
            .basic_consume(
                self.queue.as_str().into(),
                "inspector".into(),
                lapin::options::BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume the queue");
        let mut bodies = Vec::with_capacity(held);
        while bodies.len() < held {
            let d = tokio::time::timeout(super::PATIENCE, deliveries.next())
                .await
                .expect("the queue's messages arrive")
                .expect("a delivery")
                .expect("a delivery without error");
            bodies.push(d.data);
        }
        // Closing the channel requeues everything it was given and did not acknowledge.
        reader.close(200, "inspected".into()).await.expect("close");
        bodies
    }

    pub fn source(&self) -> String {
        format!(
            "[[ingest.sources]]\nkind = \"amqp\"\nname = \"orders\"\nurl = \"{}\"\nqueue = \"{}\"\nprefetch = 64\n",
            amqp_url(),
            self.queue
        )
    }

    pub async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// A publisher at QoS 1 that waits for the broker's PUBACK of everything it sent.
pub struct Mqtt {
    pub client: rumqttc::AsyncClient,
    pub acked: tokio::sync::watch::Receiver<usize>,
    pub sent: usize,
    pub topic: String,
}

pub fn mqtt_port() -> u16 {
    std::env::var("MONGOPULSE_TEST_MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883)
}

impl Mqtt {
    pub async fn new() -> Mqtt {
        let id = unique("pub");
        let topic = format!("pulse/{id}/events");
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", mqtt_port());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
        let (count, acked) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        count.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("test MQTT publisher: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Mqtt {
            client,
            acked,
            sent: 0,
            topic,
        }
    }

    pub async fn publish(&mut self, bodies: &[Vec<u8>]) {
        for b in bodies {
            self.client
                .publish(&self.topic, rumqttc::QoS::AtLeastOnce, false, b.clone())
                .await
                .expect("publish");
            self.sent += 1;
        }
        let want = self.sent;
        tokio::time::timeout(super::PATIENCE, self.acked.wait_for(|n| *n >= want))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "Mosquitto is not answering on 127.0.0.1:{} (.ci/run starts it)",
                    mqtt_port()
                )
            })
            .expect("publisher");
    }

    pub fn source(&self, client_id: &str) -> String {
        format!(
            "[[ingest.sources]]\nkind = \"mqtt\"\nname = \"devices\"\nport = {}\ntopics = [\"{}\"]\nclient_id = \"{client_id}\"\n",
            mqtt_port(),
            self.topic
        )
    }
}

/// Starts a daemon whose MQTT source is subscribed (MQTT keeps nothing for a session
/// that never subscribed).
pub async fn mqtt_daemon(mongo: &TestMongo, config: &str) -> Daemon {
    let daemon = daemon_with(mongo, config, &[]).await;
    super::until("the MQTT source is subscribed", || async {
        metric(
            &daemon.metrics().await,
            "mongopulse_source_up{source=\"devices\"}",
        ) == 1.0
    })
    .await;
    daemon
}

/// A Kafka-protocol broker: librdkafka's mock cluster, in the test's process, reached
/// by the daemons over TCP on loopback like any broker; or the brokers in
/// `MONGOPULSE_TEST_KAFKA_BROKERS` (a real cluster) when that is set.
pub struct Kafka {
    /// The mock brokers (broker id 1), kept running; `None` on a real cluster.
    pub mock:
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    pub producer: rdkafka::producer::FutureProducer,
}

impl Kafka {
    /// A topic of `partitions` partitions, new to this test.
    pub async fn new(partitions: i32) -> Kafka {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let topic = unique("pulse");
        let (mock, brokers) = match std::env::var("MONGOPULSE_TEST_KAFKA_BROKERS") {
            Ok(brokers) => {
                let admin: AdminClient<_> = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .expect("Kafka admin client");
                let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
                admin
                    .create_topics([&new], &AdminOptions::new())
                    .await
                    .expect("create the test's topic");
                (None, brokers)
            }
            Err(_) => {
                let mock = rdkafka::mocking::MockCluster::new(1).expect("Kafka mock cluster");
                mock.create_topic(&topic, partitions, 1)
                    .expect("create the test's topic");
                let brokers = mock.bootstrap_servers();
                (Some(mock), brokers)
            }
        };
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("Kafka producer");
        Kafka {
            mock,
            brokers,
            group: unique("group"),
            topic,
            partitions,
            producer,
        }
    }

    /// Publishes `bodies`, message i to partition i % partitions, each waited for
    /// until the broker acknowledged it.
    pub async fn publish(&self, bodies: &[Vec<u8>]) {
        publish_kafka(&self.producer, &self.topic, self.partitions, bodies).await;
    }

    pub fn source(&self, extra: &str) -> String {
        format!(
            "[[ingest.sources]]\nkind = \"kafka\"\nname = \"views\"\nbrokers = \"{}\"\ntopics = [\"{}\"]\ngroup_id = \"{}\"\n{extra}\n[ingest.sources.options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            self.brokers, self.topic, self.group
        )
    }

    /// The group's committed offset of each partition (`-1`: none), as Kafka holds them.
    pub fn committed(&self) -> Vec<i64> {
        let partitions = self.partitions;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("Kafka consumer");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&self.topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("the group's committed offsets");
        (0..partitions)
            .map(
                |p| match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect()
    }

    /// Messages in each partition (high watermark), as Kafka holds them.
    pub fn ends(&self) -> Vec<i64> {
        let partitions = self.partitions;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("Kafka consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Waits until the group committed every message of every partition.
    pub async fn wait_all_committed(&self) {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let (committed, ends) = (self.committed(), self.ends());
            // A partition that never held a message has nothing to commit (-1).
            if committed
                .iter()
                .zip(&ends)
                .all(|(c, e)| c == e || (*c == -1 && *e == 0))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never all committed: committed {committed:?}, ends {ends:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Publishes round-robin over the topic's `partitions`, waiting for every
/// acknowledgement of a window before the next.
pub async fn publish_kafka(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partitions: i32,
    bodies: &[Vec<u8>],
) {
    use rdkafka::producer::FutureRecord;
    for (w, window) in bodies.chunks(512).enumerate() {
        let mut sends = Vec::with_capacity(window.len());
        for (i, b) in window.iter().enumerate() {
            let partition = ((w * 512 + i) % partitions as usize) as i32;
            let record = FutureRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(b.as_slice());
            match producer.send_result(record) {
                Ok(delivery) => sends.push(delivery),
                Err((e, _)) => panic!("could not queue a message for Kafka: {e}"),
            }
        }
        for s in sends {
            s.await
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("Kafka stored the message");
        }
    }
}
