//! Notifier configuration: what the daemon's TOML (`[[alerting.notifiers]]`) and the rules
//! provisioning file hold, its validation, and a `Debug` that never shows a secret.

use std::collections::BTreeMap;
use std::fmt;

use lettre::message::Mailbox;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::redact::{display_url, url_secrets, MASK};

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
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierConfig {
    /// POST of a JSON document to any HTTP endpoint, optionally HMAC-signed.
    Webhook {
        name: String,
        url: String,
        /// HMAC-SHA256 key; when set every request carries
        /// `X-MongoPulse-Signature: sha256=<hex>` computed over the exact body bytes.
        #[serde(default)]
        secret: Option<String>,
        /// Extra request headers (e.g. an API key); their values are treated as secrets.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// A Slack incoming webhook (`https://hooks.slack.com/services/…`).
    Slack {
        name: String,
        url: String,
        /// Overrides the webhook's default channel (legacy webhooks only honour it).
        #[serde(default)]
        channel: Option<String>,
    },
    /// Email over SMTP.
    Email {
        name: String,
        host: String,
        port: u16,
        /// Upgrade the connection with STARTTLS and refuse to send if the server cannot
        /// (default). `false` sends in clear text; credentials are then only allowed to a
        /// loopback host.
        #[serde(default = "default_true")]
        starttls: bool,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        /// A mailbox: `alerts@example.com` or `Mongo Pulse <alerts@example.com>`.
        from: String,
        to: Vec<String>,
        /// Skip certificate verification (self-signed test servers only).
        #[serde(default)]
        accept_invalid_certs: bool,
    },
    /// An Alertmanager-compatible alerts API (Grafana, Prometheus Alertmanager).
    Alertmanager {
        name: String,
        /// Grafana's base URL, e.g. `http://grafana:3000`: alerts go to
        /// `<url>/api/alertmanager/grafana/api/v2/alerts`. A URL whose path already ends
        /// in `/api/v2/alerts` is used as is, e.g.
        /// `http://grafana:3000/api/alertmanager/<alertmanager data source uid>/api/v2/alerts`
        /// or `http://alertmanager:9093/api/v2/alerts`.
        url: String,
        /// `Authorization: Bearer <token>` (a Grafana service-account token).
        #[serde(default)]
        token: Option<String>,
        /// Basic auth, with `password`; exclusive with `token`.
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
    },
}

fn default_true() -> bool {
    true
}

impl NotifierConfig {
    /// The notifier's name, unique among the configured notifiers.
    pub fn name(&self) -> &str {
        match self {
            NotifierConfig::Webhook { name, .. }
            | NotifierConfig::Slack { name, .. }
            | NotifierConfig::Email { name, .. }
            | NotifierConfig::Alertmanager { name, .. } => name,
        }
    }

    /// `webhook`, `slack`, `email` or `alertmanager` (the TOML `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Webhook { .. } => "webhook",
            NotifierConfig::Slack { .. } => "slack",
            NotifierConfig::Email { .. } => "email",
            NotifierConfig::Alertmanager { .. } => "alertmanager",
        }
    }

    /// Checks every field; the message names the notifier and the field, e.g.
    /// `notifier 'ops-mail': to must list at least one address`. Never quotes a secret.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        let err = |msg: String| Err(format!("notifier '{}': {msg}", printable(name)));
        if name.trim().is_empty() {
            return err("name must not be empty".into());
        }
        if name.chars().any(char::is_control) {
            return err("name must not contain control characters".into());
        }
        if name.chars().count() > 100 {
            return err("name must be at most 100 characters".into());
        }
        match self {
            NotifierConfig::Webhook {
                url,
                secret,
                headers,
                ..
            } => {
                if let Err(e) = check_http_url(url) {
                    return err(format!("url {e}"));
                }
                if secret.as_deref().is_some_and(|s| s.is_empty()) {
                    return err(
                        "secret must not be empty when set (remove it to send unsigned requests)"
                            .into(),
                    );
                }
                for (k, v) in headers {
                    let Ok(hn) = reqwest::header::HeaderName::from_bytes(k.as_bytes()) else {
                        return err(format!(
                            "headers: '{}' is not a valid header name",
                            printable(k)
                        ));
                    };
                    if RESERVED_HEADERS.contains(&hn.as_str()) {
                        return err(format!(
                            "headers: '{}' is set by Mongo Pulse and cannot be overridden",
                            hn.as_str()
                        ));
                    }
                    if reqwest::header::HeaderValue::from_str(v).is_err() {
                        return err(format!(
                            "headers: the value of '{}' is not a valid header value (visible ASCII only)",
                            hn.as_str()
                        ));
                    }
                }
                Ok(())
            }
            NotifierConfig::Slack { url, channel, .. } => {
                if let Err(e) = check_http_url(url) {
                    return err(format!("url {e}"));
                }
                if channel.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return err("channel must not be empty when set".into());
                }
                Ok(())
            }
            NotifierConfig::Email {
                host,
                port,
                starttls,
                username,
                password,
                from,
                to,
                accept_invalid_certs,
                ..
            } => {
                if host.trim().is_empty() {
                    return err("host must not be empty".into());
                }
                if host
                    .chars()
                    .any(|c| c.is_whitespace() || c == '/' || c == '@')
                {
                    return err(format!(
                        "host '{}' must be a host name or an IP address",
                        printable(host)
                    ));
                }
                if *port == 0 {
                    return err("port must be between 1 and 65535".into());
                }
                if let Err(e) = from.parse::<Mailbox>() {
                    return err(format!(
                        "from '{}' is not a valid address: {e}",
                        printable(from)
                    ));
                }
                if to.is_empty() {
                    return err("to must list at least one address".into());
                }
                for addr in to {
                    if let Err(e) = addr.parse::<Mailbox>() {
                        return err(format!(
                            "to: '{}' is not a valid address: {e}",
                            printable(addr)
                        ));
                    }
                }
                match (username, password) {
                    (Some(u), Some(p)) => {
                        if u.is_empty() {
                            return err("username must not be empty when set".into());
                        }
                        if p.is_empty() {
                            return err("password must not be empty when set".into());
                        }
                        if !*starttls && !is_loopback_host(host) {
                            return err(
                                "password needs starttls = true: without it the credentials \
                                 would cross the network in clear text"
                                    .into(),
                            );
                        }
                    }
                    (Some(_), None) => return err("username is set but password is missing".into()),
                    (None, Some(_)) => return err("password is set but username is missing".into()),
                    (None, None) => {}
                }
                if *accept_invalid_certs && !*starttls {
                    return err("accept_invalid_certs only applies with starttls = true".into());
                }
                Ok(())
            }
            NotifierConfig::Alertmanager {
                url,
                token,
                username,
                password,
                ..
            } => {
                if let Err(e) = check_http_url(url) {
                    return err(format!("url {e}"));
                }
                if token.as_deref().is_some_and(str::is_empty) {
                    return err("token must not be empty when set".into());
                }
                match (username, password) {
                    (Some(u), Some(_)) if u.is_empty() => {
                        return err("username must not be empty when set".into())
                    }
                    (Some(_), None) => return err("username is set but password is missing".into()),
                    (None, Some(_)) => return err("password is set but username is missing".into()),
                    _ => {}
                }
                if token.is_some() && username.is_some() {
                    return err("token and username/password are exclusive: set one of them".into());
                }
                Ok(())
            }
        }
    }

    /// A copy with every secret replaced by `****` (URLs reduced as in `Debug`), safe to
    /// return from an API or to log.
    pub fn redacted(&self) -> NotifierConfig {
        let mask = |o: &Option<String>| o.as_ref().map(|_| MASK.to_string());
        match self {
            NotifierConfig::Webhook {
                name,
                url,
                secret,
                headers,
            } => NotifierConfig::Webhook {
                name: name.clone(),
                url: display_url(url, false),
                secret: mask(secret),
                headers: headers
                    .keys()
                    .map(|k| (k.clone(), MASK.to_string()))
                    .collect(),
            },
            NotifierConfig::Slack { name, url, channel } => NotifierConfig::Slack {
                name: name.clone(),
                url: display_url(url, true),
                channel: channel.clone(),
            },
            NotifierConfig::Email {
                name,
                host,
                port,
                starttls,
                username,
                password,
                from,
                to,
                accept_invalid_certs,
            } => NotifierConfig::Email {
                name: name.clone(),
                host: host.clone(),
                port: *port,
                starttls: *starttls,
                username: username.clone(),
                password: mask(password),
                from: from.clone(),
                to: to.clone(),
                accept_invalid_certs: *accept_invalid_certs,
            },
            NotifierConfig::Alertmanager {
                name,
                url,
                token,
                username,
                password,
            } => NotifierConfig::Alertmanager {
                name: name.clone(),
                url: display_url(url, false),
                token: mask(token),
                username: username.clone(),
                password: mask(password),
            },
        }
    }

    /// Every secret string of this config, for scrubbing messages.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            NotifierConfig::Webhook {
                url,
                secret,
                headers,
                ..
            } => {
                out.extend(url_secrets(url, false));
                out.extend(secret.iter().cloned());
                // Only the values of credential-like headers: masking every header value
                // (say `X-Team: data`) would garble messages that happen to contain it.
                out.extend(
                    headers
                        .iter()
                        .filter(|(k, _)| is_credential_header(k))
                        .map(|(_, v)| v.clone()),
                );
            }
            NotifierConfig::Slack { url, .. } => out.extend(url_secrets(url, true)),
            NotifierConfig::Email { password, .. } => out.extend(password.iter().cloned()),
            NotifierConfig::Alertmanager {
                url,
                token,
                password,
                ..
            } => {
                out.extend(url_secrets(url, false));
                out.extend(token.iter().cloned());
                out.extend(password.iter().cloned());
            }
        }
        out
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

