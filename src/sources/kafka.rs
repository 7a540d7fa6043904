//! Kafka: topics consumed in a consumer group; a partition's offset is committed
//! only up to its first message not yet stored.
//!
//! In: the messages of the partitions the group assigns to this daemon. Out: each
//! one handed to [`Intake::settle`], and offsets committed (synchronously, so
//! Kafka holds them) up to the first message not yet settled. A rebalance first
//! lets the messages of the partitions being taken away settle, commits them, and
//! only then hands the partitions over.
//!
//! librdkafka's consumer and its rebalance callbacks are blocking, so the consumer
//! lives on a thread of its own ([`poll_loop`]); the messages go to tokio tasks
//! and their outcomes come back over a channel.
//!
//! Deduplication. A message's coordinate is `topic/partition/offset`, which every
//! redelivery keeps. Kafka never says whether a message was delivered before, so
//! the daemon bounds where copies can be: it takes offset `o` of a partition only
//! once Kafka holds a commit at or past `o - max_in_flight` ([`Partition`]).
//! Whoever held the partition before — a daemon killed with SIGKILL, or one that
//! lost it in a rebalance — cannot have stored a message past the commit it left
//! plus `max_in_flight`; so the first `max_in_flight` messages of a partition after
//! it is assigned are looked up in `events` before they are stored, and no other.
//! Not even those when the commit says no copy can exist ([`Previous`]): a holder
//! that handed the partition over with every message it took stored marks its last
//! commit `clean`, and a partition Kafka holds no commit for was never taken from,
//! since a holder commits a partition's first offset before it takes anything.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::doc;
use prometheus_client::encoding::EncodeLabelSet;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::intake::{Intake, Message, Settled};
use super::{SourceMetrics, Supervisor};
use crate::store::Redactor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Names the source in metrics, readiness, dead letters and event ids; every
    /// daemon of one consumer group must give it the same name.
    pub name: String,
    /// `host:port[,host:port…]`: librdkafka's `bootstrap.servers`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group; daemons sharing it split the partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Messages of one partition taken and not yet committed. Also the redelivery
    /// window: after an assignment, this many messages of the partition are looked up
    /// in `events` before they are stored. Every daemon of the group needs the same.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    #[serde(default = "default_start")]
    pub start_from: String,
    /// librdkafka properties passed as they are: TLS (`security.protocol = "ssl"`,
    /// `ssl.ca.location`, …), SASL (`sasl.mechanism`, `sasl.username`,
    /// `sasl.password`), `session.timeout.ms`, … Not those the source owns (commits,
    /// offsets, group and brokers).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group() -> String {
    "mongopulse".into()
}
/// 64 a partition: enough to keep the writer's batches full, and after an
/// assignment 64 lookups a partition at most.
fn default_in_flight() -> usize {
    64
}
fn default_start() -> String {
    "earliest".into()
}

/// Properties the source sets itself: overriding them would break the commit rule.
const OWNED_OPTIONS: [&str; 7] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "partition.assignment.strategy",
];

/// Option names whose values are secrets: masked in `print-config` and in logs.
fn is_secret_option(key: &str) -> bool {
    [
        "password",
        "secret",
        "jaas",
        "key.pem",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("brokers must list at least one host:port".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return Err("topics must name at least one topic, none empty".into());
        }
        if self.group_id.is_empty() {
            return Err("group_id must not be empty".into());
        }
        if !(1..=65_535).contains(&self.max_in_flight) {
            return Err(format!(
                "max_in_flight must be between 1 and 65535, got {}",
                self.max_in_flight
            ));
        }
        if !["earliest", "latest"].contains(&self.start_from.as_str()) {
            return Err(format!(
                "start_from must be earliest or latest, got '{}'",
                self.start_from
            ));
        }
        if let Some(k) = self
            .options
            .keys()
            .find(|k| OWNED_OPTIONS.contains(&k.as_str()))
        {
            return Err(format!(
                "options: '{k}' is set by the source itself (use brokers, group_id or start_from; commits follow what MongoDB stored)"
            ));
        }
        // librdkafka checks every name and value without connecting anywhere.
        self.client_config()
            .create_native_config()
            .map(|_| ())
            .map_err(|e| format!("options: {}", self.redactor().clean(&e.to_string())))
    }

    /// The same entry with its secret options masked.
    pub fn redacted(&self) -> KafkaConfig {
        let options = self
            .options
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_option(k) { "****" } else { v };
                (k.clone(), v.to_string())
            })
            .collect();
        KafkaConfig {
            options,
            ..self.clone()
        }
    }

    fn redactor(&self) -> Redactor {
        Redactor::for_secrets(
            self.options
                .iter()
                .filter(|(k, _)| is_secret_option(k))
                .map(|(_, v)| v.clone()),
        )
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.options {
            config.set(k, v);
        }
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", format!("mongopulsed-{}", self.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", &self.start_from)
            // Eager: a rebalance revokes every partition first, so a partition is
            // never consumed by two daemons at once.
            .set("partition.assignment.strategy", "range,roundrobin")
            .set_log_level(RDKafkaLogLevel::Warning);
        config
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub source: String,
    pub topic: String,
    pub partition: String,
}

