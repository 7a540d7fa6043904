//! Notifier configuration: what the daemon's TOML (`[[alerting.notifiers]]`) and the rules
//! provisioning file hold, and its validation.
//!
//! In: TOML/YAML tables tagged by `type`. Out: one struct per kind ([`WebhookConfig`],
//! [`SlackConfig`], [`EmailConfig`], [`AlertmanagerConfig`]) behind the thin
//! [`NotifierConfig`] tag; each kind checks its own fields and knows its own secrets.
//! Secret fields are [`Secret`] or [`SecretUrl`](super::SecretUrl), so `Debug` cannot
//! show them whatever the kind.

use std::collections::BTreeMap;

use lettre::message::Mailbox;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::error::{InvalidNotifier, NotifierProblem, RetryError, UrlProblem};
use super::secret::{EndpointUrl, Secret, SlackUrl};

/// One notifier, tagged by `type`:
///
/// ```toml
/// [[alerting.notifiers]]
/// type = "webhook"          # webhook | slack | email | alertmanager
/// name = "ops-hook"
/// url = "https://ops.example.com/mongopulse"
/// secret = "…"              # optional: signs each body (X-MongoPulse-Signature)
/// headers = { "X-Team" = "data" }
///
/// [[alerting.notifiers]]
/// type = "email"
/// name = "ops-mail"
/// host = "smtp.example.com"
/// port = 587
/// starttls = true           # default; false = plain SMTP (no TLS at all)
/// username = "alerts"       # optional, with password: AUTH PLAIN or LOGIN
/// password = "…"
/// from = "Mongo Pulse <alerts@example.com>"
/// to = ["oncall@example.com"]
/// ```
///
/// `Debug` masks every secret: webhook `secret` and header values, the password and
/// query string of any URL, the whole path of a Slack URL (it is the token), the SMTP
/// `password` and the Alertmanager `token`/`password`. `Serialize` writes the secrets
/// (the config must round-trip); use [`NotifierConfig::redacted`] before showing a
/// config to anyone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NotifierConfig {
    Webhook(WebhookConfig),
    Slack(SlackConfig),
    Email(EmailConfig),
    Alertmanager(AlertmanagerConfig),
}

/// POST of a JSON document to any HTTP endpoint, optionally HMAC-signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: EndpointUrl,
    /// HMAC-SHA256 key; when set every request carries
    /// `X-MongoPulse-Signature: sha256=<hex>` computed over the exact body bytes.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Extra request headers (e.g. an API key); their values are treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// A Slack incoming webhook (`https://hooks.slack.com/services/…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub name: String,
    pub url: SlackUrl,
    /// Overrides the webhook's default channel (legacy webhooks only honour it).
    #[serde(default)]
    pub channel: Option<String>,
}

/// Email over SMTP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Upgrade the connection with STARTTLS and refuse to send if the server cannot
    /// (default). `false` sends in clear text; credentials are then only allowed to a
    /// loopback host.
    #[serde(default = "default_true")]
    pub starttls: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// A mailbox: `alerts@example.com` or `Mongo Pulse <alerts@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// Skip certificate verification (self-signed test servers only).
    #[serde(default)]
    pub accept_invalid_certs: bool,
}

/// An Alertmanager-compatible alerts API (Grafana, Prometheus Alertmanager).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub name: String,
    /// Grafana's base URL, e.g. `http://grafana:3000`: alerts go to
    /// `<url>/api/alertmanager/grafana/api/v2/alerts`. A URL whose path already ends
    /// in `/api/v2/alerts` is used as is, e.g.
    /// `http://grafana:3000/api/alertmanager/<alertmanager data source uid>/api/v2/alerts`
    /// or `http://alertmanager:9093/api/v2/alerts`.
    pub url: EndpointUrl,
    /// `Authorization: Bearer <token>` (a Grafana service-account token).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Basic auth, with `password`; exclusive with `token`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

fn default_true() -> bool {
    true
}

/// What differs between the kinds of notifier; [`NotifierConfig`] forwards to it.
pub(crate) trait NotifierKind {
    /// The kind's own fields (the name is checked by [`NotifierConfig::validate`]).
    fn check(&self) -> Result<(), NotifierProblem>;
    /// A copy with every secret masked, wrapped in its tag.
    fn redacted(&self) -> NotifierConfig;
    /// Every secret string, for scrubbing library messages.
    fn secrets(&self) -> Vec<String>;
}

