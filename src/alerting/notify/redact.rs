//! Keeps notifier secrets (webhook secrets, SMTP passwords, API tokens, secret-bearing URLs
//! such as Slack's incoming-webhook addresses) out of everything a user or a log can see.
//!
//! Two tools: [`display_url`] shows a URL without the parts that may be secret, and
//! [`Scrubber`] masks every known secret in a message that came from a library (HTTP or
//! SMTP client errors, a receiver's response body) before it reaches a `Delivery` or a log.

use reqwest::Url;

/// What replaces a secret.
pub(crate) const MASK: &str = "****";

/// `scheme://host[:port]/path` of `url`, without user info, query or fragment; with
/// `hide_path` the path is replaced by `/****` (Slack's incoming-webhook URLs carry their
/// token in the path). An unparsable URL is shown as `<invalid url>`.
pub(crate) fn display_url(url: &str, hide_path: bool) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return String::from("<invalid url>");
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if hide_path {
        if parsed.path().trim_matches('/').is_empty() {
            String::new()
        } else {
            format!("/{MASK}")
        }
    } else {
        parsed.path().trim_end_matches('/').to_string()
    };
    let extra = if parsed.query().is_some() {
        "?****"
    } else {
        ""
    };
    format!("{}://{host}{port}{path}{extra}", parsed.scheme())
}

/// The secrets carried by a URL: its password, its query string (tokens often live
/// there) and, when `path_is_secret`, its path and the path's last segment.
pub(crate) fn url_secrets(url: &str, path_is_secret: bool) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else {
        // Unparsable: the whole string is the only thing we can mask.
        return vec![url.to_string()];
    };
    let mut out = Vec::new();
    if let Some(p) = parsed.password() {
        out.push(p.to_string());
    }
    if let Some(q) = parsed.query() {
        out.push(q.to_string());
        for (_, v) in parsed.query_pairs() {
            out.push(v.into_owned());
        }
    }
    if path_is_secret {
        // The whole path, and its last segment alone (Slack's token), which is what a
        // library message might quote on its own.
        out.push(parsed.path().to_string());
        if let Some(last) = parsed
            .path_segments()
            .and_then(|mut s| s.rfind(|x| !x.is_empty()))
        {
            out.push(last.to_string());
        }
    }
    out
}

/// Masks a fixed set of secrets in messages.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Secrets shorter than 4 characters are ignored (masking "a" everywhere would make
    /// messages unreadable, and such a secret protects nothing anyway); the rest are masked
    /// longest first, so a secret containing another is masked whole.
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Scrubber {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.chars().count() >= 4)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    /// `message` with every secret replaced by `****`.
    pub(crate) fn clean(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_drops_userinfo_query_and_secret_paths() {
        assert_eq!(
            display_url("https://user:pw@example.com:8443/hook/?token=abc#x", false),
            "https://example.com:8443/hook?****"
        );
        assert_eq!(
            display_url("https://hooks.slack.com/services/T0/B0/XYZ", true),
            "https://hooks.slack.com/****"
        );
        assert_eq!(display_url("not a url", false), "<invalid url>");
    }

    #[test]
    fn scrubber_masks_longest_first_and_ignores_tiny_secrets() {
        let s = Scrubber::new(["abcd".to_string(), "abcdefgh".to_string(), "x".to_string()]);
        assert_eq!(s.clean("k=abcdefgh y=abcd x"), "k=**** y=**** x");
    }

    #[test]
    fn url_secrets_lists_password_query_and_path() {
        let v = url_secrets("https://u:pw12@h/services/T0/B0/SECRET?key=qqqq", true);
        assert!(v.contains(&"pw12".to_string()));
        assert!(v.contains(&"qqqq".to_string()));
        assert!(v.contains(&"SECRET".to_string()));
    }
}