/// One message handed from the consumer thread to the tokio side.
struct Taken {
    topic: Arc<str>,
    partition: i32,
    /// Which assignment of the partition it belongs to (see [`Partition::generation`]).
    generation: u64,
    offset: i64,
    payload: Vec<u8>,
    redelivered: bool,
    /// Turns true when the partition is taken away or the daemon stops.
    stop: watch::Receiver<bool>,
}

/// A message's outcome, from the tokio side back to the consumer thread.
struct Done {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    offset: i64,
    outcome: Outcome,
}

/// Consumes until `stop`. librdkafka reconnects to its brokers by itself; the
/// source reports them down meanwhile.
pub async fn run(c: KafkaConfig, intake: Arc<Intake>, stop: watch::Receiver<bool>) {
    let (taken_tx, mut taken) = mpsc::unbounded_channel::<Taken>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    let thread = {
        let (c, intake, stop) = (c.clone(), intake.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("kafka-{}", c.name))
            .spawn(move || poll_loop(c, intake, stop, taken_tx, done_rx))
    };
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(
                source = c.name,
                "cannot start the Kafka consumer thread: {e}"
            );
            return;
        }
    };
    let mut tasks = JoinSet::new();
    // Ends when the consumer thread drops its sender: after it stopped and
    // committed, which needs the outcomes of the tasks below.
    while let Some(t) = taken.recv().await {
        while tasks.try_join_next().is_some() {}
        let (intake, c, done) = (intake.clone(), c.clone(), done_tx.clone());
        tasks.spawn(async move {
            let outcome = take_one(&intake, &c, &t).await;
            let _ = done.send(Done {
                topic: t.topic,
                partition: t.partition,
                generation: t.generation,
                offset: t.offset,
                outcome,
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

async fn take_one(intake: &Intake, c: &KafkaConfig, t: &Taken) -> Outcome {
    if *t.stop.borrow() {
        // Its partition was handed over (or the daemon stops) before it was tried.
        return Outcome::Untried;
    }
    let source = c.name.as_str();
    let label = SourceMetrics::label(source);
    let in_flight = intake.metrics.in_flight.get_or_create(&label).clone();
    in_flight.inc();
    let m = Message {
        source,
        body: &t.payload,
        id_prefix: format!("{source}:{}/{}/{}", t.topic, t.partition, t.offset),
        origin: doc! {
            "source": source,
            "kind": "kafka",
            "topic": &*t.topic,
            "partition": t.partition,
            "offset": t.offset,
            "group": &c.group_id,
        },
        redelivered: t.redelivered,
    };
    let mut stop = t.stop.clone();
    let outcome = match intake.settle(&m, &mut stop).await {
        Settled::Ack => {
            intake.metrics.messages_acked.get_or_create(&label).inc();
            Outcome::Stored
        }
        Settled::Unacked => Outcome::GivenBack,
    };
    in_flight.dec();
    outcome
}

/// What the previous holder of a partition left, read from the group's committed
/// offset when the partition is assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Previous {
    /// No commit: nobody took a message of it yet. This holder commits the first
    /// offset it reads before it takes anything, so the next holder knows.
    Nothing,
    /// The previous holder handed over with every message it took stored (or
    /// there was none): no message past the commit is stored.
    Clean,
    /// A holder may have stored up to `max_in_flight` messages past the commit.
    MaybeCopies,
}

/// Commit metadata: `CLEAN` on a hand-over with every taken message stored.
const CLEAN: &str = "mongopulse:clean";
const OPEN: &str = "mongopulse:open";

impl Previous {
    /// From the group's committed offset (`None`: none) and its metadata.
    fn from_commit(committed: Option<&str>) -> Previous {
        match committed {
            None => Previous::Nothing,
            Some(CLEAN) => Previous::Clean,
            Some(_) => Previous::MaybeCopies,
        }
    }
}

/// What became of a taken message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Stored,
    /// Not stored: its partition was handed over or the daemon stops while it was
    /// being tried; the next holder reads it again. An insert of it that MongoDB had
    /// not answered may still land.
    GivenBack,
    /// Handed over before it was tried: nothing of it was sent to MongoDB.
    Untried,
}

/// Where one assigned partition stands. Pure bookkeeping; the consumer thread does
/// the I/O.
#[derive(Debug)]
struct Partition {
    /// Tells this assignment's outcomes from those of an earlier one of the same
    /// partition that came back late.
    generation: u64,
    /// The offset Kafka holds as committed (the next to read). Set by the first
    /// message after the assignment, which is where the previous holder's commit
    /// left off (or later, past offsets that hold no message).
    committed: Option<i64>,
    /// Offsets below this may have been stored by the previous holder.
    redelivery_end: i64,
    /// What the commit left by the previous holder says.
    previous: Previous,
    /// Messages taken and not yet committed.
    taken: BTreeMap<i64, Outcome>,
    /// Whether this holder's last commit was marked `CLEAN`.
    committed_clean: bool,
    /// Fetched, not yet taken: the window was full.
    held: VecDeque<(i64, Vec<u8>)>,
    /// The offset after the last message fetched: offsets between two fetched
    /// messages hold none (compaction, transaction markers), so a commit may pass them.
    fetched_end: Option<i64>,
    paused: bool,
    stop: watch::Sender<bool>,
    /// When the commit point last moved (or the partition was assigned), and whether
    /// a stall since then was logged: see [`Context::measure_lag`].
    moved_at: Instant,
    stall_logged: bool,
}

impl Partition {
    fn new(generation: u64, previous: Previous) -> Self {
        Partition {
            generation,
            committed: None,
            redelivery_end: 0,
            previous,
            taken: BTreeMap::new(),
            committed_clean: false,
            held: VecDeque::new(),
            fetched_end: None,
            paused: false,
            stop: watch::channel(false).0,
            moved_at: Instant::now(),
            stall_logged: false,
        }
    }

    /// A message came from Kafka (taken at once or held).
    fn fetched(&mut self, offset: i64) {
        self.fetched_end = Some(offset + 1);
    }

    /// Whether `offset` may be taken now: never past the last commit plus `window`.
    fn may_take(&mut self, offset: i64, window: usize) -> bool {
        if self.previous == Previous::Nothing {
            // Not before a commit exists: see `Previous::Nothing`.
            return false;
        }
        let maybe_copies = self.previous == Previous::MaybeCopies;
        let committed = *self.committed.get_or_insert_with(|| {
            self.redelivery_end = if maybe_copies {
                offset + window as i64
            } else {
                offset
            };
            offset
        });
        offset < committed + window as i64
    }

    /// Whether nothing past the commit point can be in `events`: every message
    /// taken since the last commit is stored up to the commit point, and none past
    /// it was tried.
    fn clean(&self) -> bool {
        self.taken
            .values()
            .skip_while(|o| **o == Outcome::Stored)
            .all(|o| *o == Outcome::Untried)
    }

    /// Records a taken message; returns whether it may be a copy of one stored before.
    fn take(&mut self, offset: i64) -> bool {
        self.taken.insert(offset, Outcome::Pending);
        offset < self.redelivery_end
    }

    fn settled(&mut self, offset: i64, outcome: Outcome) {
        if let Some(o) = self.taken.get_mut(&offset) {
            *o = outcome;
        }
    }

    /// The offset to commit: past every stored message from the last commit on, up
    /// to the first that is not; when all are stored, up to the next message fetched
    /// (held) or expected.
    fn commit_point(&self) -> Option<i64> {
        let committed = self.committed?;
        let mut point = committed;
        for (&offset, &outcome) in &self.taken {
            if outcome != Outcome::Stored {
                return (point > committed).then_some(point);
            }
            point = offset + 1;
        }
        let next = match self.held.front() {
            Some(&(offset, _)) => offset,
            None => self.fetched_end.unwrap_or(point),
        };
        let point = point.max(next);
        (point > committed).then_some(point)
    }

    /// Kafka now holds `point` as committed.
    fn committed_at(&mut self, point: i64) {
        if self.committed != Some(point) {
            self.moved_at = Instant::now();
            self.stall_logged = false;
        }
        self.committed = Some(point);
        self.taken = self.taken.split_off(&point);
    }

    /// Messages whose outcome is not known yet.
    fn pending(&self) -> usize {
        self.taken
            .values()
            .filter(|o| **o == Outcome::Pending)
            .count()
    }
}

type Key = (Arc<str>, i32);

/// What the consumer thread and its rebalance callbacks share. Only that thread
/// touches it (librdkafka runs the callbacks inside `poll`), so the locks are
/// never contended; they are there because the context must be `Sync`.
struct Context {
    name: String,
    window: usize,
    partitions: Mutex<HashMap<Key, Partition>>,
    /// Counts assignments, for [`Partition::generation`].
    assignments: AtomicU64,
    /// Shared with the consumers this source creates after this one, if a fatal
    /// error ends it: outcomes of its messages still come back here.
    done: Arc<Mutex<Receiver<Done>>>,
    taken: mpsc::UnboundedSender<Taken>,
    /// The last error librdkafka reported (broker down, …), for the supervisor.
    error: Mutex<Option<String>>,
    redactor: Redactor,
    intake: Arc<Intake>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let text = self.redactor.clean(log_message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(source = self.name, "librdkafka {fac}: {text}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(source = self.name, "librdkafka {fac}: {text}")
            }
            _ => tracing::debug!(source = self.name, "librdkafka {fac}: {text}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let why = self.redactor.clean(&format!("{error}: {reason}"));
        // A broker closes idle connections (and librdkafka reopens them): not an outage.
        // A broker really gone shows as all brokers down, or metadata not answered.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure) {
            tracing::debug!(source = self.name, "librdkafka: {why}");
            return;
        }
        *lock(&self.error) = Some(why);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let keys: Vec<Key> = list
                    .elements()
                    .iter()
                    .map(|e| (Arc::from(e.topic()), e.partition()))
                    .collect();
                self.hand_over(consumer, &keys);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(source = self.name, "rebalance failed: {e}");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        // librdkafka keeps a partition paused across assignments: one this daemon
        // paused and got back must fetch again.
        if let Err(e) = consumer.resume(list) {
            tracing::warn!(
                source = self.name,
                "could not resume assigned partitions: {e}"
            );
        }
        // What the previous holders left; unknown counts as "may have stored copies".
        let committed = consumer
            .committed_offsets(TopicPartitionList::clone(list), Duration::from_secs(10))
            .map_err(|e| {
                tracing::warn!(
                    source = self.name,
                    "could not read the group's committed offsets ({e}); looking up the first messages of each partition"
                )
            })
            .ok();
        let mut parts = lock(&self.partitions);
        let mut names = Vec::new();
        for e in list.elements() {
            let previous = match &committed {
                None => Previous::MaybeCopies,
                Some(c) => match c.find_partition(e.topic(), e.partition()) {
                    Some(p) if matches!(p.offset(), Offset::Offset(_)) => {
                        Previous::from_commit(Some(p.metadata()))
                    }
                    _ => Previous::from_commit(None),
                },
            };
            let generation = self.assignments.fetch_add(1, Ordering::Relaxed);
            parts.insert(
                (Arc::from(e.topic()), e.partition()),
                Partition::new(generation, previous),
            );
            names.push(format!("{}/{} ({previous:?})", e.topic(), e.partition()));
        }
        tracing::info!(source = self.name, "assigned partitions {names:?}");
    }
}

/// How long a rebalance or a stop waits for the messages being stored. An insert
/// MongoDB has not answered by then may still complete after the hand-over (README).
const HAND_OVER_WAIT: Duration = Duration::from_secs(30);

impl Context {
    /// Takes the outcomes that came back; waits up to `wait` for the first one.
    fn collect_done(&self, wait: Duration) {
        let done = lock(&self.done);
        let mut parts = lock(&self.partitions);
        let mut apply = |d: Done| {
            if let Some(p) = parts.get_mut(&(d.topic, d.partition)) {
                if p.generation == d.generation {
                    p.settled(d.offset, d.outcome);
                }
            }
        };
        match done.recv_timeout(wait) {
            Ok(d) => apply(d),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(d) = done.try_recv() {
            apply(d);
        }
    }

    /// Commits, synchronously, what is stored of `keys` (all partitions if `None`).
    /// When `handing_over`, a partition whose every taken message is stored is
    /// committed `CLEAN`, so its next holder looks nothing up.
    fn commit(&self, consumer: &BaseConsumer<Self>, keys: Option<&[Key]>, handing_over: bool) {
        let mut parts = lock(&self.partitions);
        let mut list = TopicPartitionList::new();
        let mut points = Vec::new();
        for (key, p) in parts.iter() {
            if keys.is_some_and(|k| !k.contains(key)) {
                continue;
            }
            let clean = handing_over && p.clean();
            let point = match (p.commit_point(), clean) {
                (Some(point), _) => point,
                (None, true) => match p.committed {
                    Some(c) => c,
                    None => continue,
                },
                (None, false) => continue,
            };
            let _ = list.add_partition_offset(&key.0, key.1, Offset::Offset(point));
            if let Some(mut e) = list.find_partition(&key.0, key.1) {
                e.set_metadata(if clean { CLEAN } else { OPEN });
            }
            points.push((key.clone(), point, clean));
        }
        if points.is_empty() {
            return;
        }
        match self.commit_sync(consumer, &list) {
            Ok(()) => {
                for (key, point, clean) in points {
                    if let Some(p) = parts.get_mut(&key) {
                        if p.stall_logged {
                            tracing::info!(
                                source = self.name,
                                "partition {}/{} commits again, at offset {point}",
                                key.0,
                                key.1
                            );
                        }
                        p.committed_at(point);
                        p.committed_clean = clean;
                    }
                }
            }
            // Kept: the next commit carries these offsets again.
            Err(e) => tracing::warn!(
                source = self.name,
                "could not commit offsets ({}); retrying",
                self.redactor.clean(&e.to_string())
            ),
        }
    }

    /// Lets the messages of `keys` settle (or give up, their partition stopped),
    /// commits them, and forgets the partitions.
    fn hand_over(&self, consumer: &BaseConsumer<Self>, keys: &[Key]) {
        for key in keys {
            if let Some(p) = lock(&self.partitions).get(key) {
                let _ = p.stop.send(true);
            }
        }
        // Lost (the group moved on without this daemon): another daemon may be
        // reading the partitions already, and a commit would be refused.
        let lost = consumer.assignment_lost();
        let deadline = Instant::now() + if lost { Duration::ZERO } else { HAND_OVER_WAIT };
        loop {
            let pending: usize = lock(&self.partitions)
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(_, p)| p.pending())
                .sum();
            if pending == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    source = self.name,
                    "handing over partitions with {pending} messages not yet answered by MongoDB{}",
                    if lost {
                        " (the assignment was lost)"
                    } else {
                        ""
                    }
                );
                break;
            }
            self.collect_done(Duration::from_millis(50));
        }
        if !lost {
            self.commit(consumer, Some(keys), true);
        }
        let mut parts = lock(&self.partitions);
        let mut handed = Vec::new();
        for key in keys {
            if let Some(p) = parts.remove(key) {
                let mark = if p.committed_clean { "clean" } else { "open" };
                handed.push(format!("{}/{} at {:?} ({mark})", key.0, key.1, p.committed));
            }
            self.intake.metrics.kafka_lag.remove(&PartitionLabel {
                source: self.name.clone(),
                topic: key.0.to_string(),
                partition: key.1.to_string(),
            });
        }
        if !handed.is_empty() {
            tracing::info!(source = self.name, "handed over partitions {handed:?}");
        }
    }

    /// A fetched message: taken if its partition's window has room, else held (and
    /// the partition paused until there is room).
    fn fetched(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: Vec<u8>,
    ) {
        let key: Key = (Arc::from(topic), partition);
        let mut parts = lock(&self.partitions);
        let Some(p) = parts.get_mut(&key) else {
            // Not (or no longer) assigned to this daemon: its holder reads it.
            return;
        };
        p.fetched(offset);
        if p.held.is_empty() {
            self.commit_first(consumer, &key, p, offset);
            if p.may_take(offset, self.window) {
                self.dispatch(&key, p, offset, payload);
                return;
            }
        }
        p.held.push_back((offset, payload));
        if !p.paused {
            p.paused = true;
            if let Err(e) = consumer.pause(&one_partition(&key)) {
                // Still bounded by librdkafka's fetch queue; held until there is room.
                tracing::warn!(
                    source = self.name,
                    "could not pause {topic}/{partition}: {e}"
                );
            }
        }
    }

    /// Takes the held messages that fit now; resumes partitions that hold none.
    fn release_held(&self, consumer: &BaseConsumer<Self>) {
        let mut parts = lock(&self.partitions);
        for (key, p) in parts.iter_mut() {
            if let Some(&(offset, _)) = p.held.front() {
                self.commit_first(consumer, key, p, offset);
            }
            while let Some(&(offset, _)) = p.held.front() {
                if !p.may_take(offset, self.window) {
                    break;
                }
                if let Some((offset, payload)) = p.held.pop_front() {
                    self.dispatch(key, p, offset, payload);
                }
            }
            if p.paused && p.held.is_empty() {
                p.paused = false;
                let _ = consumer.resume(&one_partition(key));
            }
        }
    }

    /// A partition Kafka holds no commit for: commits `offset`, the first this
    /// holder read, before it takes anything (see [`Previous::Nothing`]). On failure
    /// the message waits, held, for the next try.
    fn commit_first(
        &self,
        consumer: &BaseConsumer<Self>,
        key: &Key,
        p: &mut Partition,
        offset: i64,
    ) {
        if p.previous != Previous::Nothing {
            return;
        }
        let mut list = TopicPartitionList::new();
        let _ = list.add_partition_offset(&key.0, key.1, Offset::Offset(offset));
        // Open: this holder is about to store past it.
        if let Some(mut e) = list.find_partition(&key.0, key.1) {
            e.set_metadata(OPEN);
        }
        match self.commit_sync(consumer, &list) {
            // Nothing before this holder to look for.
            Ok(()) => p.previous = Previous::Clean,
            Err(e) => tracing::warn!(
                source = self.name,
                "could not commit the first offset of {}/{} ({}); retrying",
                key.0,
                key.1,
                self.redactor.clean(&e.to_string())
            ),
        }
    }

    fn dispatch(&self, key: &Key, p: &mut Partition, offset: i64, payload: Vec<u8>) {
        let redelivered = p.take(offset);
        let _ = self.taken.send(Taken {
            topic: key.0.clone(),
            partition: key.1,
            generation: p.generation,
            offset,
            payload,
            redelivered,
            stop: p.stop.subscribe(),
        });
    }

    /// Commits `list` and waits for Kafka's answer. That holds the consumer thread
    /// (no message taken, no lag read), until `session.timeout.ms` when the group
    /// coordinator is unreachable: a long wait is worth a line.
    fn commit_sync(
        &self,
        consumer: &BaseConsumer<Self>,
        list: &TopicPartitionList,
    ) -> KafkaResult<()> {
        let asked = Instant::now();
        let answer = consumer.commit(list, CommitMode::Sync);
        let took = asked.elapsed();
        if took >= SLOW_COMMIT {
            tracing::warn!(
                source = self.name,
                "Kafka took {:.1} s to answer a commit; the consumer waited for it",
                took.as_secs_f64()
            );
        }
        answer
    }

    /// Kafka's lag of each assigned partition (high watermark − committed offset);
    /// logs, once, a partition whose commit point has not moved for [`STALL_AFTER`]
    /// though messages wait, with where its bookkeeping stands.
    fn measure_lag(&self, consumer: &BaseConsumer<Self>) {
        let keys: Vec<(Key, Option<i64>)> = lock(&self.partitions)
            .iter()
            .map(|(k, p)| (k.clone(), p.committed))
            .collect();
        let mut backlog = 0;
        for ((topic, partition), committed) in keys {
            let Ok((low, high)) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(1))
            else {
                continue;
            };
            let lag = (high - committed.unwrap_or(low)).max(0);
            backlog += lag;
            if lag > 0 {
                if let Some(p) = lock(&self.partitions).get_mut(&(topic.clone(), partition)) {
                    if !p.stall_logged && p.moved_at.elapsed() >= STALL_AFTER {
                        p.stall_logged = true;
                        tracing::warn!(
                            source = self.name,
                            "partition {topic}/{partition} has not committed for {} s with {lag} message(s) behind: committed {:?}, {} taken ({} awaiting MongoDB), {} held, paused {}, previous holder {:?}, fetched up to {:?}",
                            p.moved_at.elapsed().as_secs(),
                            p.committed,
                            p.taken.len(),
                            p.pending(),
                            p.held.len(),
                            p.paused,
                            p.previous,
                            p.fetched_end
                        );
                    }
                }
            }
            self.intake
                .metrics
                .kafka_lag
                .get_or_create(&PartitionLabel {
                    source: self.name.clone(),
                    topic: topic.to_string(),
                    partition: partition.to_string(),
                })
                .set(lag);
        }
        self.intake
            .metrics
            .backlog
            .get_or_create(&SourceMetrics::label(&self.name))
            .set(backlog);
    }
}