impl fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Built from the redacted copy, so a field added later cannot leak by accident
        // unless it is also left out of `redacted`.
        match self.redacted() {
            NotifierConfig::Webhook {
                name,
                url,
                secret,
                headers,
            } => f
                .debug_struct("Webhook")
                .field("name", &name)
                .field("url", &url)
                .field("secret", &secret)
                .field("headers", &headers)
                .finish(),
            NotifierConfig::Slack { name, url, channel } => f
                .debug_struct("Slack")
                .field("name", &name)
                .field("url", &url)
                .field("channel", &channel)
                .finish(),
            NotifierConfig::Email {
                name,
                host,
                port,
                starttls,
                username,
                password,
                from,
                to,
                accept_invalid_certs,
            } => f
                .debug_struct("Email")
                .field("name", &name)
                .field("host", &host)
                .field("port", &port)
                .field("starttls", &starttls)
                .field("username", &username)
                .field("password", &password)
                .field("from", &from)
                .field("to", &to)
                .field("accept_invalid_certs", &accept_invalid_certs)
                .finish(),
            NotifierConfig::Alertmanager {
                name,
                url,
                token,
                username,
                password,
            } => f
                .debug_struct("Alertmanager")
                .field("name", &name)
                .field("url", &url)
                .field("token", &token)
                .field("username", &username)
                .field("password", &password)
                .finish(),
        }
    }
}

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
    pub fn validate(&self) -> Result<(), String> {
        if self.attempts == 0 || self.attempts > 20 {
            return Err(format!(
                "alerting retry: attempts must be between 1 and 20 (got {})",
                self.attempts
            ));
        }
        if self.timeout_ms == 0 {
            return Err("alerting retry: timeout_ms must be at least 1".into());
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return Err(format!(
                "alerting retry: initial_backoff_ms ({}) must not exceed max_backoff_ms ({})",
                self.initial_backoff_ms, self.max_backoff_ms
            ));
        }
        Ok(())
    }
}

