//! Notifiers: deliver alert transitions to the outside world.
//!
//! **In**: the notifier configurations (`[[alerting.notifiers]]` in the daemon's TOML and
//! the rules provisioning file, see [`NotifierConfig`]), a [`RetryConfig`], and, for each
//! alert instance transition the engine decides to announce, a [`Notification`] plus the
//! names of the notifiers its rule targets.
//!
//! **Out**: requests to real receivers — a signed JSON webhook ([`webhook`]), a Slack
//! incoming-webhook message ([`slack`]), an email over SMTP ([`email`]), an
//! Alertmanager-API alert ([`alertmanager`]) — and one [`Delivery`] per target, the entry
//! the engine stores in the alert's notification log.
//!
//! Delivery rules, the same for every kind:
//! - all targets are sent to concurrently; each gets up to `attempts` attempts, each
//!   bounded by `timeout_ms`, with exponential backoff and jitter between them (see
//!   [`RetryConfig`]); a slow or failing notifier never holds back another's request;
//! - retried: transport errors, timeouts, HTTP 408/425/429/5xx (honouring `Retry-After`
//!   up to `max_backoff_ms`), SMTP 4xx; not retried: redirects (never followed), other
//!   HTTP 4xx, SMTP 5xx, TLS failures;
//! - no secret (webhook secret and credential-like header values such as
//!   `Authorization` or `X-Api-Key`, the Slack URL's path, SMTP password, Alertmanager
//!   token or password, URL passwords and query strings) ever appears in a `Delivery`, a
//!   log line, an error message or `Debug` output (`Debug` masks every header value);
//! - [`Notifiers::send`] never panics and never returns early: it yields one `Delivery`
//!   per target, in the order of the targets. The engine should run it off its evaluation
//!   path (e.g. `tokio::spawn`; [`Notifiers`] is a cheap `Clone`) so that even the worst
//!   case — `attempts × timeout_ms` plus the pauses — never delays an evaluation.
//!   [`Notifiers::send_each`] yields each delivery as soon as it completes instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, FuturesUnordered, Stream, StreamExt};
use futures_util::FutureExt;

pub mod alertmanager;
mod config;
pub mod email;
mod error;
mod http;
mod redact;
mod retry;
mod secret;
pub mod slack;
mod text;
pub mod webhook;

pub use config::{
    AlertmanagerConfig, EmailConfig, NotifierConfig, RetryConfig, SlackConfig, WebhookConfig,
};
pub use error::{
    InvalidNotifier, NotifierProblem, NotifiersError, RetryError, SenderError, SetupProblem,
    UrlProblem,
};
pub use secret::{EndpointUrl, Secret, SecretUrl, SlackUrl};
pub use text::{headline, number, title};
pub use webhook::{sign, verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use redact::Scrubber;
use retry::{AttemptResult, Outcome};

/// Whether an instance starts or stops firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyState {
    Firing,
    Resolved,
}

/// One alert instance transition to announce.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub rule_id: String,
    pub rule_name: String,
    /// Identifies the instance within the rule, e.g. "country=FR".
    pub instance: String,
    pub state: NotifyState,
    pub severity: String,
    /// Includes alertname, severity, group-by labels.
    pub labels: BTreeMap<String, String>,
    /// summary, description (already templated).
    pub annotations: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub starts_at: DateTime<Utc>,
    /// Set when resolved.
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
    /// True for a repeat reminder of a still-firing alert.
    pub repeat: bool,
}

/// One delivery's outcome, stored in the alert's notification log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The notifier's name (as targeted, also when unknown).
    pub notifier: String,
    /// `webhook`, `slack`, `email`, `alertmanager`, or `unknown` for a name that is not
    /// configured.
    pub kind: String,
    pub ok: bool,
    /// Attempts made (0 for an unknown notifier).
    pub attempts: u32,
    /// Why the last attempt failed; never contains a secret.
    pub error: Option<String>,
    /// The last HTTP status received, or for email the last SMTP reply code (250 when
    /// accepted); `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
    /// When the delivery started.
    pub at: DateTime<Utc>,
    /// From the start of the first attempt to the end of the last one, pauses included.
    pub duration_ms: u64,
}

/// The configured notifiers, ready to send. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Notifiers {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    retry: RetryConfig,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

struct Entry {
    config: NotifierConfig,
    sender: Sender,
    scrubber: Scrubber,
}