fn one_partition(key: &Key) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(&key.0, key.1);
    list
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How often the partitions' lag and the brokers are looked at, and how often at
/// most stored offsets are committed while messages flow.
const LAG_EVERY: Duration = Duration::from_secs(2);
const COMMIT_EVERY: Duration = Duration::from_millis(50);

/// A commit point unmoved this long while messages wait is logged as a stall.
const STALL_AFTER: Duration = Duration::from_secs(60);

/// A synchronous commit this slow is logged.
const SLOW_COMMIT: Duration = Duration::from_secs(2);

/// Why a consumer ended.
enum Ended {
    Stopped,
    /// librdkafka's fatal error: this consumer cannot go on; a new one can.
    Fatal(String),
}

/// The consumer thread: creates the consumer (again after a fatal error, with
/// backoff) and runs it until `stop`.
fn poll_loop(
    c: KafkaConfig,
    intake: Arc<Intake>,
    stop: watch::Receiver<bool>,
    taken: mpsc::UnboundedSender<Taken>,
    done: Receiver<Done>,
) {
    let redactor = c.redactor();
    let mut supervisor = Supervisor::with_redactor("Kafka", &c.name, redactor.clone(), &intake);
    let done = Arc::new(Mutex::new(done));
    let mut pause = Duration::from_millis(250);
    while !*stop.borrow() {
        let context = Context {
            name: c.name.clone(),
            window: c.max_in_flight,
            partitions: Mutex::new(HashMap::new()),
            assignments: AtomicU64::new(0),
            done: done.clone(),
            taken: taken.clone(),
            error: Mutex::new(None),
            redactor: redactor.clone(),
            intake: intake.clone(),
        };
        let why = match c.client_config().create_with_context(context) {
            Ok(consumer) => match consume(&c, consumer, &stop, &mut supervisor) {
                Ended::Stopped => break,
                Ended::Fatal(why) => why,
            },
            // The options were checked at start; this is librdkafka refusing anyway.
            Err(e) => format!("cannot create the consumer: {e}"),
        };
        supervisor.report_down(&why);
        let until = Instant::now() + pause;
        while Instant::now() < until && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50));
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
    supervisor.stopped();
}