/// `Ok` when `url` is an absolute http(s) URL with a host; the error completes
/// "url …". Never quotes the URL (it may hold a secret).
fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("is not a valid URL ({e})"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "must start with http:// or https:// (got {}://)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.trim() != url {
        return Err("must not have leading or trailing spaces".into());
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

    fn email() -> NotifierConfig {
        NotifierConfig::Email {
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

    #[test]
    fn valid_email_passes_and_errors_name_notifier_and_field() {
        email().validate().unwrap();
        let mut c = email();
        if let NotifierConfig::Email { to, .. } = &mut c {
            to.clear();
        }
        assert_eq!(
            c.validate().unwrap_err(),
            "notifier 'ops-mail': to must list at least one address"
        );
    }

    #[test]
    fn clear_text_credentials_only_to_loopback() {
        let mut c = email();
        if let NotifierConfig::Email { starttls, .. } = &mut c {
            *starttls = false;
        }
        let e = c.validate().unwrap_err();
        assert!(e.contains("password needs starttls"), "{e}");
        assert!(!e.contains("hunter2-pw"));
        if let NotifierConfig::Email { host, .. } = &mut c {
            *host = "127.0.0.1".into();
        }
        c.validate().unwrap();
    }

    #[test]
    fn debug_and_redacted_hide_secrets() {
        let c = NotifierConfig::Slack {
            name: "s".into(),
            url: "https://hooks.slack.com/services/T0/B0/TOKENTOKEN".into(),
            channel: None,
        };
        let d = format!("{c:?} {:?}", email());
        assert!(
            !d.contains("TOKENTOKEN") && !d.contains("hunter2-pw"),
            "{d}"
        );
        assert!(d.contains("****"));
    }

    #[test]
    fn only_credential_headers_are_scrubbed_from_messages() {
        let c = NotifierConfig::Webhook {
            name: "h".into(),
            url: "https://example.com/hook".into(),
            secret: Some("whsec-1234".into()),
            headers: BTreeMap::from([
                ("Authorization".into(), "Bearer abcd1234".into()),
                ("X-Team".into(), "data".into()),
            ]),
        };
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