impl NotifierConfig {
    /// The kind's TOML `type`, the notifier's name and the kind's behaviour: the one
    /// place that matches on the tag.
    fn tagged(&self) -> (&'static str, &str, &dyn NotifierKind) {
        match self {
            NotifierConfig::Webhook(c) => ("webhook", &c.name, c),
            NotifierConfig::Slack(c) => ("slack", &c.name, c),
            NotifierConfig::Email(c) => ("email", &c.name, c),
            NotifierConfig::Alertmanager(c) => ("alertmanager", &c.name, c),
        }
    }

    fn as_kind(&self) -> &dyn NotifierKind {
        self.tagged().2
    }

    /// The notifier's name, unique among the configured notifiers.
    pub fn name(&self) -> &str {
        self.tagged().1
    }

    /// `webhook`, `slack`, `email` or `alertmanager` (the TOML `type`).
    pub fn kind(&self) -> &'static str {
        self.tagged().0
    }

    /// Checks every field; the message names the notifier and the field, e.g.
    /// `notifier 'ops-mail': to must list at least one address`. Never quotes a secret.
    pub fn validate(&self) -> Result<(), InvalidNotifier> {
        let name = self.name();
        check_name(name)
            .and_then(|()| self.as_kind().check())
            .map_err(|problem| InvalidNotifier {
                name: printable(name),
                problem,
            })
    }

    /// A copy with every secret replaced by `****` (URLs reduced as in `Debug`), safe to
    /// return from an API or to log.
    pub fn redacted(&self) -> NotifierConfig {
        self.as_kind().redacted()
    }

    /// Every secret string of this config, for scrubbing messages.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.as_kind().secrets()
    }
}

fn check_name(name: &str) -> Result<(), NotifierProblem> {
    if name.trim().is_empty() {
        return Err(NotifierProblem::EmptyName);
    }
    if name.chars().any(char::is_control) {
        return Err(NotifierProblem::ControlCharacterInName);
    }
    if name.chars().count() > 100 {
        return Err(NotifierProblem::NameTooLong);
    }
    Ok(())
}

impl NotifierKind for WebhookConfig {
    fn check(&self) -> Result<(), NotifierProblem> {
        check_http_url(self.url.expose()).map_err(NotifierProblem::Url)?;
        if self.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(NotifierProblem::EmptySigningSecret);
        }
        for (k, v) in &self.headers {
            let Ok(header) = reqwest::header::HeaderName::from_bytes(k.as_bytes()) else {
                return Err(NotifierProblem::InvalidHeaderName(printable(k)));
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(NotifierProblem::ReservedHeader(header.as_str().into()));
            }
            if reqwest::header::HeaderValue::from_str(v.expose()).is_err() {
                return Err(NotifierProblem::InvalidHeaderValue(header.as_str().into()));
            }
        }
        Ok(())
    }

    fn redacted(&self) -> NotifierConfig {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.masked()))
            .collect();
        NotifierConfig::Webhook(WebhookConfig {
            url: self.url.masked(),
            secret: self.secret.as_ref().map(Secret::masked),
            headers,
            ..self.clone()
        })
    }

    fn secrets(&self) -> Vec<String> {
        let mut out = self.url.secrets();
        out.extend(self.secret.iter().map(|s| s.expose().to_string()));
        // Only the values of credential-like headers: masking every header value
        // (say `X-Team: data`) would garble messages that happen to contain it.
        out.extend(
            self.headers
                .iter()
                .filter(|(k, _)| is_credential_header(k))
                .map(|(_, v)| v.expose().to_string()),
        );
        out
    }
}

impl NotifierKind for SlackConfig {
    fn check(&self) -> Result<(), NotifierProblem> {
        check_http_url(self.url.expose()).map_err(NotifierProblem::Url)?;
        if self.channel.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(NotifierProblem::EmptyWhenSet("channel"));
        }
        Ok(())
    }

    fn redacted(&self) -> NotifierConfig {
        NotifierConfig::Slack(SlackConfig {
            url: self.url.masked(),
            ..self.clone()
        })
    }

    fn secrets(&self) -> Vec<String> {
        self.url.secrets()
    }
}

