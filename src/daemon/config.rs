//! The daemon's configuration: defaults, then a TOML file, then environment
//! variables `MONGOPULSE__SECTION__KEY` (double underscores separate levels).
//!
//! Every field is documented in README.md ("Configuration"); keep the two in step.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::alerting::AlertingConfig;
use crate::ingest::auth::AuthConfig;
use crate::ingest::writer::WriterConfig;
use crate::ingest::Limits;
use crate::rollup::RollupConfig;
use crate::store::{CollectionNames, Redactor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identifies this daemon in `pipeline_stats` and in rollup `_id`s; give
    /// each daemon sharing a database its own.
    pub writer_id: String,
    pub mongodb: MongoConfig,
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub auth: AuthConfig,
    pub retention: RetentionConfig,
    pub stats: StatsConfig,
    pub rollups: RollupConfig,
    pub alerting: AlertingConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            writer_id: "main".into(),
            mongodb: MongoConfig::default(),
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            auth: AuthConfig::default(),
            retention: RetentionConfig::default(),
            stats: StatsConfig::default(),
            rollups: RollupConfig::default(),
            alerting: AlertingConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub limits: Limits,
    pub writer: WriterConfig,
    /// Longest raw payload kept per dead letter, in bytes.
    pub dead_letter_max_raw_bytes: usize,
    /// `Retry-After` sent with 503 answers, in seconds.
    pub retry_after_secs: u64,
    /// Broker sources (`[[ingest.sources]]`), none by default.
    pub sources: Vec<crate::sources::SourceConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            limits: Limits::default(),
            writer: WriterConfig::default(),
            dead_letter_max_raw_bytes: 4096,
            retry_after_secs: 1,
            sources: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw events expire after this many days (`expireAfterSeconds` of `events`).
    pub raw_days: f64,
    pub dead_letters_days: f64,
    pub pipeline_stats_days: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw_days: 7.0,
            dead_letters_days: 30.0,
            pipeline_stats_days: 7.0,
        }
    }
}

impl RetentionConfig {
    pub fn days(d: f64) -> Duration {
        Duration::from_secs_f64(d * 86_400.0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Seconds between two documents in `pipeline_stats`; 0 turns them off.
    pub interval_secs: f64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval_secs: 10.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection URI. Change streams (live panels) need a replica set.
    pub uri: String,
    pub database: String,
    /// Bound on connecting and on server selection, in seconds.
    pub connect_timeout_secs: f64,
    pub collections: CollectionNames,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            uri: "mongodb://localhost:27017/?replicaSet=rs0".into(),
            database: "analytics".into(),
            connect_timeout_secs: 5.0,
            collections: CollectionNames::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the events API, health and metrics endpoints.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8428".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `mongopulse=debug,info`.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub const ENV_PREFIX: &str = "MONGOPULSE__";

impl Config {
    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Defaults, then the TOML `text`, checked as [`Config::load`] checks a
    /// file; the environment is not read. Public for the fuzz targets (fuzz/),
    /// which have the text and no file.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    path: path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::extract(figment.merge(env))
    }

    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(explain(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let t = self.mongodb.connect_timeout_secs;
        if !(t.is_finite() && t > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "mongodb.connect_timeout_secs must be a positive number of seconds, got {t}"
            )));
        }
        if self.mongodb.database.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "mongodb.database must not be empty".into(),
            ));
        }
        let r = &self.retention;
        for (name, v) in [
            ("retention.raw_days", r.raw_days),
            ("retention.dead_letters_days", r.dead_letters_days),
            ("retention.pipeline_stats_days", r.pipeline_stats_days),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 36_500.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a number of days between 0 and 36500, got {v}"
                )));
            }
        }
        let s = self.stats.interval_secs;
        if !(s.is_finite() && s >= 0.0) {
            return Err(ConfigError::Invalid(
                "stats.interval_secs must be 0 (off) or a positive number of seconds".into(),
            ));
        }
        let w = &self.ingest.writer;
        if self.ingest.limits.max_events_per_request > w.max_queued_events {
            return Err(ConfigError::Invalid(format!(
                "ingest.limits.max_events_per_request ({}) must not exceed ingest.writer.max_queued_events ({})",
                self.ingest.limits.max_events_per_request, w.max_queued_events
            )));
        }
        w.write_concern().map_err(ConfigError::Invalid)?;
        if self.writer_id.is_empty()
            || !self
                .writer_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(ConfigError::Invalid(format!(
                "writer_id '{}' must be letters, digits, '_', '-' or '.'",
                self.writer_id
            )));
        }
        // Checked here, so a mistake stops the daemon at start instead of a
        // daemon that answers 503 forever.
        self.rollups
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for source in &self.ingest.sources {
            source.validate().map_err(ConfigError::Invalid)?;
            if !names.insert(source.name()) {
                return Err(ConfigError::Invalid(format!(
                    "ingest.sources: two sources are named '{}'; give each its own name",
                    source.name()
                )));
            }
        }
        for n in &self.alerting.notifiers {
            n.validate()
                .map_err(|e| ConfigError::Invalid(format!("alerting.notifiers: {e}")))?;
        }
        Ok(())
    }

    /// The configuration as TOML with the URI's password masked, for `print-config`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.mongodb.uri = Redactor::redact_uri(&self.mongodb.uri);
        shown.ingest.sources = self.ingest.sources.iter().map(|s| s.redacted()).collect();
        shown.alerting.notifiers = self
            .alerting
            .notifiers
            .iter()
            .map(|n| n.redacted())
            .collect();
        toml_string(&shown)
    }
}