/// Polls, hands messages to the tokio side, commits what was stored; on `stop`
/// lets its messages settle, commits and leaves the group.
fn consume(
    c: &KafkaConfig,
    consumer: BaseConsumer<Context>,
    stop: &watch::Receiver<bool>,
    supervisor: &mut Supervisor,
) -> Ended {
    let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        return Ended::Fatal(format!("cannot subscribe to {topics:?}: {e}"));
    }
    tracing::info!(
        source = c.name,
        "consuming Kafka topics {topics:?} in group '{}'",
        c.group_id
    );
    let ctx = consumer.context().clone();
    let mut last_commit = Instant::now();
    let mut last_look: Option<Instant> = None;
    let ended = loop {
        if *stop.borrow() {
            break Ended::Stopped;
        }
        ctx.collect_done(Duration::ZERO);
        if last_commit.elapsed() >= COMMIT_EVERY {
            ctx.commit(&consumer, None, false);
            last_commit = Instant::now();
        }
        ctx.release_held(&consumer);
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default().to_vec();
                let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                drop(m);
                ctx.fetched(&consumer, &topic, partition, offset, payload);
            }
            Some(Err(e)) => {
                *lock(&ctx.error) = Some(ctx.redactor.clean(&e.to_string()));
            }
        }
        if last_look.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
            last_look = Some(Instant::now());
            if let Some((code, reason)) = consumer.client().fatal_error() {
                break Ended::Fatal(format!(
                    "fatal error {code:?}: {}",
                    ctx.redactor.clean(&reason)
                ));
            }
            // Down while librdkafka reports errors or the brokers do not answer;
            // an error not repeated since the last look is over.
            let reported = lock(&ctx.error).take();
            match (
                consumer.fetch_metadata(Some(topics[0]), Duration::from_secs(1)),
                reported,
            ) {
                (Ok(_), None) => {
                    supervisor.up();
                    ctx.measure_lag(&consumer);
                }
                (Ok(_), Some(why)) => supervisor.report_down(&why),
                (Err(e), reported) => supervisor.report_down(
                    &reported
                        .unwrap_or_else(|| format!("brokers {} do not answer: {e}", c.brokers)),
                ),
            }
        }
    };
    // What waits for MongoDB gives up (the next holder reads it again), what is
    // being stored finishes, and that is committed before leaving the group.
    let all: Vec<Key> = lock(&ctx.partitions).keys().cloned().collect();
    ctx.hand_over(&consumer, &all);
    drop(consumer);
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `offset` as the consumer thread does with a fetched message.
    fn fetch_and_take(p: &mut Partition, offset: i64, window: usize) -> bool {
        p.fetched(offset);
        assert!(p.may_take(offset, window), "{offset} may be taken");
        p.take(offset)
    }

    #[test]
    fn a_partition_takes_no_message_past_its_last_commit_plus_the_window() {
        let mut p = Partition::new(0, Previous::MaybeCopies);
        // The first message after the assignment is where the last commit left off.
        for o in 100..103 {
            assert!(
                fetch_and_take(&mut p, o, 3),
                "the previous holder may have stored {o}"
            );
        }
        assert!(!p.may_take(103, 3), "three taken since the commit at 100");
        assert_eq!(p.commit_point(), None, "nothing stored yet");
        // Stored out of order: the commit stops at the first unsettled one.
        p.settled(101, Outcome::Stored);
        assert_eq!(p.commit_point(), None);
        p.settled(100, Outcome::Stored);
        assert_eq!(p.commit_point(), Some(102));
        p.committed_at(102);
        assert!(p.may_take(103, 3) && p.may_take(104, 3));
        assert!(!p.may_take(105, 3));
        assert!(
            !fetch_and_take(&mut p, 103, 3),
            "past the window: no earlier holder got this far"
        );
        assert_eq!(p.pending(), 2, "102 and 103");
    }

    #[test]
    fn a_message_given_back_holds_the_commit_before_it_and_is_not_waited_for() {
        let mut p = Partition::new(0, Previous::MaybeCopies);
        for o in 0..4 {
            fetch_and_take(&mut p, o, 10);
        }
        p.settled(0, Outcome::Stored);
        p.settled(1, Outcome::GivenBack);
        p.settled(2, Outcome::Stored);
        assert_eq!(p.pending(), 1, "only 3 has no outcome yet");
        p.settled(3, Outcome::Stored);
        assert_eq!(p.pending(), 0);
        assert_eq!(
            p.commit_point(),
            Some(1),
            "offset 1 is read again by the next holder"
        );
    }

    #[test]
    fn a_commit_passes_offsets_that_hold_no_message() {
        // Offsets 2..9 hold no message (compaction, a transaction's marker): with a
        // window of 2, offset 10 must still be taken once 0 and 1 are stored.
        let mut p = Partition::new(0, Previous::MaybeCopies);
        fetch_and_take(&mut p, 0, 2);
        fetch_and_take(&mut p, 1, 2);
        p.fetched(10);
        assert!(!p.may_take(10, 2));
        p.held.push_back((10, Vec::new()));
        p.settled(0, Outcome::Stored);
        p.settled(1, Outcome::Stored);
        assert_eq!(p.commit_point(), Some(10), "up to the held message");
        p.committed_at(10);
        assert!(p.may_take(10, 2));
        // Nothing held: up to the offset after the last message fetched.
        p.held.clear();
        p.take(10);
        p.settled(10, Outcome::Stored);
        assert_eq!(p.commit_point(), Some(11));
    }

    #[test]
    fn a_stall_is_logged_again_only_after_the_commit_point_moved() {
        let mut p = Partition::new(0, Previous::MaybeCopies);
        fetch_and_take(&mut p, 0, 2);
        p.committed_at(0);
        p.stall_logged = true;
        let since = p.moved_at;
        // Kafka answering the same point again is no progress.
        p.committed_at(0);
        assert!(p.stall_logged);
        assert_eq!(p.moved_at, since);
        p.settled(0, Outcome::Stored);
        p.committed_at(1);
        assert!(!p.stall_logged);
        assert!(p.moved_at >= since);
    }

    #[test]
    fn only_a_holder_that_may_have_left_copies_makes_the_next_one_look_them_up() {
        assert_eq!(Previous::from_commit(None), Previous::Nothing);
        assert_eq!(Previous::from_commit(Some(CLEAN)), Previous::Clean);
        assert_eq!(Previous::from_commit(Some(OPEN)), Previous::MaybeCopies);
        // A commit by another tool (no metadata): assume the worst.
        assert_eq!(Previous::from_commit(Some("")), Previous::MaybeCopies);

        let mut clean = Partition::new(0, Previous::Clean);
        assert!(
            !fetch_and_take(&mut clean, 7, 4),
            "handed over clean: no lookup"
        );
        let mut unknown = Partition::new(0, Previous::MaybeCopies);
        assert!(fetch_and_take(&mut unknown, 7, 4), "may be a copy");

        // No commit yet: nothing is taken before the first offset is committed.
        let mut fresh = Partition::new(0, Previous::Nothing);
        fresh.fetched(0);
        assert!(!fresh.may_take(0, 4));
        fresh.previous = Previous::Clean; // what a successful first commit does
        assert!(fresh.may_take(0, 4) && !fresh.take(0));
    }

    #[test]
    fn a_hand_over_is_clean_only_when_nothing_past_the_commit_point_was_tried() {
        let mut p = Partition::new(0, Previous::Clean);
        assert!(p.clean(), "nothing taken");
        for o in 0..4 {
            fetch_and_take(&mut p, o, 4);
        }
        p.settled(0, Outcome::Stored);
        p.settled(2, Outcome::Untried);
        p.settled(3, Outcome::Untried);
        assert!(!p.clean(), "1 is pending");
        p.settled(1, Outcome::GivenBack);
        assert!(!p.clean(), "1 was given back: its insert may still land");
        p.settled(1, Outcome::Untried);
        assert!(p.clean(), "0 stored (and committed), the rest never tried");
        p.settled(3, Outcome::Stored);
        assert!(
            !p.clean(),
            "3 is stored past the commit point, which stops at 1"
        );
    }

    #[test]
    fn options_are_checked_and_their_secrets_masked() {
        let mut c = KafkaConfig {
            name: "k".into(),
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["events".into()],
            group_id: "g".into(),
            max_in_flight: 16,
            start_from: "earliest".into(),
            options: BTreeMap::new(),
        };
        assert_eq!(c.validate(), Ok(()));
        c.options
            .insert("sasl.password".into(), "hunter2-kafka".into());
        c.options.insert("sasl.username".into(), "pulse".into());
        assert_eq!(c.validate(), Ok(()));
        let shown = format!("{:?}", c.redacted());
        assert!(
            !shown.contains("hunter2-kafka") && shown.contains("pulse"),
            "{shown}"
        );
        c.options.insert("no.such.option".into(), "1".into());
        let e = c.validate().unwrap_err();
        assert!(e.contains("no.such.option"), "{e}");
        c.options.remove("no.such.option");
        c.options.insert("enable.auto.commit".into(), "true".into());
        assert!(c.validate().unwrap_err().contains("set by the source"));
        c.options.remove("enable.auto.commit");
        c.start_from = "middle".into();
        assert!(c.validate().unwrap_err().contains("start_from"));
    }
}
