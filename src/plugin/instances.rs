//! One MongoDB client per data-source instance.
//!
//! The SDK has no instance manager, so this keeps a client per data-source uid
//! and builds a new one when Grafana reports newer settings (`updated`) or the
//! settings themselves differ. Clients are cheap to share: they pool connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use mongodb::Client;
use tokio::sync::Mutex;

use super::settings::DataSourceSettings;
use crate::query::cache::BucketCache;
use crate::store::{build_client_with_tls, ConnectError, Redactor};

/// A data source ready to be queried.
pub struct Instance {
    pub uid: String,
    pub settings: DataSourceSettings,
    pub client: Client,
    pub redactor: Redactor,
    /// Closed buckets of this data source; a settings change starts it afresh.
    pub cache: BucketCache,
}

impl Instance {
    pub fn database(&self) -> mongodb::Database {
        self.client.database(&self.settings.database)
    }
}

struct Entry {
    updated: DateTime<Utc>,
    instance: Arc<Instance>,
}

#[derive(Default)]
pub struct Instances {
    entries: Mutex<HashMap<String, Entry>>,
    built: AtomicU64,
}

impl Instances {
    /// The instance for `uid`, built anew if its settings changed.
    pub async fn get(
        &self,
        uid: &str,
        updated: DateTime<Utc>,
        settings: DataSourceSettings,
    ) -> Result<Arc<Instance>, ConnectError> {
        {
            let entries = self.entries.lock().await;
            if let Some(e) = entries.get(uid) {
                if e.updated == updated && e.instance.settings == settings {
                    return Ok(e.instance.clone());
                }
            }
        }
        // Built outside the lock: parsing an SRV URI may wait on DNS, and other
        // data sources must not queue behind it.
        let client = build_client_with_tls(
            &settings.uri,
            "mongopulse-grafana",
            settings.connect_timeout,
            &settings.tls,
        )
        .await?;
        let instance = Arc::new(Instance {
            uid: uid.to_string(),
            redactor: Redactor::for_uri(&settings.uri),
            cache: BucketCache::new(settings.cache_max_bytes, 3_600_000),
            settings,
            client,
        });
        self.built.fetch_add(1, Ordering::Relaxed);
        // The replaced client closes its pool once the last query holding it ends.
        self.entries.lock().await.insert(
            uid.to_string(),
            Entry {
                updated,
                instance: instance.clone(),
            },
        );
        Ok(instance)
    }

    /// How many clients have been built since start (for metrics and tests).
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }
}
