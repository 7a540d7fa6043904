//! Generic webhook: `POST <url>` with a JSON body
//!
//! ```json
//! {"version": "1", "status": "firing", "repeat": false, "timestamp": 1733754615,
//!  "alert": { …the Notification, camelCase… }}
//! ```
//!
//! and the headers `Content-Type: application/json`,
//! `X-MongoPulse-Timestamp: <unix seconds>` (the same value as the body's `timestamp`)
//! and, when a secret is configured, `X-MongoPulse-Signature: sha256=<hex>`: the
//! HMAC-SHA256 of the exact body bytes keyed with the secret. Only the body is signed;
//! since the body carries `timestamp`, a receiver that wants replay protection checks the
//! signature, then rejects bodies whose `timestamp` is too old. The body is built once
//! per notification, so every retry sends the same bytes and the same signature.

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use sha2::Sha256;

use super::error::SenderError;
use super::http;
use super::retry::AttemptResult;
use super::{Notification, NotifyState, WebhookConfig};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-MongoPulse-Signature";
/// Header carrying the send time in unix seconds (also in the signed body).
pub const TIMESTAMP_HEADER: &str = "X-MongoPulse-Timestamp";

/// The webhook document.
#[derive(Serialize)]
struct Body<'a> {
    version: &'static str,
    status: NotifyState,
    repeat: bool,
    timestamp: i64,
    alert: &'a Notification,
}

/// The exact bytes POSTed for `n`, sent at `timestamp` (unix seconds).
pub fn webhook_body(n: &Notification, timestamp: i64) -> Vec<u8> {
    let body = Body {
        version: "1",
        status: n.state,
        repeat: n.repeat,
        timestamp,
        alert: n,
    };
    // Serializing maps of strings, numbers and dates cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"); // ok: cannot fail
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `X-MongoPulse-Signature` value against `body` in constant time — what a
/// receiver written in Rust would do.
pub fn verify_signature(secret: &[u8], body: &[u8], header_value: &str) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"); // ok: cannot fail
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

pub(crate) struct Webhook {
    pub url: String,
    pub secret: Option<Vec<u8>>,
    /// The configured extra headers, values marked sensitive.
    pub headers: HeaderMap,
}

impl Webhook {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Webhook, SenderError> {
        let mut map = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| SenderError::HeaderName(k.clone()))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| SenderError::HeaderValue(k.clone()))?;
            value.set_sensitive(true);
            map.append(name, value);
        }
        Ok(Webhook {
            url: config.url.expose().to_string(),
            secret: config
                .secret
                .as_ref()
                .map(|s| s.expose().as_bytes().to_vec()),
            headers: map,
        })
    }

    /// The body and headers of one notification, reused by every attempt.
    pub(crate) fn prepare(&self, n: &Notification) -> (bytes::Bytes, HeaderMap) {
        let ts = chrono::Utc::now().timestamp();
        let body = webhook_body(n, ts);
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("x-mongopulse-timestamp"),
            HeaderValue::from(ts),
        );
        if let Some(secret) = &self.secret {
            if let Ok(v) = HeaderValue::from_str(&sign(secret, &body)) {
                headers.insert(HeaderName::from_static("x-mongopulse-signature"), v);
            }
        }
        (bytes::Bytes::from(body), headers)
    }

    pub(crate) async fn attempt(
        &self,
        client: &reqwest::Client,
        body: &bytes::Bytes,
        headers: &HeaderMap,
    ) -> AttemptResult {
        http::attempt(
            client
                .post(&self.url)
                .headers(headers.clone())
                .body(body.clone()),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let sig = sign(b"k3y", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_signature(b"k3y", b"{\"a\":1}", &sig));
        assert!(!verify_signature(b"k3y", b"{\"a\":2}", &sig));
        assert!(!verify_signature(b"other", b"{\"a\":1}", &sig));
        assert!(!verify_signature(b"k3y", b"{\"a\":1}", "sha1=00"));
    }

    #[test]
    fn known_hmac_vector() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
