//! Alertmanager API v2: `POST <grafana>/api/alertmanager/grafana/api/v2/alerts` (or any
//! URL ending in `/api/v2/alerts`) with a JSON array holding one alert:
//!
//! ```json
//! [{"labels": {"alertname": "Errors", "severity": "critical", "country": "FR"},
//!   "annotations": {"summary": "…", "description": "…", "value": "3.2", "threshold": "3"},
//!   "startsAt": "2024-12-09T14:30:15.000Z",
//!   "endsAt": "2024-12-09T14:35:15.000Z",
//!   "generatorURL": "http://grafana:3000/d/…"}]
//! ```
//!
//! - Labels identify the alert in Alertmanager, so they are sent as given, plus
//!   `alertname` (the rule name) when missing; names that are not valid Prometheus label
//!   names get their invalid characters replaced by `_`.
//! - Annotations as given, plus `value` and `threshold` (formatted numbers) when absent.
//! - `endsAt`: for a resolved alert, its end (`now` if the engine gave none), which tells
//!   Alertmanager it is resolved. For a firing alert, `now +` [`FIRING_VALIDITY`], the
//!   Prometheus convention: a client that stops sending (daemon down) does not leave an
//!   alert firing for ever, and a client that keeps firing re-sends well before that
//!   time ([`RESEND_INTERVAL`]). Omitting `endsAt` would not avoid this: Alertmanager then
//!   applies its `resolve_timeout` (5 minutes by default), with the same effect but a
//!   delay the sender does not control. **The engine must therefore re-send firing alerts
//!   to Alertmanager notifiers at least every [`RESEND_INTERVAL`]**, not only on
//!   transitions, or Alertmanager resolves them on its own.
//! - Auth: `Authorization: Bearer <token>` or basic auth.
//!
//! Note on Grafana: its built-in ("grafana") Alertmanager does not accept alerts pushed
//! from outside — Grafana's source answers POST on that path with 501 in versions 8–10
//! and routes no such POST in later ones. For Grafana, point `url` at
//! `<grafana>/api/alertmanager/<uid of an Alertmanager data source>/api/v2/alerts`, which
//! Grafana proxies to that Alertmanager, or at the Alertmanager itself
//! (`http://alertmanager:9093/api/v2/alerts`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde_json::{json, Value};

use super::error::SenderError;
use super::http;
use super::retry::AttemptResult;
use super::text::{number, time};
use super::{AlertmanagerConfig, Notification, NotifyState};

/// The path appended to a base URL (Grafana's Alertmanager API for its own Alertmanager).
pub const GRAFANA_ALERTS_PATH: &str = "/api/alertmanager/grafana/api/v2/alerts";

/// How long a firing alert stays valid in Alertmanager without being re-sent (4 ×
/// [`RESEND_INTERVAL`], as Prometheus does with its resend delay).
pub const FIRING_VALIDITY: Duration = Duration::from_secs(4 * 60);

/// How often the engine should re-send a still-firing alert to an Alertmanager notifier
/// (Prometheus' default resend delay, and the engine's one-minute evaluation period).
pub const RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// The URL alerts are POSTed to: `url` itself when its path already ends in
/// `/api/v2/alerts`, else `url` + [`GRAFANA_ALERTS_PATH`] (a sub-path such as
/// `http://host/grafana` is kept).
pub fn alerts_endpoint(url: &str) -> Result<String, SenderError> {
    let mut u = Url::parse(url).map_err(|e| SenderError::Url(e.to_string()))?;
    let path = u.path().trim_end_matches('/').to_string();
    if !path.ends_with("/api/v2/alerts") {
        u.set_path(&format!("{path}{GRAFANA_ALERTS_PATH}"));
    }
    Ok(u.to_string())
}

/// The JSON array posted for `n`, `now` being the send time.
pub fn alertmanager_payload(n: &Notification, now: DateTime<Utc>) -> Value {
    let mut labels = BTreeMap::new();
    for (k, v) in &n.labels {
        labels.entry(label_name(k)).or_insert_with(|| v.clone());
    }
    labels
        .entry("alertname".to_string())
        .or_insert_with(|| n.rule_name.clone());
    let mut annotations = n.annotations.clone();
    if let Some(v) = n.value {
        annotations
            .entry("value".to_string())
            .or_insert_with(|| number(v));
    }
    if let Some(t) = n.threshold {
        annotations
            .entry("threshold".to_string())
            .or_insert_with(|| number(t));
    }
    let ends_at = match n.state {
        NotifyState::Resolved => n.ends_at.unwrap_or(now),
        NotifyState::Firing => {
            now + chrono::Duration::from_std(FIRING_VALIDITY).unwrap_or(chrono::Duration::MAX)
        }
    };
    let mut alert = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": time(&n.starts_at),
        "endsAt": time(&ends_at),
    });
    if !n.generator_url.is_empty() {
        alert["generatorURL"] = Value::String(n.generator_url.clone());
    }
    Value::Array(vec![alert])
}

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

enum Auth {
    None,
    /// `Authorization: Bearer …`, marked sensitive.
    Bearer(HeaderValue),
    Basic {
        username: String,
        password: String,
    },
}

pub(crate) struct Alertmanager {
    endpoint: String,
    auth: Auth,
}

impl Alertmanager {
    pub(crate) fn new(config: &AlertmanagerConfig) -> Result<Alertmanager, SenderError> {
        let endpoint = alerts_endpoint(config.url.expose())?;
        let auth = match (&config.token, &config.username) {
            (Some(t), _) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| SenderError::TokenNotHeaderSafe)?;
                v.set_sensitive(true);
                Auth::Bearer(v)
            }
            (None, Some(u)) => Auth::Basic {
                username: u.clone(),
                password: config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            },
            (None, None) => Auth::None,
        };
        Ok(Alertmanager { endpoint, auth })
    }

    pub(crate) async fn attempt(
        &self,
        client: &reqwest::Client,
        body: &bytes::Bytes,
    ) -> AttemptResult {
        let mut req = client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(v) => req = req.header(AUTHORIZATION, v.clone()),
            // reqwest marks the resulting header sensitive.
            Auth::Basic { username, password } => req = req.basic_auth(username, Some(password)),
        }
        http::attempt(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_the_grafana_path_unless_given() {
        assert_eq!(
            alerts_endpoint("http://grafana:3000").unwrap(),
            "http://grafana:3000/api/alertmanager/grafana/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("http://h/grafana/").unwrap(),
            "http://h/grafana/api/alertmanager/grafana/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("http://am:9093/api/v2/alerts").unwrap(),
            "http://am:9093/api/v2/alerts"
        );
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("device.type"), "device_type");
        assert_eq!(label_name("1x"), "_1x");
        assert_eq!(label_name("ok_name"), "ok_name");
    }
}
