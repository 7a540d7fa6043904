//! The data source's settings, as Grafana stores them.
//!
//! In: the instance's `jsonData` and decrypted `secureJsonData` (both JSON).
//! Out: [`DataSourceSettings`], or a [`SettingsError`] naming the field at fault.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::query::plan::Retention;
use crate::store::{ClientTls, CollectionNames};

/// Key of the connection URI in `secureJsonData`.
pub const URI_KEY: &str = "uri";

/// Settings of one data-source instance. `Debug` never prints the URI.
#[derive(Clone, PartialEq)]
pub struct DataSourceSettings {
    /// Connection URI; may hold a password, so it lives in secure JSON.
    pub uri: String,
    pub database: String,
    /// Bounds connecting and CheckHealth.
    pub connect_timeout: Duration,
    /// Bounds each query (`maxTimeMS`).
    pub query_timeout: Duration,
    pub collections: CollectionNames,
    /// How long the daemon keeps each rollup level (must match its `rollups.ttl`).
    pub retention: Retention,
    /// Memory bound of the closed-bucket cache.
    pub cache_max_bytes: usize,
    /// Buckets ending later than now minus this may still change, so are not cached.
    pub cache_horizon: Duration,
    pub tls: ClientTls,
    /// Minutes a live channel starts with.
    pub live_minutes: i64,
    /// Frames pushed per second per live channel, at most.
    pub live_max_pushes_per_second: f64,
}

impl fmt::Debug for DataSourceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataSourceSettings")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("collections", &self.collections)
            .field("retention", &self.retention)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("cache_horizon", &self.cache_horizon)
            .field("tls", &self.tls.enabled)
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("no connection URI is configured: open the data source settings and enter a Connection URI such as mongodb://user:password@host:27017/?replicaSet=rs0")]
    MissingUri,
    #[error("setting `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonData {
    database: Option<String>,
    connect_timeout_seconds: Option<f64>,
    query_timeout_seconds: Option<f64>,
    collections: Option<CollectionNames>,
    retention_days: Option<Retention>,
    cache_max_megabytes: Option<f64>,
    cache_horizon_seconds: Option<f64>,
    live_minutes: Option<i64>,
    live_max_pushes_per_second: Option<f64>,
    #[serde(default)]
    tls: bool,
    #[serde(rename = "tlsCAFile")]
    tls_ca_file: Option<String>,
    tls_certificate_key_file: Option<String>,
    #[serde(default)]
    tls_allow_invalid_certificates: bool,
    /// The editors' default for new queries; the backend's default is auto.
    #[allow(dead_code)]
    default_granularity: Option<String>,
}

pub const DEFAULT_DATABASE: &str = "analytics";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

