//! CheckHealth: can Grafana use this data source, and what is missing?
//!
//! In: a ready [`Instance`]. Out: a [`HealthReport`] whose message a user can
//! act on and whose details list the server version, the replica-set status and
//! which rollup collections exist.

use bson::{doc, Document};
use serde_json::{json, Value};

use super::instances::Instance;
use crate::store::{classify_error, ConnectError};

#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub ok: bool,
    pub message: String,
    pub details: Value,
}

impl HealthReport {
    pub fn failed(message: impl Into<String>) -> Self {
        HealthReport {
            ok: false,
            message: message.into(),
            details: Value::Null,
        }
    }
}

struct ServerFacts {
    version: String,
    set_name: Option<String>,
    collections: Vec<String>,
}

/// Runs the check within the instance's connect timeout.
pub async fn check(instance: &Instance) -> HealthReport {
    let timeout = instance.settings.connect_timeout;
    match tokio::time::timeout(timeout, gather(instance)).await {
        Ok(Ok(facts)) => report(instance, facts),
        Ok(Err(e)) => HealthReport::failed(capitalised(&e)),
        Err(_) => HealthReport::failed(capitalised(&ConnectError::Timeout {
            hosts: instance.redactor.hosts().to_string(),
            seconds: timeout.as_secs_f64(),
        })),
    }
}

async fn gather(instance: &Instance) -> Result<ServerFacts, ConnectError> {
    let admin = instance.client.database("admin");
    let classify = |e: mongodb::error::Error| classify_error(&e, &instance.redactor);
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(classify)?;
    let build = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(classify)?;
    let collections = instance
        .database()
        .list_collection_names()
        .await
        .map_err(classify)?;
    Ok(ServerFacts {
        version: build.get_str("version").unwrap_or("unknown").to_string(),
        set_name: replica_set_name(&hello),
        collections,
    })
}

fn replica_set_name(hello: &Document) -> Option<String> {
    hello.get_str("setName").ok().map(str::to_string)
}

fn report(instance: &Instance, facts: ServerFacts) -> HealthReport {
    let names = &instance.settings.collections;
    let (present, missing): (Vec<&str>, Vec<&str>) = names
        .rollups()
        .into_iter()
        .partition(|c| facts.collections.iter().any(|have| have == c));
    let db = &instance.settings.database;
    let mut warnings = Vec::new();
    if facts.set_name.is_none() {
        warnings.push(
            "MongoDB is not a replica set, so live panels cannot stream (change streams need one): \
             run mongod with --replSet and rs.initiate(), or use Atlas"
                .to_string(),
        );
    }
    if !missing.is_empty() {
        warnings.push(format!(
            "database '{db}' has no {} yet: start mongopulsed against this database, or check the database name",
            missing.join(", ")
        ));
    }
    let topology = match &facts.set_name {
        Some(name) => format!("replica set {name}"),
        None => "standalone".to_string(),
    };
    let mut message = format!(
        "Connected to MongoDB {} ({topology}); database '{db}'",
        facts.version
    );
    if !present.is_empty() {
        message.push_str(&format!(" has {}", present.join(", ")));
    }
    message.push('.');
    for w in &warnings {
        message.push_str(&format!(" Warning: {w}."));
    }
    HealthReport {
        ok: true,
        message,
        details: json!({
            "serverVersion": facts.version,
            "replicaSet": facts.set_name,
            "changeStreams": facts.set_name.is_some(),
            "database": db,
            "rollupCollections": { "present": present, "missing": missing },
            "warnings": warnings,
        }),
    }
}

fn capitalised(e: &ConnectError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}