impl NotifierKind for EmailConfig {
    fn check(&self) -> Result<(), NotifierProblem> {
        let host = &self.host;
        if host.trim().is_empty() {
            return Err(NotifierProblem::EmptyHost);
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(NotifierProblem::InvalidHost(printable(host)));
        }
        if self.port == 0 {
            return Err(NotifierProblem::InvalidPort);
        }
        if let Err(e) = self.from.parse::<Mailbox>() {
            return Err(NotifierProblem::InvalidFrom {
                address: printable(&self.from),
                reason: e.to_string(),
            });
        }
        if self.to.is_empty() {
            return Err(NotifierProblem::NoRecipient);
        }
        for address in &self.to {
            if let Err(e) = address.parse::<Mailbox>() {
                return Err(NotifierProblem::InvalidRecipient {
                    address: printable(address),
                    reason: e.to_string(),
                });
            }
        }
        check_credential_pair(&self.username, &self.password)?;
        if self.password.is_some() && !self.starttls && !is_loopback_host(host) {
            return Err(NotifierProblem::ClearTextCredentials);
        }
        if self.accept_invalid_certs && !self.starttls {
            return Err(NotifierProblem::InvalidCertsWithoutTls);
        }
        Ok(())
    }

    fn redacted(&self) -> NotifierConfig {
        NotifierConfig::Email(EmailConfig {
            password: self.password.as_ref().map(Secret::masked),
            ..self.clone()
        })
    }

    fn secrets(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|p| p.expose().to_string())
            .collect()
    }
}

impl NotifierKind for AlertmanagerConfig {
    fn check(&self) -> Result<(), NotifierProblem> {
        check_http_url(self.url.expose()).map_err(NotifierProblem::Url)?;
        if self.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return Err(NotifierProblem::EmptyWhenSet("token"));
        }
        check_credential_pair(&self.username, &self.password)?;
        if self.token.is_some() && self.username.is_some() {
            return Err(NotifierProblem::TokenAndBasicAuth);
        }
        Ok(())
    }

    fn redacted(&self) -> NotifierConfig {
        NotifierConfig::Alertmanager(AlertmanagerConfig {
            url: self.url.masked(),
            token: self.token.as_ref().map(Secret::masked),
            password: self.password.as_ref().map(Secret::masked),
            ..self.clone()
        })
    }

    fn secrets(&self) -> Vec<String> {
        let mut out = self.url.secrets();
        out.extend(
            [&self.token, &self.password]
                .into_iter()
                .flatten()
                .map(|s| s.expose().to_string()),
        );
        out
    }
}

/// Username and password come together, neither empty. Email and Alertmanager share it,
/// so one login is checked the same way wherever it is configured.
fn check_credential_pair(
    username: &Option<String>,
    password: &Option<Secret>,
) -> Result<(), NotifierProblem> {
    match (username, password) {
        (Some(u), Some(_)) if u.is_empty() => Err(NotifierProblem::EmptyWhenSet("username")),
        (Some(_), Some(p)) if p.expose().is_empty() => {
            Err(NotifierProblem::EmptyWhenSet("password"))
        }
        (Some(_), None) => Err(NotifierProblem::HalfCredentials {
            given: "username",
            missing: "password",
        }),
        (None, Some(_)) => Err(NotifierProblem::HalfCredentials {
            given: "password",
            missing: "username",
        }),
        _ => Ok(()),
    }
}

/// Whether a header's value is a credential (masked in messages; every header value is
/// masked in `Debug` and `redacted` regardless).
fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "pass",
        "cookie",
        "signature",
        "session",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Headers the webhook notifier sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "x-mongopulse-signature",
    "x-mongopulse-timestamp",
];

/// Retries of one delivery: `attempts` in all (the first one included), each bounded by
/// `timeout_ms`; between two attempts an exponential backoff starting at
/// `initial_backoff_ms`, doubling, capped at `max_backoff_ms`, with jitter (each pause is
/// drawn between half and all of its nominal value).
///
/// ```toml
/// [alerting.retry]
/// attempts = 4
/// initial_backoff_ms = 500
/// max_backoff_ms = 10000
/// timeout_ms = 5000
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, at least 1 (default 4).
    pub attempts: u32,
    /// Pause after the first failed attempt (default 500 ms).
    pub initial_backoff_ms: u64,
    /// Upper bound of any pause (default 10 s).
    pub max_backoff_ms: u64,
    /// Bound of one attempt: connection, TLS, request and response (default 5 s).
    pub timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 4,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
            timeout_ms: 5_000,
        }
    }
}

impl RetryConfig {
    /// `attempts` in 1..=20, `timeout_ms` ≥ 1, `initial_backoff_ms` ≤ `max_backoff_ms`.
    pub fn validate(&self) -> Result<(), RetryError> {
        if self.attempts == 0 || self.attempts > 20 {
            return Err(RetryError::Attempts(self.attempts));
        }
        if self.timeout_ms == 0 {
            return Err(RetryError::ZeroTimeout);
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return Err(RetryError::BackoffOrder {
                initial: self.initial_backoff_ms,
                max: self.max_backoff_ms,
            });
        }
        Ok(())
    }
}