impl DataSourceSettings {
    pub fn from_grafana(
        json_data: &Value,
        secure_json_data: &Value,
    ) -> Result<Self, SettingsError> {
        let uri = secure_json_data
            .get(URI_KEY)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or(SettingsError::MissingUri)?
            .to_string();
        let data: JsonData = match json_data {
            Value::Null => JsonData {
                database: None,
                connect_timeout_seconds: None,
                query_timeout_seconds: None,
                collections: None,
                retention_days: None,
                cache_max_megabytes: None,
                cache_horizon_seconds: None,
                live_minutes: None,
                live_max_pushes_per_second: None,
                tls: false,
                tls_ca_file: None,
                tls_certificate_key_file: None,
                tls_allow_invalid_certificates: false,
                default_granularity: None,
            },
            v => serde_json::from_value(v.clone()).map_err(|e| SettingsError::Invalid {
                field: "jsonData".into(),
                reason: e.to_string(),
            })?,
        };
        let database = data
            .database
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        if database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(SettingsError::Invalid {
                field: "database".into(),
                reason: format!(
                    "'{database}' is not a valid MongoDB database name (no / \\ . space \" or $)"
                ),
            });
        }
        Ok(DataSourceSettings {
            uri,
            database,
            connect_timeout: seconds("connectTimeoutSeconds", data.connect_timeout_seconds)?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            query_timeout: seconds("queryTimeoutSeconds", data.query_timeout_seconds)?
                .unwrap_or(DEFAULT_QUERY_TIMEOUT),
            collections: data.collections.unwrap_or_default(),
            retention: data.retention_days.unwrap_or_default(),
            cache_max_bytes: match data.cache_max_megabytes {
                None => 64 << 20,
                Some(mb) if mb.is_finite() && mb >= 0.0 => (mb * 1_048_576.0) as usize,
                Some(mb) => {
                    return Err(SettingsError::Invalid {
                        field: "cacheMaxMegabytes".into(),
                        reason: format!(
                            "{mb} is not a number of megabytes ≥ 0 (0 turns the cache off)"
                        ),
                    })
                }
            },
            cache_horizon: seconds("cacheHorizonSeconds", data.cache_horizon_seconds)?
                .unwrap_or(Duration::from_secs(300)),
            tls: ClientTls {
                enabled: data.tls,
                ca_file: data.tls_ca_file.filter(|s| !s.trim().is_empty()),
                cert_key_file: data
                    .tls_certificate_key_file
                    .filter(|s| !s.trim().is_empty()),
                cert_key_password: secure_json_data
                    .get("tlsCertificateKeyFilePassword")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                allow_invalid_certificates: data.tls_allow_invalid_certificates,
            },
            live_minutes: match data.live_minutes {
                None => 15,
                Some(m) if (1..=1440).contains(&m) => m,
                Some(m) => {
                    return Err(SettingsError::Invalid {
                        field: "liveMinutes".into(),
                        reason: format!("{m} is not between 1 and 1440 minutes"),
                    })
                }
            },
            live_max_pushes_per_second: match data.live_max_pushes_per_second {
                None => 4.0,
                Some(p) if p.is_finite() && p > 0.0 && p <= 50.0 => p,
                Some(p) => {
                    return Err(SettingsError::Invalid {
                        field: "liveMaxPushesPerSecond".into(),
                        reason: format!("{p} is not between 0 and 50"),
                    })
                }
            },
        })
    }
}

fn seconds(field: &str, value: Option<f64>) -> Result<Option<Duration>, SettingsError> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(SettingsError::Invalid {
            field: field.into(),
            reason: format!("{s} is not a number of seconds between 0 and 3600"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply() {
        let s =
            DataSourceSettings::from_grafana(&json!({}), &json!({"uri": "mongodb://h"})).unwrap();
        assert_eq!(s.database, "analytics");
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.query_timeout, Duration::from_secs(10));
        assert_eq!(s.collections, CollectionNames::default());
    }

    #[test]
    fn missing_uri_tells_where_to_set_it() {
        let e = DataSourceSettings::from_grafana(&json!({}), &json!({})).unwrap_err();
        assert_eq!(e, SettingsError::MissingUri);
        assert!(e.to_string().contains("Connection URI"));
    }

    #[test]
    fn bad_timeout_names_the_field() {
        let e = DataSourceSettings::from_grafana(
            &json!({"connectTimeoutSeconds": -1}),
            &json!({"uri": "mongodb://h"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("connectTimeoutSeconds"), "{e}");
    }

    #[test]
    fn tls_options_from_the_config_editor() {
        let s = DataSourceSettings::from_grafana(
            &json!({"tls": true, "tlsCAFile": "/etc/ca.pem", "tlsCertificateKeyFile": "", "tlsAllowInvalidCertificates": true, "defaultGranularity": "hour"}),
            &json!({"uri": "mongodb://h", "tlsCertificateKeyFilePassword": "pw"}),
        )
        .unwrap();
        assert!(s.tls.enabled && s.tls.allow_invalid_certificates);
        assert_eq!(s.tls.ca_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(s.tls.cert_key_file, None);
        assert_eq!(s.tls.cert_key_password.as_deref(), Some("pw"));
        assert!(!format!("{s:?}").contains("pw\""));
    }

    #[test]
    fn debug_hides_the_uri() {
        let s = DataSourceSettings::from_grafana(
            &json!({"database": "db"}),
            &json!({"uri": "mongodb://u:secret@h"}),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("secret"));
    }
}
