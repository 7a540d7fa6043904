//! Black-box tests of the notifiers (`mongopulse::alerting::notify`) against real local
//! receivers, all on 127.0.0.1:
//! - an axum HTTP server started in-process (webhook with HMAC verification, Slack,
//!   Alertmanager API, and receivers that fail, redirect, rate-limit or never answer);
//! - a real SMTP server, `tests/support/smtp_receiver.py` (aiosmtpd, STARTTLS with a
//!   trustme certificate, AUTH), run with the tests' Python venv
//!   (`$MONGOPULSE_STANDIN_PYTHON` or `target/standin-venv/bin/python`, made by
//!   `scripts/test.sh`).
//!
//! No assertion depends on how long something took, only on what happened and in which
//! order.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use mongopulse::alerting::notify::*;

mod support;

/// Keeps the error texts a test saw for `tests/secrets.rs`'s whole-suite scan.
trait Kept {
    fn kept(self) -> Self;
}

impl Kept for String {
    fn kept(self) -> String {
        support::capture::error_text("notifier", &self);
        self
    }
}

impl Kept for Vec<Delivery> {
    fn kept(self) -> Vec<Delivery> {
        for d in &self {
            support::capture::error_text("delivery", &format!("{d:?}"));
        }
        self
    }
}

const WEBHOOK_SECRET: &str = "whsec-test-5f1c9a7e";
const AM_TOKEN: &str = "am-token-9b8c7d6e";
const SLACK_PATH: &str = "/services/T0001/B0002/slacktokenXYZ123";
const SMTP_USER: &str = "alerts";
const SMTP_PASSWORD: &str = "smtp-pw-4e3d2c1b";

// ---- fixtures -------------------------------------------------------------------------

fn notification(state: NotifyState) -> Notification {
    let starts_at: DateTime<Utc> = "2024-12-09T14:30:15.234Z".parse().unwrap();
    Notification {
        rule_id: "rule-errors".into(),
        rule_name: "High error rate".into(),
        instance: "country=FR".into(),
        state,
        severity: "critical".into(),
        labels: BTreeMap::from([
            ("alertname".into(), "High error rate".into()),
            ("severity".into(), "critical".into()),
            ("country".into(), "FR".into()),
        ]),
        annotations: BTreeMap::from([
            ("summary".into(), "Error rate 3.2% in FR".into()),
            (
                "description".into(),
                "More than 3% of requests failed".into(),
            ),
        ]),
        value: Some(3.2),
        threshold: Some(3.0),
        starts_at,
        ends_at: match state {
            NotifyState::Firing => None,
            NotifyState::Resolved => Some("2024-12-09T14:45:00Z".parse().unwrap()),
        },
        generator_url: "http://grafana:3000/d/mongopulse?var-country=FR".into(),
        repeat: false,
    }
}

/// Quick retries so that failing tests stay fast; generous per-attempt timeout.
fn fast_retry() -> RetryConfig {
    RetryConfig {
        attempts: 3,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        timeout_ms: 5_000,
    }
}

fn webhook(name: &str, url: String) -> NotifierConfig {
    NotifierConfig::Webhook(WebhookConfig {
        name: name.into(),
        url: url.into(),
        secret: None,
        headers: BTreeMap::new(),
    })
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- the HTTP receiver ----------------------------------------------------------------

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
    /// For /hook: whether X-MongoPulse-Signature matched the body.
    signature_ok: Option<bool>,
}

#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn requests(&self, path: &str) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: &Bytes, sig: Option<bool>) -> usize {
        let mut log = self.log.lock().unwrap();
        log.push(Received {
            path: path.to_string(),
            headers: headers.clone(),
            body: body.clone(),
            at: Instant::now(),
            signature_ok: sig,
        });
        log.iter().filter(|r| r.path == path).count()
    }
}

