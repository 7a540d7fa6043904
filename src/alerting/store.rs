//! The alert store: what alerting reads from and writes to MongoDB.
//!
//! In: transitions to record (with their notification and annotations), delivery logs,
//! history filters. Out: documents in `alerts` (one per transition, its notification log
//! added once the sends finish), the pending and firing instances restored from them at
//! start, the documents of `alert_rules`, and history pages for the API.

use std::future::IntoFuture;

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use mongodb::{Collection, Database};
use thiserror::Error;

use super::evaluate::Labels;
use super::instance::{date, phase_name, InstanceState};
use super::notify::{Delivery, Notification};
use super::rules::{RuleConfig, RulesError};
use super::state::{Phase, Transition};
use super::template::Moment;
use crate::store::CollectionNames;

/// A read or write of the alert collections failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "cannot read alert states from {collection}: {source}; check that MongoDB is \
         reachable (pending and firing alerts start fresh until it is)"
    )]
    RestoreStates {
        collection: String,
        source: mongodb::error::Error,
    },
    #[error(
        "cannot read {collection}: {source}; check that MongoDB is reachable (only the \
         rules file is used until the next reload)"
    )]
    ReadRules {
        collection: String,
        source: mongodb::error::Error,
    },
    #[error(
        "cannot store the alert transition in {collection}: {source}; check that MongoDB \
         is reachable and writable (the notification is still sent)"
    )]
    RecordTransition {
        collection: String,
        source: mongodb::error::Error,
    },
    #[error("cannot add the notification log to {collection}: {source}")]
    LogDeliveries {
        collection: String,
        source: mongodb::error::Error,
    },
    #[error("reading alerts: {source}; check that MongoDB is reachable and retry")]
    ReadHistory { source: mongodb::error::Error },
}

/// The alert collections of one database.
#[derive(Clone)]
pub struct AlertStore {
    db: Database,
    names: CollectionNames,
}

impl AlertStore {
    pub fn new(db: Database, names: CollectionNames) -> AlertStore {
        AlertStore { db, names }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn names(&self) -> &CollectionNames {
        &self.names
    }

    fn alerts(&self) -> Collection<Document> {
        self.db.collection(&self.names.alerts)
    }

    /// The last transition of every instance that was pending or firing, so an episode
    /// survives a restart without firing twice.
    pub async fn restore(&self) -> Result<Vec<InstanceState>, StoreError> {
        let failed = |source| StoreError::RestoreStates {
            collection: self.names.alerts.clone(),
            source,
        };
        let pipeline = vec![
            doc! { "$sort": { "at": -1 } },
            doc! { "$group": { "_id": { "rule": "$ruleId", "instance": "$instance" }, "last": { "$first": "$$ROOT" } } },
        ];
        let rows = all(self.alerts().aggregate(pipeline), failed).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get_document("last").ok())
            .filter_map(open_episode)
            .collect())
    }

    /// Every document of `alert_rules`, each parsed as a rule (`_id` standing in for a
    /// missing `id`); one that is not a rule is an error of its own, not of the read.
    pub async fn rule_documents(&self) -> Result<Vec<Result<RuleConfig, RulesError>>, StoreError> {
        let failed = |source| StoreError::ReadRules {
            collection: self.names.alert_rules.clone(),
            source,
        };
        let rules = self.db.collection::<Document>(&self.names.alert_rules);
        let docs = all(rules.find(doc! {}), failed).await?;
        Ok(docs.into_iter().map(rule_config).collect())
    }

    /// Stores one transition; returns the document's id, to attach the deliveries to.
    pub(crate) async fn record(
        &self,
        m: &Moment<'_>,
        transition: Transition,
        n: &Notification,
        notified: bool,
    ) -> Result<Bson, StoreError> {
        let rule = m.rule;
        let mut d = doc! {
            "ruleId": &rule.config.id,
            "ruleName": &rule.name,
            "instance": m.instance,
            "labels": bson::to_bson(m.labels).unwrap_or(Bson::Null),
            "state": transition.state(),
            "repeat": transition == Transition::Repeat,
            "value": m.value.map(Bson::Double).unwrap_or(Bson::Null),
            "threshold": n.threshold.map(Bson::Double).unwrap_or(Bson::Null),
            "at": bson::DateTime::from_millis(m.at),
            "startsAt": bson::DateTime::from_millis(m.since),
            "severity": &rule.config.severity,
            "summary": n.annotations.get("summary").cloned().unwrap_or_default(),
            "annotations": bson::to_bson(&n.annotations).unwrap_or(Bson::Null),
            "notifications": [],
        };
        if transition == Transition::Resolve {
            d.insert("endsAt", bson::DateTime::from_millis(m.at));
        }
        if notified {
            d.insert("notifiedAt", bson::DateTime::from_millis(m.at));
        }
        self.alerts()
            .insert_one(d)
            .await
            .map(|r| r.inserted_id)
            .map_err(|source| StoreError::RecordTransition {
                collection: self.names.alerts.clone(),
                source,
            })
    }

    /// Sets the notification log of the transition stored as `id`.
    pub(crate) async fn log_deliveries(
        &self,
        id: Bson,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        let log = bson::to_bson(deliveries).unwrap_or(Bson::Array(Vec::new()));
        self.alerts()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "notifications": log } },
            )
            .await
            .map(drop)
            .map_err(|source| StoreError::LogDeliveries {
                collection: self.names.alerts.clone(),
                source,
            })
    }

    /// Transitions matching `filter`, newest first, at most `limit`, as relaxed
    /// extended JSON.
    pub async fn history(
        &self,
        filter: Document,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let failed = |source| StoreError::ReadHistory { source };
        let alerts = self.alerts();
        let newest_first = alerts.find(filter).sort(doc! { "at": -1 }).limit(limit);
        let docs = all(newest_first, failed).await?;
        Ok(docs
            .into_iter()
            .map(|d| Bson::Document(d).into_relaxed_extjson())
            .collect())
    }
}

