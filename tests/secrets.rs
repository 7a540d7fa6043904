//! No secret the suite configures — a MongoDB password, an API key, an HMAC secret, a
//! bearer token, an SMTP password, a Slack webhook path — appears in any line the
//! product logged or any error text it answered, over the whole suite.
//!
//! `tests/support/capture.rs` keeps every spawned daemon's and plugin's output and every
//! error text the tests received; scripts/test.sh clears that folder, runs the whole
//! suite on both backends, adds cargo's own output, and then runs this binary's ignored
//! test to scan it all. The test that is not ignored keeps the list honest: a secret
//! written into a test but missing here fails it.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every secret value the tests configure (or present, for refused keys).
const SUITE_SECRETS: &[&str] = &[
    // API keys (tests/support/daemon.rs, alerting.rs, rollups_daemon.rs, ingest.rs).
    "test-key-0123456789",
    "alerting-test-key-51d2",
    "backfill-test-key-8c3e",
    "wrong-key-7a41e0",
    "refused-key-90e4",
    "flood-key-9876543210",
    // The API key loadgen requires but does not use with --kafka (sources.rs).
    "unused-with-kafka",
    // The MongoDB password in a URI (check_health.rs).
    "Pa55wordXyz",
    "Daemon-Pw-77e1c0",
    // Webhook HMAC secrets and bearer tokens (alerting.rs, dashboards.rs, notifiers.rs).
    "hook-secret",
    "am-token",
    "demo-secret",
    "whsec-test-5f1c9a7e",
    "am-token-9b8c7d6e",
    "not-the-receivers-secret",
    "wrong-token-77aa88bb",
    "header-secret-3344",
    "s3cr3t-value",
    "glsa_token",
    "tok-never-shown",
    // The Slack webhook's secret path.
    "slacktokenXYZ123",
    "slack-secret-123",
    // SMTP and basic-auth passwords.
    "smtp-pw-4e3d2c1b",
    "basic-pw-1234",
    "pw-value-1",
    "pw-never-shown",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Secret-shaped literals written in the test sources: TOML/YAML `secret|token|password
/// = "…"`, struct fields `secret|token|password: Some("…")`, `const …SECRET|TOKEN|
/// PASSWORD|KEY…: &str = "…"`, API keys given to the daemon or presented to it, and the
/// password of a `mongodb://user:password@` URI.
fn secrets_written_in_tests() -> BTreeSet<String> {
    let patterns = [
        r#"(?:secret|token|password)\s*=\s*\\?"([^"\\]+)\\?""#,
        r#"(?:secret|token|password):\s*Some\("([^"]+)""#,
        r#"const \w*(?:SECRET|TOKEN|PASSWORD|KEY)\w*: &str = "([^"]+)""#,
        r#"MONGOPULSE_API_KEYS",\s*"[^":]+:([^"]+)""#,
        r#"MONGOPULSE_LOADGEN_KEY",\s*"([^"]+)""#,
        r#"(?:x-api-key|bearer_auth\()",?\s*"([^"]+)""#,
        r#"mongodb://[^:/"@]+:([^@"]+)@"#,
        r#""Bearer ([^"{]+)""#,
    ]
    .map(|p| regex::Regex::new(p).expect("valid pattern"));
    let mut sources = Vec::new();
    files_under(&repo().join("tests"), &mut sources);
    let mut found = BTreeSet::new();
    for path in sources {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if path.ends_with("secrets.rs") {
            continue;
        }
        for re in &patterns {
            for c in re.captures_iter(&text) {
                found.insert(c[1].to_string());
            }
        }
    }
    found
}

#[test]
fn every_secret_the_tests_configure_is_listed() {
    let listed: BTreeSet<&str> = SUITE_SECRETS.iter().copied().collect();
    let missing: Vec<String> = secrets_written_in_tests()
        .into_iter()
        .filter(|s| !listed.contains(s.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "secrets written in tests/ but not in SUITE_SECRETS (add them, so the whole-suite scan looks for them): {missing:?}"
    );
    // The detection itself works: a planted secret in a source-like text is found.
    assert!(secrets_written_in_tests().contains("test-key-0123456789"));
    for s in SUITE_SECRETS {
        assert!(
            s.len() >= 8,
            "'{s}' is too short to search for without false hits; use a longer secret in the test"
        );
    }
}

/// Where a secret shows: the file and the line, or `None`.
fn find_secret(text: &str, secret: &str) -> Option<usize> {
    let encoded: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    text.lines()
        .position(|l| l.contains(secret) || l.contains(&encoded))
}

#[test]
fn the_scan_finds_a_secret_written_plainly_or_percent_encoded() {
    assert_eq!(
        find_secret("a\nuri mongodb://u:Pa55wordXyz@h", "Pa55wordXyz"),
        Some(1)
    );
    assert_eq!(
        find_secret("x mongodb://u:p%40ss%3Aw0rd@h", "p@ss:w0rd"),
        Some(0)
    );
    assert_eq!(find_secret("mongodb://u:****@h", "Pa55wordXyz"), None);
}

#[test]
#[ignore = "scans the whole suite's output: scripts/test.sh runs it after every other test"]
fn no_configured_secret_reaches_a_log_line_or_an_error_text() {
    let folder = support::capture::folder();
    let mut files = Vec::new();
    files_under(&folder, &mut files);
    let mut kinds = BTreeSet::new();
    let mut bytes = 0usize;
    let mut leaks = Vec::new();
    for path in &files {
        let Ok(raw) = std::fs::read(path) else {
            continue;
        };
        bytes += raw.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for kind in ["mongopulsed", "gpx_mongopulse", "errors", "cargo"] {
            if name.contains(kind) {
                kinds.insert(kind);
            }
        }
        let text = String::from_utf8_lossy(&raw);
        for secret in SUITE_SECRETS {
            if let Some(line) = find_secret(&text, secret) {
                leaks.push(format!(
                    "'{secret}' in {} line {}",
                    path.display(),
                    line + 1
                ));
            }
        }
    }
    // Not vacuous: the daemon's and the plugin's logs, the error texts and cargo's own
    // output are all there.
    assert_eq!(
        kinds.len(),
        4,
        "{} holds {} files ({bytes} bytes) with only {kinds:?}: run the whole suite with scripts/test.sh first",
        folder.display(),
        files.len()
    );
    eprintln!(
        "scanned {} files, {bytes} bytes, for {} secrets",
        files.len(),
        SUITE_SECRETS.len()
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

/// The daemon given a URI with a password it cannot reach: readiness, the refused events
/// and its log say the database is unreachable, and never show the password.
#[tokio::test]
async fn a_daemon_that_cannot_reach_mongodb_never_shows_the_uri_password() {
    const PASSWORD: &str = "Daemon-Pw-77e1c0";
    let port = support::plugin_harness::closed_port();
    let uri = format!("mongodb://opsuser:{PASSWORD}@127.0.0.1:{port}/?authSource=admin");
    let daemon = support::daemon::Daemon::spawn_on(
        &uri,
        "secrets_test",
        false,
        &[("MONGOPULSE__MONGODB__CONNECT_TIMEOUT_SECS", "0.5")],
    );
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let readiness = loop {
        let r = daemon
            .http
            .get(daemon.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz answered");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        if status == 503 && body.contains("127.0.0.1") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never said MongoDB is unreachable: {status} {body}; {}",
            daemon.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    support::capture::error_text("GET /readyz", &readiness);
    let (status, answer, _) = daemon
        .post(
            support::daemon::seed_event(1, chrono::Utc::now()).to_string(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    let log = daemon.stderr();
    for text in [&readiness, &answer.to_string(), &log] {
        assert_eq!(
            find_secret(text, PASSWORD),
            None,
            "the password leaked: {text}"
        );
    }
}
