//! Runs the real `mongopulsed` binary against a test MongoDB and talks HTTP to it.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::capture;
use super::mongo::TestMongo;

pub const API_KEY: &str = "test-key-0123456789";

pub struct Daemon {
    child: Child,
    pub base_url: String,
    stderr: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Starts the daemon on a free port with its own database, with `env`
    /// overriding configuration (`MONGOPULSE__…`), and waits until it is ready.
    pub async fn start(mongo: &TestMongo, env: &[(&str, &str)]) -> Daemon {
        let daemon = Self::spawn(mongo, env);
        daemon.wait_ready().await;
        daemon
    }

    /// Starts the daemon without waiting for readiness.
    pub fn spawn(mongo: &TestMongo, env: &[(&str, &str)]) -> Daemon {
        Self::spawn_on(&mongo.uri, &mongo.db_name, mongo.is_secantus(), env)
    }

    /// Starts the daemon on any MongoDB URI (one that may not answer), without waiting
    /// for readiness.
    pub fn spawn_on(uri: &str, database: &str, secantus: bool, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mongopulsed"));
        if secantus {
            // SecantusDB's Python server is several times slower than the stand-in under
            // many concurrent writers (several tests posting 2,000-event batches at once):
            // give its inserts longer before the daemon gives up with a 503. A test that
            // sets its own write timeout (in `env`, applied after this) keeps it.
            cmd.env("MONGOPULSE__INGEST__WRITER__WRITE_TIMEOUT_MS", "30000");
        }
        let mut child = cmd
            .env("MONGOPULSE__MONGODB__URI", daemon_uri(uri, secantus))
            .env("MONGOPULSE__MONGODB__DATABASE", database)
            .env("MONGOPULSE__HTTP__LISTEN", "127.0.0.1:0")
            .env("MONGOPULSE_API_KEYS", format!("test:{API_KEY}"))
            .env("MONGOPULSE__LOG__LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mongopulsed");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut kept = capture::Sink::new("mongopulsed");
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.write(&buf[..n]);
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + super::PATIENCE;
        let base_url = loop {
            if let Some(url) = listening_url(&stderr.lock().unwrap()) {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mongopulsed exited with {status}: {}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mongopulsed did not start: {}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Daemon {
            child,
            base_url,
            stderr,
            http: reqwest::Client::builder()
                .timeout(super::PATIENCE)
                .build()
                .expect("http client"),
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mongopulsed never became ready: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A POST to /v1/events with the test key, to finish and send.
    pub fn events_request(&self) -> reqwest::RequestBuilder {
        self.http.post(self.url("/v1/events")).bearer_auth(API_KEY)
    }

    /// POSTs a body to /v1/events with the test key.
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut req = self.events_request().body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("POST /v1/events answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        if status >= 400 {
            capture::error_text("POST /v1/events", &text);
        }
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json, headers)
    }

    pub async fn post_json(&self, events: &serde_json::Value) -> (u16, serde_json::Value) {
        let (s, j, _) = self
            .post(events.to_string(), &[("content-type", "application/json")])
            .await;
        (s, j)
    }

    /// The daemon's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics answered");
        r.text().await.expect("metrics text")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until no insert of the daemon awaits MongoDB's answer or a lookup of
    /// what it stored: until then MongoDB may still store events (and the daemon count
    /// them), so a recount of `events` taken earlier can fall short.
    pub async fn wait_until_inserts_settled(&self) {
        let gauge = super::prom::value;
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let m = self.metrics().await;
            let pending = gauge(&m, "mongopulse_ingest_writes_unanswered ").unwrap_or(0.0)
                + gauge(&m, "mongopulse_ingest_writes_looked_up ").unwrap_or(0.0);
            if pending == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "inserts never settled: {pending} still unanswered or looked up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the process to exit (bounded) and returns its status.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "mongopulsed did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}

fn listening_url(log: &str) -> Option<String> {
    let at = log.find("listening on http://")?;
    let rest = &log[at + "listening on ".len()..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"')?;
    Some(rest[..end].to_string())
}

/// A seed-shaped event; `seq` goes into `attributes.seq` so tests can find it.
pub fn seed_event(seq: usize, at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let countries = ["FR", "US", "DE", "GB", "JP"];
    let devices = ["mobile", "desktop", "tablet"];
    let browsers = ["Chrome", "Safari", "Firefox"];
    serde_json::json!({
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "metadata": {
            "eventType": "page_view",
            "source": "web",
            "version": "2.1.0",
            "dimensions": {
                "userId": format!("u{}", seq % 97),
                "sessionId": format!("s{}", seq % 211),
                "deviceType": devices[seq % devices.len()],
                "browser": browsers[seq % browsers.len()],
                "os": "iOS",
                "country": countries[seq % countries.len()],
                "city": "Paris"
            }
        },
        "metrics": { "pageLoadTime": 800 + (seq % 1000) as i64, "timeOnPage": 10 + (seq % 50) as i64, "scrollDepth": 0.5 },
        "attributes": { "referrer": "https://google.com", "landingPage": format!("/p/{}", seq % 13), "seq": seq },
        "geo": { "country": countries[seq % countries.len()], "city": "Paris" }
    })
}

/// The URI the daemon is given. On SecantusDB the driver's automatic retry of a write is
/// turned off: when a paused SecantusDB wakes up it runs the interrupted insert and its
/// retry (same session and `txnNumber`, on a new connection) side by side and stores the
/// batch twice, where mongod serialises the two on the session and replays the first
/// one's reply. Without the retry the daemon's own lookup of a batch whose outcome is
/// unknown (`src/ingest/writer.rs`) is what is tested there.
fn daemon_uri(uri: &str, secantus: bool) -> String {
    if secantus {
        let joiner = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{joiner}retryWrites=false")
    } else {
        uri.to_string()
    }
}