/// Checks the webhook signature exactly as a third-party receiver would, with the HMAC
/// crates rather than the product's helper.
fn hmac_matches(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn handle(State(rx): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    match path.as_str() {
        "/hook" => {
            let sig = headers
                .get("x-mongopulse-signature")
                .and_then(|v| v.to_str().ok());
            let ok = hmac_matches(WEBHOOK_SECRET, &body, sig);
            rx.record(&path, &headers, &body, Some(ok));
            if ok {
                StatusCode::NO_CONTENT.into_response()
            } else {
                (StatusCode::UNAUTHORIZED, "bad signature").into_response()
            }
        }
        p if p == SLACK_PATH => {
            rx.record(&path, &headers, &body, None);
            (StatusCode::OK, "ok").into_response()
        }
        "/api/alertmanager/grafana/api/v2/alerts" => {
            rx.record(&path, &headers, &body, None);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth == format!("Bearer {AM_TOKEN}") {
                StatusCode::OK.into_response()
            } else {
                // Echoes what it got: the notifier must mask it in its error.
                (
                    StatusCode::UNAUTHORIZED,
                    format!("unauthorized: got Authorization: {auth}"),
                )
                    .into_response()
            }
        }
        "/am/api/v2/alerts" => {
            rx.record(&path, &headers, &body, None);
            StatusCode::OK.into_response()
        }
        "/flaky" => {
            let n = rx.record(&path, &headers, &body, None);
            if n <= 2 {
                (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
        "/busy" => {
            let n = rx.record(&path, &headers, &body, None);
            if n == 1 {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "0")],
                    "slow down",
                )
                    .into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
        "/bad" => {
            rx.record(&path, &headers, &body, None);
            (StatusCode::BAD_REQUEST, "missing field `foo`").into_response()
        }
        "/redirect" => {
            rx.record(&path, &headers, &body, None);
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", "http://127.0.0.1:9/hook")],
            )
                .into_response()
        }
        "/slow" => {
            rx.record(&path, &headers, &body, None);
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::OK.into_response()
        }
        "/fast" => {
            rx.record(&path, &headers, &body, None);
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the receiver on 127.0.0.1 (any free port) on the test's runtime.
async fn start_receiver() -> (SocketAddr, Receiver) {
    let rx = Receiver::default();
    let app = Router::new().fallback(handle).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, rx)
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

// ---- the SMTP receiver ----------------------------------------------------------------

struct Smtp {
    child: Child,
    port: u16,
    events: mpsc::Receiver<Value>,
    /// The server's stderr (aiosmtpd logs refused TLS handshakes there), shown only when
    /// the test fails.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!("---- SMTP receiver stderr ----\n{log}");
        }
    }
}

impl Smtp {
    fn start(args: &[&str]) -> Smtp {
        let python = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_receiver.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} {}: {e}",
                    python.display(),
                    script.display()
                )
            });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr_lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the SMTP receiver did not start; does {} have aiosmtpd and trustme \
                 (tests/standin/requirements.txt, installed by scripts/test.sh)?",
                    python.display()
                )
            });
        let port = first
            .trim()
            .strip_prefix("LISTENING 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SMTP receiver: {first:?}"));
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if etx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("smtp receiver: {line}"),
                }
            }
        });
        Smtp {
            child,
            port,
            events: erx,
            stderr: stderr_lines,
        }
    }

    /// The next event of `kind`, skipping others; panics if none comes within 20 s.
    fn next(&self, kind: &str) -> Value {
        loop {
            let v = self
                .events
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("the SMTP receiver reported no '{kind}' event"));
            if v["event"] == kind {
                return v;
            }
        }
    }

    /// Every event received so far.
    fn drain(&self) -> Vec<Value> {
        self.events.try_iter().collect()
    }
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MONGOPULSE_STANDIN_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standin-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "the SMTP tests need the tests' Python venv: run scripts/test.sh, or \
         python3 -m venv target/standin-venv && target/standin-venv/bin/pip install -r \
         tests/standin/requirements.txt (or set MONGOPULSE_STANDIN_PYTHON)"
    );
}

fn email(
    port: u16,
    starttls: bool,
    password: Option<&str>,
    accept_invalid_certs: bool,
) -> NotifierConfig {
    NotifierConfig::Email(EmailConfig {
        name: "ops-mail".into(),
        host: "127.0.0.1".into(),
        port,
        starttls,
        username: password.map(|_| SMTP_USER.to_string()),
        password: password.map(Secret::from),
        from: "Mongo Pulse <alerts@mongopulse.test>".into(),
        to: vec![
            "oncall@example.test".into(),
            "Data Team <data@example.test>".into(),
        ],
        accept_invalid_certs,
    })
}