enum Sender {
    Webhook(webhook::Webhook),
    Slack {
        url: String,
        channel: Option<String>,
    },
    Email(Box<email::Email>),
    Alertmanager(alertmanager::Alertmanager),
}

impl Notifiers {
    /// Validates every config (names unique, fields as documented on [`NotifierConfig`])
    /// and the retry policy, and builds the clients. The error lists every problem found,
    /// each naming its notifier and field, separated by `; `.
    pub fn new(
        configs: Vec<NotifierConfig>,
        retry: RetryConfig,
    ) -> Result<Notifiers, NotifiersError> {
        let mut problems = Vec::new();
        if let Err(e) = retry.validate() {
            problems.push(SetupProblem::Retry(e));
        }
        let client = match http::client(retry.timeout_ms) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(SetupProblem::Client(e));
                None
            }
        };
        let timeout = Duration::from_millis(retry.timeout_ms.max(1));
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        for config in configs {
            if let Err(e) = config.validate() {
                problems.push(SetupProblem::Invalid(e));
                continue;
            }
            let name = config.name().to_string();
            if by_name.contains_key(&name) {
                problems.push(SetupProblem::DuplicateName(name));
                continue;
            }
            let scrubber = Scrubber::new(config.secrets());
            match build_sender(&config, timeout) {
                Ok(sender) => {
                    if let NotifierConfig::Email(EmailConfig {
                        accept_invalid_certs: true,
                        ..
                    }) = &config
                    {
                        tracing::warn!(
                            notifier = %name,
                            "accept_invalid_certs is set: the SMTP server's certificate is not verified"
                        );
                    }
                    by_name.insert(name, entries.len());
                    entries.push(Entry {
                        config,
                        sender,
                        scrubber,
                    });
                }
                Err(e) => problems.push(SetupProblem::Sender {
                    reason: scrubber.clean(&e.to_string()),
                    name,
                }),
            }
        }
        match client {
            Some(client) if problems.is_empty() => Ok(Notifiers {
                inner: Arc::new(Inner {
                    client,
                    retry,
                    entries,
                    by_name,
                }),
            }),
            _ => Err(NotifiersError(problems)),
        }
    }

    /// The configured names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .entries
            .iter()
            .map(|e| e.config.name().to_string())
            .collect()
    }

    /// The configuration of `name`, if configured (use [`NotifierConfig::redacted`] before
    /// showing it).
    pub fn config(&self, name: &str) -> Option<&NotifierConfig> {
        self.inner
            .by_name
            .get(name)
            .map(|&i| &self.inner.entries[i].config)
    }

    /// The retry policy in force.
    pub fn retry(&self) -> &RetryConfig {
        &self.inner.retry
    }

    /// True for notifiers that must be re-sent still-firing alerts periodically (every
    /// [`alertmanager::RESEND_INTERVAL`]): Alertmanager resolves an alert on its own once
    /// its `endsAt` passes.
    pub fn needs_resend(&self, name: &str) -> bool {
        matches!(self.config(name), Some(NotifierConfig::Alertmanager(_)))
    }

    /// Sends `n` to the named notifiers (unknown names are reported as failed deliveries),
    /// all concurrently, each with retries and exponential backoff (with jitter) bounded
    /// by `attempts` and a per-attempt timeout. Never panics; one notifier's failure or
    /// slowness does not delay the others' requests. Returns one `Delivery` per target,
    /// in the order of `targets` (a name listed twice is sent to once, its delivery
    /// repeated).
    pub async fn send(&self, targets: &[String], n: &Notification) -> Vec<Delivery> {
        let mut out: Vec<Option<Delivery>> = vec![None; targets.len()];
        let mut each = std::pin::pin!(self.send_each(targets, n));
        while let Some((i, d)) = each.next().await {
            out[i] = Some(d);
        }
        out.into_iter()
            .zip(targets)
            .map(|(d, name)| d.unwrap_or_else(|| internal_failure(name, "no result")))
            .collect()
    }

    /// Like [`send`](Self::send), but yields `(index in targets, Delivery)` as each
    /// delivery completes, so a fast notifier's result is known while a slow one is still
    /// retrying. Owns its data: it can be moved into a spawned task.
    pub fn send_each(
        &self,
        targets: &[String],
        n: &Notification,
    ) -> impl Stream<Item = (usize, Delivery)> + Send + 'static {
        let n = Arc::new(n.clone());
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match groups.iter_mut().find(|(name, _)| name == t) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((t.clone(), vec![i])),
            }
        }
        let futures: FuturesUnordered<_> = groups
            .into_iter()
            .map(|(name, indexes)| {
                let inner = Arc::clone(&self.inner);
                let n = Arc::clone(&n);
                async move {
                    let fallback = name.clone();
                    let d = AssertUnwindSafe(deliver(&inner, &name, &n))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| internal_failure(&fallback, "the notifier panicked"));
                    (indexes, d)
                }
            })
            .collect();
        futures
            .flat_map(|(indexes, d)| stream::iter(indexes.into_iter().map(move |i| (i, d.clone()))))
    }
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifiers")
            .field(
                "notifiers",
                &self
                    .inner
                    .entries
                    .iter()
                    .map(|e| &e.config)
                    .collect::<Vec<_>>(),
            )
            .field("retry", &self.inner.retry)
            .finish()
    }
}

