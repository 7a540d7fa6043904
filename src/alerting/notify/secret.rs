//! Setting types that cannot leak through `Debug` or `Display`.
//!
//! In: strings read from the daemon's TOML or the rules file (serde-transparent, so the
//! file format is that of a plain string). Out: a mask when printed, the real value only
//! through an explicit [`Secret::expose`] / [`SecretUrl::expose`], and masked copies for
//! [`NotifierConfig::redacted`](super::NotifierConfig::redacted).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::redact::{display_url, url_secrets, MASK};

/// A password, token, HMAC key or credential-bearing header value. `Serialize` writes
/// the value itself, because a config must round-trip; redact before showing one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that must send it (a request, an SMTP login).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The same setting with its value replaced by `****`.
    pub fn masked(&self) -> Secret {
        Secret(MASK.to_string())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A receiver URL. Its password and query string may be credentials, and with
/// `PATH_IS_SECRET` (Slack's incoming webhooks) so is its whole path: printing shows
/// only `scheme://host[:port]/path`, the secret parts masked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl<const PATH_IS_SECRET: bool>(String);

/// A webhook or Alertmanager URL: user info and query string are secret.
pub type EndpointUrl = SecretUrl<false>;
/// A Slack incoming-webhook URL: the path is the token.
pub type SlackUrl = SecretUrl<true>;

impl<const PATH_IS_SECRET: bool> SecretUrl<PATH_IS_SECRET> {
    /// The URL as configured, for sending and for validation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL reduced to what may be shown (see [`display_url`]).
    pub fn masked(&self) -> SecretUrl<PATH_IS_SECRET> {
        SecretUrl(display_url(&self.0, PATH_IS_SECRET))
    }

    /// The secret parts, for scrubbing library messages that might quote them.
    pub(crate) fn secrets(&self) -> Vec<String> {
        url_secrets(&self.0, PATH_IS_SECRET)
    }
}

impl<const PATH_IS_SECRET: bool> From<String> for SecretUrl<PATH_IS_SECRET> {
    fn from(value: String) -> Self {
        SecretUrl(value)
    }
}

impl<const PATH_IS_SECRET: bool> From<&str> for SecretUrl<PATH_IS_SECRET> {
    fn from(value: &str) -> Self {
        SecretUrl(value.to_string())
    }
}

impl<const PATH_IS_SECRET: bool> fmt::Debug for SecretUrl<PATH_IS_SECRET> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", display_url(&self.0, PATH_IS_SECRET))
    }
}

impl<const PATH_IS_SECRET: bool> fmt::Display for SecretUrl<PATH_IS_SECRET> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_url(&self.0, PATH_IS_SECRET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_as_a_mask_and_serialize_as_themselves() {
        let s = Secret::from("hunter2-pw");
        assert_eq!(format!("{s} {s:?}"), "**** ****");
        assert_eq!(s.expose(), "hunter2-pw");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2-pw\"");
        let back: Secret = serde_json::from_str("\"hunter2-pw\"").unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn urls_print_without_their_secret_parts() {
        let hook = EndpointUrl::from("https://u:pw12@example.com/hook?key=qqqq");
        assert_eq!(hook.to_string(), "https://example.com/hook?****");
        let slack = SlackUrl::from("https://hooks.slack.com/services/T0/B0/TOKENTOKEN");
        assert_eq!(format!("{slack:?}"), "\"https://hooks.slack.com/****\"");
        assert!(slack.secrets().contains(&"TOKENTOKEN".to_string()));
    }
}