/// Every document a find or aggregate yields; `failed` says which read it was.
async fn all<Q>(
    query: Q,
    failed: impl Fn(mongodb::error::Error) -> StoreError,
) -> Result<Vec<Document>, StoreError>
where
    Q: IntoFuture<Output = mongodb::error::Result<mongodb::Cursor<Document>>>,
{
    let cursor = query.await.map_err(&failed)?;
    cursor.try_collect().await.map_err(failed)
}

/// The instance a last transition leaves pending or firing; `None` once it resolved.
fn open_episode(last: &Document) -> Option<InstanceState> {
    let since = last
        .get_datetime("startsAt")
        .or_else(|_| last.get_datetime("at"))
        .map(|d| d.timestamp_millis())
        .unwrap_or(0);
    let phase = match last.get_str("state").unwrap_or("") {
        "pending" => Phase::Pending { since },
        "firing" => Phase::Firing {
            since,
            notified: last
                .get_datetime("notifiedAt")
                .map(|d| d.timestamp_millis())
                .unwrap_or(since),
        },
        _ => return None,
    };
    let labels: Labels = last
        .get_document("labels")
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(InstanceState {
        rule_id: last.get_str("ruleId").unwrap_or("").to_string(),
        rule_name: last.get_str("ruleName").unwrap_or("").to_string(),
        instance: last.get_str("instance").unwrap_or("").to_string(),
        labels,
        state: phase_name(phase),
        since: Some(date(since)),
        value: last.get_f64("value").ok(),
        evaluated_at: last
            .get_datetime("at")
            .map(|d| date(d.timestamp_millis()))
            .unwrap_or_default(),
        phase,
    })
}

fn rule_config(mut d: Document) -> Result<RuleConfig, RulesError> {
    let id = d.get("_id").cloned();
    d.remove("_id");
    if let (Some(Bson::String(s)), false) = (&id, d.contains_key("id")) {
        d.insert("id", s.clone());
    }
    bson::from_document(d).map_err(|e| RulesError::Document {
        id: format!("{id:?}"),
        detail: e.to_string(),
    })
}