fn build_sender(config: &NotifierConfig, timeout: Duration) -> Result<Sender, SenderError> {
    Ok(match config {
        NotifierConfig::Webhook(c) => Sender::Webhook(webhook::Webhook::new(c)?),
        NotifierConfig::Slack(c) => Sender::Slack {
            url: c.url.expose().to_string(),
            channel: c.channel.clone(),
        },
        NotifierConfig::Email(c) => Sender::Email(Box::new(email::Email::new(c, timeout)?)),
        NotifierConfig::Alertmanager(c) => {
            Sender::Alertmanager(alertmanager::Alertmanager::new(c)?)
        }
    })
}

/// One notifier, all attempts.
async fn deliver(inner: &Inner, name: &str, n: &Notification) -> Delivery {
    let at = Utc::now();
    let started = Instant::now();
    let Some(entry) = inner.by_name.get(name).map(|&i| &inner.entries[i]) else {
        let d = Delivery {
            notifier: name.to_string(),
            kind: "unknown".to_string(),
            ok: false,
            attempts: 0,
            error: Some(format!("no notifier named '{name}' is configured")),
            status: None,
            at,
            duration_ms: 0,
        };
        log(&d);
        return d;
    };
    let retry = &inner.retry;
    let client = &inner.client;
    let outcome: Outcome = match &entry.sender {
        Sender::Webhook(w) => {
            let (body, headers) = w.prepare(n);
            retry::run(retry, |_| w.attempt(client, &body, &headers)).await
        }
        Sender::Slack { url, channel } => {
            let body = json_bytes(&slack::slack_payload(n, channel.as_deref()));
            retry::run(retry, |_| slack_attempt(client, url, &body)).await
        }
        Sender::Email(e) => match e.message(n) {
            Ok(msg) => retry::run(retry, |_| e.attempt(&msg)).await,
            Err(err) => Outcome {
                attempts: 0,
                result: Err(retry::Failure::permanent(err.to_string(), None)),
            },
        },
        Sender::Alertmanager(am) => {
            let body = json_bytes(&alertmanager::alertmanager_payload(n, Utc::now()));
            retry::run(retry, |_| am.attempt(client, &body)).await
        }
    };
    let (ok, status, error) = match outcome.result {
        Ok(status) => (true, status, None),
        Err(f) => (false, f.status, Some(entry.scrubber.clean(&f.message))),
    };
    let d = Delivery {
        notifier: name.to_string(),
        kind: entry.config.kind().to_string(),
        ok,
        attempts: outcome.attempts,
        error,
        status,
        at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    log(&d);
    d
}

async fn slack_attempt(client: &reqwest::Client, url: &str, body: &bytes::Bytes) -> AttemptResult {
    http::attempt(
        client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone()),
    )
    .await
}

fn json_bytes(v: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn internal_failure(name: &str, why: &str) -> Delivery {
    let d = Delivery {
        notifier: name.to_string(),
        kind: "unknown".to_string(),
        ok: false,
        attempts: 0,
        error: Some(format!("internal error: {why}")),
        status: None,
        at: Utc::now(),
        duration_ms: 0,
    };
    log(&d);
    d
}

fn log(d: &Delivery) {
    if d.ok {
        tracing::info!(
            notifier = %d.notifier,
            kind = %d.kind,
            attempts = d.attempts,
            status = ?d.status,
            duration_ms = d.duration_ms,
            "notification delivered"
        );
    } else {
        tracing::warn!(
            notifier = %d.notifier,
            kind = %d.kind,
            attempts = d.attempts,
            status = ?d.status,
            duration_ms = d.duration_ms,
            error = d.error.as_deref().unwrap_or_default(),
            "notification failed"
        );
    }
}