/// `Ok` when `url` is an absolute http(s) URL with a host.
fn check_http_url(url: &str) -> Result<(), UrlProblem> {
    let parsed = Url::parse(url.trim()).map_err(|e| UrlProblem::Unparsable(e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(UrlProblem::NotHttp(parsed.scheme().to_string()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    if url.trim() != url {
        return Err(UrlProblem::SurroundingSpaces);
    }
    Ok(())
}

/// `localhost`, `127.x.y.z` or `::1`.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A user-supplied string made safe for a one-line message.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> EmailConfig {
        EmailConfig {
            name: "ops-mail".into(),
            host: "smtp.example.com".into(),
            port: 587,
            starttls: true,
            username: Some("alerts".into()),
            password: Some("hunter2-pw".into()),
            from: "Mongo Pulse <alerts@example.com>".into(),
            to: vec!["oncall@example.com".into()],
            accept_invalid_certs: false,
        }
    }

    fn problem(c: EmailConfig) -> String {
        NotifierConfig::Email(c).validate().unwrap_err().to_string()
    }

    #[test]
    fn valid_email_passes_and_errors_name_notifier_and_field() {
        NotifierConfig::Email(email()).validate().unwrap();
        assert_eq!(
            problem(EmailConfig {
                to: Vec::new(),
                ..email()
            }),
            "notifier 'ops-mail': to must list at least one address"
        );
    }

    #[test]
    fn clear_text_credentials_only_to_loopback() {
        let e = problem(EmailConfig {
            starttls: false,
            ..email()
        });
        assert!(e.contains("password needs starttls"), "{e}");
        assert!(!e.contains("hunter2-pw"));
        NotifierConfig::Email(EmailConfig {
            starttls: false,
            host: "127.0.0.1".into(),
            ..email()
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn debug_and_redacted_hide_secrets() {
        let c = NotifierConfig::Slack(SlackConfig {
            name: "s".into(),
            url: "https://hooks.slack.com/services/T0/B0/TOKENTOKEN".into(),
            channel: None,
        });
        let mail = NotifierConfig::Email(email());
        let d = format!("{c:?} {mail:?} {:?}", mail.redacted());
        assert!(
            !d.contains("TOKENTOKEN") && !d.contains("hunter2-pw"),
            "{d}"
        );
        assert!(d.contains("****"));
        let shown = toml::to_string(&c.redacted()).unwrap();
        assert!(shown.contains("https://hooks.slack.com/****"), "{shown}");
    }

    #[test]
    fn the_file_format_is_unchanged_by_the_secret_types() {
        let text = r#"
            type = "webhook"
            name = "h"
            url = "https://example.com/hook"
            secret = "whsec-1234"
            headers = { "X-Team" = "data" }
        "#;
        let c: NotifierConfig = toml::from_str(text).unwrap();
        let NotifierConfig::Webhook(w) = &c else {
            panic!("{c:?}");
        };
        assert_eq!(w.secret.as_ref().map(Secret::expose), Some("whsec-1234"));
        let back: NotifierConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn only_credential_headers_are_scrubbed_from_messages() {
        let c = NotifierConfig::Webhook(WebhookConfig {
            name: "h".into(),
            url: "https://example.com/hook".into(),
            secret: Some("whsec-1234".into()),
            headers: BTreeMap::from([
                ("Authorization".into(), "Bearer abcd1234".into()),
                ("X-Team".into(), "data".into()),
            ]),
        });
        let s = c.secrets();
        assert!(s.contains(&"whsec-1234".to_string()));
        assert!(s.contains(&"Bearer abcd1234".to_string()));
        assert!(!s.contains(&"data".to_string()));
        // Debug masks every header value all the same.
        assert!(!format!("{c:?}").contains("data"));
    }

    #[test]
    fn retry_defaults_and_validation() {
        let r = RetryConfig::default();
        assert_eq!(
            (
                r.attempts,
                r.initial_backoff_ms,
                r.max_backoff_ms,
                r.timeout_ms
            ),
            (4, 500, 10_000, 5_000)
        );
        r.validate().unwrap();
        assert!(RetryConfig {
            attempts: 0,
            ..r.clone()
        }
        .validate()
        .is_err());
        assert!(RetryConfig {
            initial_backoff_ms: 20_000,
            ..r
        }
        .validate()
        .is_err());
    }
}