/// The message's headers and body, the body's soft line breaks undone and the
/// quoted-printable / base64 encoding decoded just enough to search for text.
fn mail_text(raw: &str) -> (String, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let body = if head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        decode_qp(body)
    } else {
        body.to_string()
    };
    (head, body)
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.map(|h| u8::from_str_radix(h, 16)) {
            Some(Ok(byte)) if b[i] == b'=' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- webhook --------------------------------------------------------------------------

#[tokio::test]
async fn webhook_body_is_signed_and_verified_by_the_receiver() {
    let (addr, rx) = start_receiver().await;
    let cfg = NotifierConfig::Webhook(WebhookConfig {
        name: "ops-hook".into(),
        url: format!("http://{addr}/hook").into(),
        secret: Some(WEBHOOK_SECRET.into()),
        headers: BTreeMap::from([("X-Team".into(), "data".into())]),
    });
    let notifiers = Notifiers::new(vec![cfg], fast_retry()).unwrap();

    let firing = notification(NotifyState::Firing);
    let d = notifiers.send(&names(&["ops-hook"]), &firing).await.kept();
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert!(d.ok, "{d:?}");
    assert_eq!(
        (d.notifier.as_str(), d.kind.as_str()),
        ("ops-hook", "webhook")
    );
    assert_eq!(
        (d.attempts, d.status, d.error.as_deref()),
        (1, Some(204), None)
    );

    let mut resolved = notification(NotifyState::Resolved);
    resolved.value = Some(1.5);
    assert!(
        notifiers
            .send(&names(&["ops-hook"]), &resolved)
            .await
            .kept()[0]
            .ok
    );

    let got = rx.requests("/hook");
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(
            r.signature_ok,
            Some(true),
            "the receiver's HMAC check failed"
        );
        assert_eq!(header(r, "content-type"), Some("application/json"));
        assert_eq!(header(r, "x-team"), Some("data"));
        // The product's own verifier agrees with the receiver's.
        assert!(verify_signature(
            WEBHOOK_SECRET.as_bytes(),
            &r.body,
            header(r, SIGNATURE_HEADER).unwrap()
        ));
    }
    let b = json(&got[0].body);
    assert_eq!(b["version"], "1");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["repeat"], false);
    let ts: i64 = header(&got[0], TIMESTAMP_HEADER).unwrap().parse().unwrap();
    assert_eq!(
        b["timestamp"], ts,
        "the signed body carries the timestamp header's value"
    );
    let a = &b["alert"];
    assert_eq!(a["ruleId"], "rule-errors");
    assert_eq!(a["ruleName"], "High error rate");
    assert_eq!(a["instance"], "country=FR");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["labels"]["country"], "FR");
    assert_eq!(a["annotations"]["summary"], "Error rate 3.2% in FR");
    assert_eq!(a["value"], 3.2);
    assert_eq!(a["threshold"], 3.0);
    assert_eq!(a["startsAt"], "2024-12-09T14:30:15.234Z");
    assert_eq!(a["endsAt"], Value::Null);
    assert_eq!(
        a["generatorUrl"],
        "http://grafana:3000/d/mongopulse?var-country=FR"
    );

    let b = json(&got[1].body);
    assert_eq!(b["status"], "resolved");
    assert_eq!(b["alert"]["endsAt"], "2024-12-09T14:45:00Z");
    assert_eq!(b["alert"]["value"], 1.5);
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_by_the_receiver_and_not_retried() {
    let (addr, rx) = start_receiver().await;
    let cfg = NotifierConfig::Webhook(WebhookConfig {
        name: "hook".into(),
        url: format!("http://{addr}/hook").into(),
        secret: Some("not-the-receivers-secret".into()),
        headers: BTreeMap::new(),
    });
    let notifiers = Notifiers::new(vec![cfg], fast_retry()).unwrap();
    let d = &notifiers
        .send(&names(&["hook"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (1, Some(401)));
    assert_eq!(rx.requests("/hook")[0].signature_ok, Some(false));
}

// ---- retries --------------------------------------------------------------------------

#[tokio::test]
async fn five_hundred_twice_then_200_is_retried_and_logged() {
    let (addr, rx) = start_receiver().await;
    let notifiers = Notifiers::new(
        vec![webhook("flaky", format!("http://{addr}/flaky"))],
        fast_retry(),
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["flaky"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(d.ok, "{d:?}");
    assert_eq!(d.attempts, 3);
    assert_eq!(d.status, Some(200));
    assert_eq!(d.error, None);
    let got = rx.requests("/flaky");
    assert_eq!(got.len(), 3);
    // Every retry sends the same bytes (same signature, same timestamp).
    assert!(got.iter().all(|r| r.body == got[0].body));
    // The log entry is what the engine stores: it serializes with camelCase keys.
    let v = serde_json::to_value(d).unwrap();
    for key in [
        "notifier",
        "kind",
        "ok",
        "attempts",
        "error",
        "status",
        "at",
        "durationMs",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
}

#[tokio::test]
async fn the_attempt_limit_is_respected_and_the_last_error_kept() {
    let (addr, rx) = start_receiver().await;
    let retry = RetryConfig {
        attempts: 2,
        ..fast_retry()
    };
    let notifiers = Notifiers::new(
        vec![webhook("flaky", format!("http://{addr}/flaky"))],
        retry,
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["flaky"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (2, Some(500)));
    let err = d.error.as_deref().unwrap();
    assert!(
        err.contains("500") && err.contains("database on fire"),
        "{err}"
    );
    assert_eq!(rx.requests("/flaky").len(), 2);
}

#[tokio::test]
async fn a_400_fails_at_once_with_its_status() {
    let (addr, rx) = start_receiver().await;
    let notifiers = Notifiers::new(
        vec![webhook("bad", format!("http://{addr}/bad"))],
        fast_retry(),
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["bad"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (1, Some(400)));
    let err = d.error.as_deref().unwrap();
    assert!(
        err.contains("400") && err.contains("missing field"),
        "{err}"
    );
    assert_eq!(rx.requests("/bad").len(), 1);
}

#[tokio::test]
async fn a_429_is_retried() {
    let (addr, rx) = start_receiver().await;
    let notifiers = Notifiers::new(
        vec![webhook("busy", format!("http://{addr}/busy"))],
        fast_retry(),
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["busy"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(d.ok, "{d:?}");
    assert_eq!((d.attempts, d.status), (2, Some(200)));
    assert_eq!(rx.requests("/busy").len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (addr, rx) = start_receiver().await;
    let notifiers = Notifiers::new(
        vec![webhook("moved", format!("http://{addr}/redirect"))],
        fast_retry(),
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["moved"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (1, Some(307)));
    assert!(d.error.as_deref().unwrap().contains("redirect"), "{d:?}");
    assert_eq!(rx.requests("/redirect").len(), 1);
    assert!(rx.requests("/hook").is_empty());
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_delay_the_others() {
    let (addr, rx) = start_receiver().await;
    let timeout_ms = 1_000;
    let retry = RetryConfig {
        attempts: 2,
        initial_backoff_ms: 10,
        max_backoff_ms: 20,
        timeout_ms,
    };
    let configs = vec![
        webhook("slow", format!("http://{addr}/slow")),
        webhook("fast", format!("http://{addr}/fast")),
    ];
    let notifiers = Notifiers::new(configs.clone(), retry.clone()).unwrap();
    let targets = names(&["slow", "fast"]);

    let started = Instant::now();
    let d = notifiers
        .send(&targets, &notification(NotifyState::Firing))
        .await
        .kept();
    // Results come in the order of the targets.
    assert_eq!(
        (d[0].notifier.as_str(), d[1].notifier.as_str()),
        ("slow", "fast")
    );
    assert!(d[1].ok, "{:?}", d[1]);
    assert_eq!(d[1].attempts, 1);
    assert!(!d[0].ok);
    assert_eq!((d[0].attempts, d[0].status), (2, None));
    assert!(
        d[0].error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        d[0]
    );
    assert_eq!(
        rx.requests("/slow").len(),
        2,
        "both attempts reached the slow receiver"
    );
    // The fast receiver had its request before the slow notifier's first attempt could
    // even time out, hence also before the slow notifier's retry reached its receiver:
    // it did not wait for the slow one.
    let fast_at = rx.requests("/fast")[0].at;
    let slow_retry_at = rx.requests("/slow")[1].at;
    assert!(fast_at < slow_retry_at);
    assert!(fast_at < started + Duration::from_millis(timeout_ms));

    // Streaming results: the fast delivery is yielded first, while the slow one is still
    // waiting for its answer.
    let once = Notifiers::new(
        configs,
        RetryConfig {
            attempts: 1,
            ..retry
        },
    )
    .unwrap();
    let mut each = std::pin::pin!(once.send_each(&targets, &notification(NotifyState::Firing)));
    let (i, first) = each.next().await.unwrap();
    assert_eq!((i, first.notifier.as_str(), first.ok), (1, "fast", true));
    let (i, second) = each.next().await.unwrap();
    assert_eq!((i, second.notifier.as_str(), second.ok), (0, "slow", false));
    assert!(each.next().await.is_none());
}

#[tokio::test]
async fn unknown_names_and_unreachable_receivers_fail_without_blocking_the_rest() {
    let (addr, rx) = start_receiver().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let notifiers = Notifiers::new(
        vec![
            webhook("fast", format!("http://{addr}/fast")),
            webhook("down", format!("http://127.0.0.1:{closed_port}/hook")),
        ],
        fast_retry(),
    )
    .unwrap();
    assert_eq!(notifiers.names(), ["fast", "down"]);
    let d = notifiers
        .send(
            &names(&["nope", "down", "fast", "fast"]),
            &notification(NotifyState::Firing),
        )
        .await
        .kept();
    assert_eq!(d.len(), 4);
    assert_eq!(
        (d[0].kind.as_str(), d[0].ok, d[0].attempts),
        ("unknown", false, 0)
    );
    assert!(d[0].error.as_deref().unwrap().contains("'nope'"));
    assert_eq!((d[1].ok, d[1].attempts, d[1].status), (false, 3, None));
    assert!(
        d[1].error.as_deref().unwrap().contains("connect"),
        "{:?}",
        d[1]
    );
    assert!(d[2].ok && d[3].ok);
    // A name listed twice is sent to once.
    assert_eq!(rx.requests("/fast").len(), 1);
}

// ---- Slack ----------------------------------------------------------------------------

#[tokio::test]
async fn slack_gets_an_incoming_webhook_message() {
    let (addr, rx) = start_receiver().await;
    let cfg = NotifierConfig::Slack(SlackConfig {
        name: "slack-ops".into(),
        url: format!("http://{addr}{SLACK_PATH}").into(),
        channel: Some("#ops".into()),
    });
    let notifiers = Notifiers::new(vec![cfg], fast_retry()).unwrap();
    let d = notifiers
        .send(&names(&["slack-ops"]), &notification(NotifyState::Firing))
        .await
        .kept();
    assert!(d[0].ok, "{:?}", d[0]);
    assert_eq!((d[0].kind.as_str(), d[0].status), ("slack", Some(200)));
    let mut resolved = notification(NotifyState::Resolved);
    resolved.value = Some(1.5);
    assert!(
        notifiers
            .send(&names(&["slack-ops"]), &resolved)
            .await
            .kept()[0]
            .ok
    );

    let got = rx.requests(SLACK_PATH);
    assert_eq!(got.len(), 2);
    assert_eq!(header(&got[0], "content-type"), Some("application/json"));
    let p = json(&got[0].body);
    // Slack escapes '>' in text; it shows "value 3.2 > threshold 3".
    assert_eq!(
        p["text"],
        "[FIRING] High error rate (country=FR) value 3.2 &gt; threshold 3"
    );
    assert_eq!(p["channel"], "#ops");
    let a = &p["attachments"][0];
    assert_eq!(a["color"], "#D63232");
    assert_eq!(a["title"], "[FIRING] High error rate (country=FR)");
    assert_eq!(
        a["title_link"],
        "http://grafana:3000/d/mongopulse?var-country=FR"
    );
    assert!(a["text"]
        .as_str()
        .unwrap()
        .contains("Error rate 3.2% in FR"));
    let fields: BTreeMap<String, String> = a["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(fields["Severity"], "critical");
    assert_eq!(fields["Value"], "3.2");
    assert_eq!(fields["Threshold"], "3");

    let p = json(&got[1].body);
    assert_eq!(
        p["text"],
        "[RESOLVED] High error rate (country=FR) value 1.5 &lt; threshold 3"
    );
    assert_eq!(p["attachments"][0]["color"], "#2EB67D");
}

// ---- Alertmanager ---------------------------------------------------------------------

#[tokio::test]
async fn alertmanager_receives_labels_annotations_times_and_auth() {
    let (addr, rx) = start_receiver().await;
    let cfg = NotifierConfig::Alertmanager(AlertmanagerConfig {
        name: "grafana-am".into(),
        url: format!("http://{addr}").into(),
        token: Some(AM_TOKEN.into()),
        username: None,
        password: None,
    });
    let notifiers = Notifiers::new(vec![cfg], fast_retry()).unwrap();
    assert!(notifiers.needs_resend("grafana-am"));
    let before = Utc::now();
    let d = notifiers
        .send(&names(&["grafana-am"]), &notification(NotifyState::Firing))
        .await
        .kept();
    assert!(d[0].ok, "{:?}", d[0]);
    assert_eq!(
        (d[0].kind.as_str(), d[0].status),
        ("alertmanager", Some(200))
    );
    assert!(
        notifiers
            .send(
                &names(&["grafana-am"]),
                &notification(NotifyState::Resolved)
            )
            .await
            .kept()[0]
            .ok
    );

    let got = rx.requests("/api/alertmanager/grafana/api/v2/alerts");
    assert_eq!(got.len(), 2);
    assert_eq!(
        header(&got[0], "authorization"),
        Some(format!("Bearer {AM_TOKEN}").as_str())
    );
    assert_eq!(header(&got[0], "content-type"), Some("application/json"));

    let firing = json(&got[0].body);
    let alerts = firing.as_array().expect("a JSON array");
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "High error rate");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["country"], "FR");
    assert_eq!(a["annotations"]["summary"], "Error rate 3.2% in FR");
    assert_eq!(a["annotations"]["value"], "3.2");
    assert_eq!(a["annotations"]["threshold"], "3");
    assert_eq!(a["startsAt"], "2024-12-09T14:30:15.234Z");
    assert_eq!(
        a["generatorURL"],
        "http://grafana:3000/d/mongopulse?var-country=FR"
    );
    // Firing: endsAt lies in the future (Alertmanager's convention for a live alert).
    let ends: DateTime<Utc> = a["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(ends > before, "{ends} should be after {before}");

    let resolved = json(&got[1].body);
    assert_eq!(resolved[0]["endsAt"], "2024-12-09T14:45:00.000Z");
    assert_eq!(
        resolved[0]["labels"], a["labels"],
        "same labels = same alert"
    );
}

#[tokio::test]
async fn alertmanager_basic_auth_on_a_full_alerts_url() {
    let (addr, rx) = start_receiver().await;
    let cfg = NotifierConfig::Alertmanager(AlertmanagerConfig {
        name: "am".into(),
        url: format!("http://{addr}/am/api/v2/alerts").into(),
        token: None,
        username: Some("mp".into()),
        password: Some("basic-pw-1234".into()),
    });
    let notifiers = Notifiers::new(vec![cfg], fast_retry()).unwrap();
    assert!(
        notifiers
            .send(&names(&["am"]), &notification(NotifyState::Firing))
            .await
            .kept()[0]
            .ok
    );
    let got = rx.requests("/am/api/v2/alerts");
    assert_eq!(got.len(), 1);
    // base64("mp:basic-pw-1234")
    assert_eq!(
        header(&got[0], "authorization"),
        Some("Basic bXA6YmFzaWMtcHctMTIzNA==")
    );
}

// ---- secrets --------------------------------------------------------------------------

#[tokio::test]
async fn secrets_never_reach_deliveries() {
    let (addr, _rx) = start_receiver().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let wrong_token = "wrong-token-77aa88bb";
    let notifiers = Notifiers::new(
        vec![
            NotifierConfig::Alertmanager(AlertmanagerConfig {
                name: "am".into(),
                url: format!("http://{addr}").into(),
                token: Some(wrong_token.into()),
                username: None,
                password: None,
            }),
            NotifierConfig::Slack(SlackConfig {
                name: "slack".into(),
                url: format!("http://127.0.0.1:{closed_port}{SLACK_PATH}").into(),
                channel: None,
            }),
            NotifierConfig::Webhook(WebhookConfig {
                name: "hook".into(),
                url: format!(
                    "http://user:url-pw-5566@127.0.0.1:{closed_port}/x?key=query-key-9911"
                )
                .into(),
                secret: Some(WEBHOOK_SECRET.into()),
                headers: BTreeMap::from([(
                    "Authorization".into(),
                    "Bearer header-secret-3344".into(),
                )]),
            }),
        ],
        RetryConfig {
            attempts: 1,
            ..fast_retry()
        },
    )
    .unwrap();
    let d = notifiers
        .send(
            &names(&["am", "slack", "hook"]),
            &notification(NotifyState::Firing),
        )
        .await
        .kept();
    assert!(d.iter().all(|d| !d.ok), "{d:?}");
    // The receiver echoed the token in its 401 body: the notifier masked it.
    assert_eq!(d[0].status, Some(401));
    assert!(
        d[0].error.as_deref().unwrap().contains("unauthorized"),
        "{:?}",
        d[0]
    );
    let all = format!("{d:?} {}", serde_json::to_string(&d).unwrap());
    for secret in [
        wrong_token,
        "slacktokenXYZ123",
        "url-pw-5566",
        "query-key-9911",
        "header-secret-3344",
        WEBHOOK_SECRET,
    ] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    let debug = format!("{notifiers:?}");
    for secret in [
        wrong_token,
        "slacktokenXYZ123",
        "url-pw-5566",
        "query-key-9911",
        "header-secret-3344",
        WEBHOOK_SECRET,
    ] {
        assert!(!debug.contains(secret), "{secret} leaked in Debug: {debug}");
    }
}

// ---- configuration --------------------------------------------------------------------

#[test]
fn config_reads_from_toml_with_defaults() {
    #[derive(serde::Deserialize)]
    struct Daemon {
        alerting: Alerting,
    }
    #[derive(serde::Deserialize)]
    struct Alerting {
        notifiers: Vec<NotifierConfig>,
        #[serde(default)]
        retry: RetryConfig,
    }
    let toml_text = r##"
        [alerting.retry]
        attempts = 2

        [[alerting.notifiers]]
        type = "webhook"
        name = "ops-hook"
        url = "https://ops.example.com/hook"
        secret = "s3cr3t-value"
        headers = { "X-Team" = "data" }

        [[alerting.notifiers]]
        type = "slack"
        name = "slack"
        url = "https://hooks.slack.com/services/T0/B0/XYZ"
        channel = "#ops"

        [[alerting.notifiers]]
        type = "email"
        name = "ops-mail"
        host = "smtp.example.com"
        port = 587
        username = "alerts"
        password = "pw-value-1"
        from = "Mongo Pulse <alerts@example.com>"
        to = ["oncall@example.com"]

        [[alerting.notifiers]]
        type = "alertmanager"
        name = "grafana"
        url = "http://grafana:3000"
        token = "glsa_token"
    "##;
    let d: Daemon = toml::from_str(toml_text).unwrap();
    assert_eq!(
        d.alerting.retry,
        RetryConfig {
            attempts: 2,
            ..RetryConfig::default()
        }
    );
    let kinds: Vec<&str> = d.alerting.notifiers.iter().map(|n| n.name()).collect();
    assert_eq!(kinds, ["ops-hook", "slack", "ops-mail", "grafana"]);
    match &d.alerting.notifiers[2] {
        NotifierConfig::Email(EmailConfig {
            starttls,
            accept_invalid_certs,
            ..
        }) => assert!(
            *starttls && !*accept_invalid_certs,
            "starttls defaults to true"
        ),
        other => panic!("{other:?}"),
    }
    for n in &d.alerting.notifiers {
        n.validate().unwrap();
    }
    Notifiers::new(d.alerting.notifiers.clone(), d.alerting.retry).unwrap();

    // Unknown fields are refused.
    let bad = r##"type = "slack"
name = "s"
url = "https://hooks.slack.com/x"
chanel = "#typo""##;
    let e = toml::from_str::<NotifierConfig>(bad)
        .unwrap_err()
        .to_string()
        .kept();
    assert!(e.contains("chanel"), "{e}");
}

#[test]
fn validation_errors_name_the_notifier_and_the_field_and_hide_secrets() {
    let ok_email = || {
        NotifierConfig::Email(EmailConfig {
            name: "ops-mail".into(),
            host: "smtp.example.com".into(),
            port: 587,
            starttls: true,
            username: Some("alerts".into()),
            password: Some("pw-never-shown".into()),
            from: "alerts@example.com".into(),
            to: vec!["oncall@example.com".into()],
            accept_invalid_certs: false,
        })
    };
    let with = |f: &dyn Fn(&mut NotifierConfig)| {
        let mut c = ok_email();
        f(&mut c);
        c.validate().unwrap_err().to_string().kept()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|c| {
                if let NotifierConfig::Email(EmailConfig { to, .. }) = c {
                    to.clear()
                }
            }),
            "notifier 'ops-mail': to must list at least one address",
        ),
        (
            with(&|c| {
                if let NotifierConfig::Email(EmailConfig { from, .. }) = c {
                    *from = "not an address".into()
                }
            }),
            "notifier 'ops-mail': from",
        ),
        (
            with(&|c| {
                if let NotifierConfig::Email(EmailConfig { port, .. }) = c {
                    *port = 0
                }
            }),
            "notifier 'ops-mail': port",
        ),
        (
            with(&|c| {
                if let NotifierConfig::Email(EmailConfig { username, .. }) = c {
                    *username = None
                }
            }),
            "notifier 'ops-mail': password is set but username is missing",
        ),
        (
            with(&|c| {
                if let NotifierConfig::Email(EmailConfig { starttls, .. }) = c {
                    *starttls = false
                }
            }),
            "notifier 'ops-mail': password needs starttls",
        ),
    ];
    for (err, expected) in &cases {
        assert!(
            err.starts_with(expected),
            "{err:?} should start with {expected:?}"
        );
        assert!(!err.contains("pw-never-shown"), "{err}");
    }

    let e = NotifierConfig::Webhook(WebhookConfig {
        name: "hook".into(),
        url: "ftp://example.com/x".into(),
        secret: None,
        headers: BTreeMap::new(),
    })
    .validate()
    .unwrap_err()
    .to_string()
    .kept();
    assert!(
        e.starts_with("notifier 'hook': url must start with http:// or https://"),
        "{e}"
    );

    let e = NotifierConfig::Webhook(WebhookConfig {
        name: "hook".into(),
        url: "https://example.com/x".into(),
        secret: None,
        headers: BTreeMap::from([("X-MongoPulse-Signature".into(), "forged".into())]),
    })
    .validate()
    .unwrap_err()
    .to_string()
    .kept();
    assert!(e.starts_with("notifier 'hook': headers"), "{e}");

    let e = NotifierConfig::Alertmanager(AlertmanagerConfig {
        name: "am".into(),
        url: "http://grafana:3000".into(),
        token: Some("tok-never-shown".into()),
        username: Some("u".into()),
        password: Some("pw-never-shown".into()),
    })
    .validate()
    .unwrap_err()
    .to_string()
    .kept();
    assert!(
        e.starts_with("notifier 'am': token and username/password are exclusive"),
        "{e}"
    );
    assert!(!e.contains("never-shown"));

    let e = NotifierConfig::Slack(SlackConfig {
        name: "slack".into(),
        url: "hooks.slack.com/services/T0/B0/slack-secret-123".into(),
        channel: None,
    })
    .validate()
    .unwrap_err()
    .to_string()
    .kept();
    assert!(e.starts_with("notifier 'slack': url"), "{e}");
    assert!(!e.contains("slack-secret-123"), "{e}");

    // Notifiers::new reports every problem, duplicates included.
    let e = Notifiers::new(
        vec![
            webhook("same", "http://127.0.0.1:1/a".into()),
            webhook("same", "http://127.0.0.1:1/b".into()),
            webhook("", "http://127.0.0.1:1/c".into()),
        ],
        RetryConfig {
            attempts: 0,
            ..RetryConfig::default()
        },
    )
    .unwrap_err()
    .to_string()
    .kept();
    assert!(e.contains("attempts"), "{e}");
    assert!(
        e.contains("notifier 'same': name is used by another notifier"),
        "{e}"
    );
    assert!(e.contains("name must not be empty"), "{e}");

    // Debug and redacted() never show secrets.
    let c = ok_email();
    let shown = format!("{c:?} {:?}", c.redacted());
    assert!(
        !shown.contains("pw-never-shown") && shown.contains("****"),
        "{shown}"
    );
}

// ---- email ----------------------------------------------------------------------------

#[tokio::test]
async fn email_over_starttls_with_auth_reaches_the_smtp_server() {
    let smtp = Smtp::start(&[
        "--starttls",
        "--user",
        SMTP_USER,
        "--password",
        SMTP_PASSWORD,
    ]);
    let notifiers = Notifiers::new(
        vec![email(smtp.port, true, Some(SMTP_PASSWORD), true)],
        fast_retry(),
    )
    .unwrap();
    let d = notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Firing))
        .await
        .kept();
    assert!(d[0].ok, "{:?}", d[0]);
    assert_eq!(
        (d[0].kind.as_str(), d[0].attempts, d[0].status),
        ("email", 1, Some(250))
    );

    let auth = smtp.next("auth");
    assert_eq!(auth["ok"], true);
    assert_eq!(auth["login"], SMTP_USER);
    let m = smtp.next("message");
    assert_eq!(m["tls"], true, "the message travelled over STARTTLS");
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["login"], SMTP_USER);
    assert_eq!(m["mail_from"], "alerts@mongopulse.test");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["oncall@example.test", "data@example.test"])
    );
    let (head, body) = mail_text(m["data"].as_str().unwrap());
    assert!(
        head.contains("Subject: [FIRING] High error rate (country=FR)"),
        "{head}"
    );
    assert!(
        head.contains("From: \"Mongo Pulse\" <alerts@mongopulse.test>")
            || head.contains("From: Mongo Pulse <alerts@mongopulse.test>"),
        "{head}"
    );
    assert!(head.contains("oncall@example.test"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("message-id: <"),
        "{head}"
    );
    assert!(body.contains("Value:      3.2"), "{body}");
    assert!(body.contains("Threshold:  3"), "{body}");
    assert!(body.contains("Severity:   critical"), "{body}");
    assert!(body.contains("Error rate 3.2% in FR"), "{body}");
    assert!(body.contains("country = FR"), "{body}");
    assert!(
        body.contains("http://grafana:3000/d/mongopulse?var-country=FR"),
        "{body}"
    );
    assert!(!m["data"].as_str().unwrap().contains(SMTP_PASSWORD));

    // Resolved.
    let d = notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Resolved))
        .await
        .kept();
    assert!(d[0].ok, "{:?}", d[0]);
    let m = smtp.next("message");
    let (head, body) = mail_text(m["data"].as_str().unwrap());
    assert!(
        head.contains("Subject: [RESOLVED] High error rate (country=FR)"),
        "{head}"
    );
    assert!(
        body.contains("Ended:      2024-12-09T14:45:00.000Z"),
        "{body}"
    );
}

#[tokio::test]
async fn email_over_plain_smtp_without_auth() {
    let smtp = Smtp::start(&[]);
    let notifiers =
        Notifiers::new(vec![email(smtp.port, false, None, false)], fast_retry()).unwrap();
    let d = notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Firing))
        .await
        .kept();
    assert!(d[0].ok, "{:?}", d[0]);
    let m = smtp.next("message");
    assert_eq!(m["tls"], false);
    assert_eq!(m["authenticated"], false);
    let (head, _) = mail_text(m["data"].as_str().unwrap());
    assert!(
        head.contains("Subject: [FIRING] High error rate (country=FR)"),
        "{head}"
    );
}

#[tokio::test]
async fn email_wrong_password_fails_once_without_showing_it() {
    let smtp = Smtp::start(&[
        "--starttls",
        "--user",
        SMTP_USER,
        "--password",
        SMTP_PASSWORD,
    ]);
    let wrong = "wrong-pw-00112233";
    let notifiers = Notifiers::new(
        vec![email(smtp.port, true, Some(wrong), true)],
        fast_retry(),
    )
    .unwrap();
    let d = &notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok);
    assert_eq!((d.attempts, d.status), (1, Some(535)), "{d:?}");
    assert!(!format!("{d:?}").contains(wrong));
    assert_eq!(smtp.next("auth")["ok"], false);
    assert!(smtp.drain().iter().all(|e| e["event"] != "message"));
}

#[tokio::test]
async fn email_checks_the_certificate_unless_told_not_to() {
    let smtp = Smtp::start(&["--starttls"]);
    let notifiers =
        Notifiers::new(vec![email(smtp.port, true, None, false)], fast_retry()).unwrap();
    let d = &notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(!d.ok, "a self-signed certificate must be refused: {d:?}");
    assert_eq!(d.attempts, 1, "TLS failures are not retried: {d:?}");
    let err = d.error.as_deref().unwrap().to_ascii_lowercase();
    assert!(err.contains("tls") || err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn email_transient_failure_is_retried() {
    let smtp = Smtp::start(&["--tempfail", "1"]);
    let notifiers =
        Notifiers::new(vec![email(smtp.port, false, None, false)], fast_retry()).unwrap();
    let d = &notifiers
        .send(&names(&["ops-mail"]), &notification(NotifyState::Firing))
        .await
        .kept()[0];
    assert!(d.ok, "{d:?}");
    assert_eq!((d.attempts, d.status), (2, Some(250)));
    smtp.next("tempfail");
    smtp.next("message");
}
