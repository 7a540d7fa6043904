//! API keys and per-key rate limits for the events API.
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed and
//! compared with every configured digest in constant time, so neither the
//! comparison nor which key matched shows in the response time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse requests without a valid key (401).
    pub required: bool,
    /// Keys as `{ name, sha256 }` (hex digest of the key). Plain keys can
    /// also come from the environment variable `MONGOPULSE_API_KEYS`.
    pub keys: Vec<KeyConfig>,
    /// Requests per second allowed per key, sustained.
    pub requests_per_second: f64,
    /// Requests a key may send in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: true,
            keys: Vec::new(),
            requests_per_second: 200.0,
            burst: 400,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub sha256: String,
}

/// Name of the environment variable holding plain keys: `name:key,name2:key2`
/// (a bare `key` is named `key1`, `key2`…).
pub const KEYS_ENV: &str = "MONGOPULSE_API_KEYS";

pub struct Auth {
    required: bool,
    keys: Vec<(String, [u8; 32])>,
    limiter: RateLimiter,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed { key: Option<String> },
    Unauthorized,
    Limited { retry_after: Duration },
}

impl Auth {
    pub fn new(config: &AuthConfig, plain_keys: Option<&str>) -> Result<Auth, String> {
        let mut keys = Vec::new();
        for k in &config.keys {
            let bytes = hex::decode(k.sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("auth.keys '{}': sha256 must be 64 hex digits (the SHA-256 of the key, e.g. from `printf %s KEY | sha256sum`)", k.name))?;
            keys.push((k.name.clone(), bytes));
        }
        for (i, entry) in plain_keys
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (name, key) = match entry.split_once(':') {
                Some((n, k)) if !n.is_empty() && !k.is_empty() => (n.to_string(), k),
                _ => (format!("key{}", i + 1), entry),
            };
            keys.push((name, sha256(key.as_bytes())));
        }
        if config.required && keys.is_empty() {
            return Err(format!(
                "auth.required is true but no API key is configured: set {KEYS_ENV}=name:key, add [[auth.keys]] with a sha256, or set auth.required = false"
            ));
        }
        if !(config.requests_per_second.is_finite() && config.requests_per_second > 0.0) {
            return Err("auth.requests_per_second must be a positive number".into());
        }
        Ok(Auth {
            required: config.required,
            keys,
            limiter: RateLimiter::new(config.requests_per_second, config.burst.max(1)),
        })
    }

    /// Decides on a request from its presented key (if any).
    pub fn check(&self, presented: Option<&str>, now: Instant) -> Verdict {
        let name = presented.and_then(|p| self.identify(p));
        match (&name, self.required) {
            (None, true) => Verdict::Unauthorized,
            _ => {
                let bucket = name.clone().unwrap_or_default();
                match self.limiter.take(&bucket, now) {
                    Ok(()) => Verdict::Allowed { key: name },
                    Err(retry_after) => Verdict::Limited { retry_after },
                }
            }
        }
    }

    fn identify(&self, presented: &str) -> Option<String> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        // Look at every key, whatever matched, so timing tells nothing.
        for (name, expected) in &self.keys {
            if bool::from(digest.ct_eq(expected)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Token buckets, one per key.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(token.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(required: bool) -> AuthConfig {
        AuthConfig {
            required,
            keys: vec![KeyConfig {
                name: "hashed".into(),
                // sha256("s3cret")
                sha256: hex::encode(sha256(b"s3cret")),
            }],
            requests_per_second: 1.0,
            burst: 2,
        }
    }

    #[test]
    fn hashed_and_plain_keys_are_recognised() {
        let auth = Auth::new(&config(true), Some("web:webkey, barekey")).unwrap();
        let now = Instant::now();
        assert_eq!(
            auth.check(Some("s3cret"), now),
            Verdict::Allowed {
                key: Some("hashed".into())
            }
        );
        assert_eq!(
            auth.check(Some("webkey"), now),
            Verdict::Allowed {
                key: Some("web".into())
            }
        );
        assert_eq!(
            auth.check(Some("barekey"), now),
            Verdict::Allowed {
                key: Some("key2".into())
            }
        );
        assert_eq!(auth.check(Some("wrong"), now), Verdict::Unauthorized);
        assert_eq!(auth.check(None, now), Verdict::Unauthorized);
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let auth = Auth::new(&config(true), Some("other:o")).unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            auth.check(Some("s3cret"), t0),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            auth.check(Some("s3cret"), t0),
            Verdict::Allowed { .. }
        ));
        let Verdict::Limited { retry_after } = auth.check(Some("s3cret"), t0) else {
            panic!()
        };
        assert!(retry_after <= Duration::from_secs(1));
        assert!(matches!(auth.check(Some("o"), t0), Verdict::Allowed { .. }));
        assert!(matches!(
            auth.check(Some("s3cret"), t0 + Duration::from_secs(1)),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn required_without_keys_is_a_config_error() {
        let mut c = config(true);
        c.keys.clear();
        let e = Auth::new(&c, None).err().unwrap();
        assert!(e.contains(KEYS_ENV));
        c.required = false;
        assert!(Auth::new(&c, None).is_ok());
    }

    #[test]
    fn malformed_digest_names_the_key() {
        let mut c = config(true);
        c.keys[0].sha256 = "xyz".into();
        assert!(Auth::new(&c, None).err().unwrap().contains("'hashed'"));
    }
}
