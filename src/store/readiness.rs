//! Whether the daemon can store events: MongoDB reachable, collections ready,
//! and every broker source consuming.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bson::doc;
use mongodb::Database;
use serde::Serialize;

use super::Redactor;

pub struct Readiness {
    db: Database,
    redactor: Redactor,
    schema_ready: AtomicBool,
    problem: Mutex<Option<String>>,
    /// Each broker source: `None` while consuming, else why not.
    sources: Mutex<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub mongodb: String,
    pub collections: String,
    /// Each broker source (`ingest.sources`): "ok", or why it is down. A source that
    /// is down makes the daemon not ready: it is not doing all it was configured for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
}

impl Readiness {
    pub fn new(db: Database, redactor: Redactor) -> Self {
        Readiness {
            db,
            redactor,
            schema_ready: AtomicBool::new(false),
            problem: Mutex::new(Some("connecting to MongoDB".into())),
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set_ready(&self) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.schema_ready.store(true, Ordering::Release);
    }

    pub fn set_problem(&self, problem: String) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(self.redactor.clean(&problem));
    }

    /// Records whether a broker source is consuming (`None`) or why not.
    pub fn set_source(&self, name: &str, problem: Option<String>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), problem.map(|p| self.redactor.clean(&p)));
    }

    /// Ok once the collections exist; otherwise why not.
    pub fn accepting(&self) -> Result<(), String> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "creating collections".into()))
    }

    /// Pings MongoDB (bounded to 2 s) and reports.
    pub async fn probe(&self) -> ReadyReport {
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            self.db.run_command(doc! { "ping": 1 }),
        )
        .await;
        let mongodb = match ping {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => self.redactor.clean(&e.to_string()),
            Err(_) => "no answer to ping within 2 s".to_string(),
        };
        let collections = match self.accepting() {
            Ok(()) => "ready".to_string(),
            Err(why) => why,
        };
        let sources: BTreeMap<String, String> = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, problem)| (name.clone(), problem.clone().unwrap_or_else(|| "ok".into())))
            .collect();
        ReadyReport {
            ready: mongodb == "ok" && collections == "ready" && sources.values().all(|s| s == "ok"),
            mongodb,
            collections,
            sources,
        }
    }
}