fn toml_string(config: &Config) -> String {
    match toml::to_string_pretty(config) {
        Ok(s) => s,
        Err(e) => format!("# could not render configuration: {e}\n"),
    }
}

/// figment's errors name the key and where it came from; keep all of them.
fn explain(e: figment::Error) -> String {
    e.into_iter()
        .map(|one| one.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its large error
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "pulse.toml",
                r#"
                [mongodb]
                database = "from_file"
                [http]
                listen = "0.0.0.0:9000"
                "#,
            )?;
            jail.set_env("MONGOPULSE__MONGODB__DATABASE", "from_env");
            let c = Config::load(Some(Path::new("pulse.toml"))).unwrap();
            assert_eq!(c.mongodb.database, "from_env");
            assert_eq!(c.http.listen, "0.0.0.0:9000");
            assert_eq!(c.log.level, "info");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pulse.toml", "[mongodb]\ndatabse = \"x\"\n")?;
            let e = Config::load(Some(Path::new("pulse.toml"))).unwrap_err();
            assert!(e.to_string().contains("databse"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_settings_stop_the_daemon_at_start() {
        figment::Jail::expect_with(|jail| {
            for (var, value, words) in [
                (
                    "MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS",
                    "0",
                    "flush_interval_ms",
                ),
                (
                    "MONGOPULSE__RETENTION__RAW_DAYS",
                    "100000000",
                    "retention.raw_days",
                ),
                ("MONGOPULSE__WRITER_ID", "a b", "writer_id"),
                (
                    "MONGOPULSE__INGEST__WRITER__WRITE_CONCERN",
                    "some",
                    "write_concern",
                ),
            ] {
                jail.clear_env();
                jail.set_env(var, value);
                let e = Config::load(None).unwrap_err().to_string();
                assert!(e.contains(words), "{var}={value} → {e}");
            }
            Ok(())
        });
    }

    #[test]
    fn printed_config_hides_notifier_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "pulse.toml",
                r#"
                [[alerting.notifiers]]
                type = "webhook"
                name = "hook"
                url = "http://127.0.0.1:9/hook"
                secret = "WEBHOOK-SECRET-123"
                [[alerting.notifiers]]
                type = "alertmanager"
                name = "am"
                url = "http://127.0.0.1:9"
                token = "GLSA-TOKEN-456"
                "#,
            )?;
            let text = Config::load(Some(Path::new("pulse.toml")))
                .unwrap()
                .to_redacted_toml();
            assert!(
                !text.contains("WEBHOOK-SECRET-123") && !text.contains("GLSA-TOKEN-456"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_reported() {
        let e = Config::load(Some(Path::new("/nonexistent/pulse.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pulse.toml"));
    }

    #[test]
    fn printed_config_hides_the_password() {
        let mut c = Config::default();
        c.mongodb.uri = "mongodb://u:topsecret@h/?replicaSet=rs0".into();
        let text = c.to_redacted_toml();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("u:****@h"), "{text}");
    }

    #[test]
    fn broker_sources_parse_are_checked_and_print_without_secrets() {
        let c = Config::from_toml_str(
            r#"
            [[ingest.sources]]
            kind = "nats"
            name = "clicks"
            stream = "EVENTS"
            user = "pulse"
            password = "NATS-PW-91"

            [[ingest.sources]]
            kind = "amqp"
            name = "orders"
            url = "amqp://pulse:AMQP-PW-42@rabbit:5672/%2f"
            queue = "events"

            [[ingest.sources]]
            kind = "kafka"
            name = "views"
            topics = ["events"]
            options = { "sasl.username" = "pulse", "sasl.password" = "KAFKA-PW-77" }
            "#,
        )
        .unwrap();
        assert_eq!(c.ingest.sources.len(), 3);
        let text = c.to_redacted_toml();
        assert!(
            !text.contains("NATS-PW-91")
                && !text.contains("AMQP-PW-42")
                && !text.contains("KAFKA-PW-77"),
            "{text}"
        );

        for (bad, says) in [
            (
                "kind = \"kafka\"\nname = \"k\"\ntopics = []",
                "topics must name",
            ),
            (
                "kind = \"nats\"\nname = \"a b\"\nstream = \"S\"",
                "name 'a b'",
            ),
            (
                "kind = \"nats\"\nname = \"n\"\nstream = \"S\"\nstrem = 1",
                "strem",
            ),
            (
                "kind = \"amqp\"\nname = \"q\"\nqueue = \"\"",
                "queue must name",
            ),
        ] {
            let e = Config::from_toml_str(&format!("[[ingest.sources]]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let twice = "[[ingest.sources]]\nkind = \"nats\"\nname = \"n\"\nstream = \"S\"\n";
        let e = Config::from_toml_str(&format!("{twice}{twice}")).unwrap_err();
        assert!(e.to_string().contains("two sources are named 'n'"), "{e}");
    }
}
