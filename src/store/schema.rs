//! Creates what the daemon needs in MongoDB and says what it created.
//!
//! In: a database and the collection names. Out: the `events` time-series
//! collection, its indexes (the seed's), and TTL indexes on `dead_letters` and
//! `pipeline_stats`, plus one line per thing created or found wrong.

use std::time::Duration;

use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::options::{IndexOptions, TimeseriesGranularity, TimeseriesOptions};
use mongodb::results::CollectionType;
use mongodb::{Database, IndexModel};

use super::CollectionNames;

/// Retention of what the ingest path writes.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub raw: Duration,
    pub dead_letters: Duration,
    pub pipeline_stats: Duration,
}

/// The seed's indexes on raw events, by name.
fn event_indexes() -> Vec<(&'static str, Document)> {
    vec![
        (
            "user_time",
            doc! { "metadata.dimensions.userId": 1, "timestamp": -1 },
        ),
        ("session", doc! { "metadata.dimensions.sessionId": 1 }),
        (
            "type_time",
            doc! { "metadata.eventType": 1, "timestamp": -1 },
        ),
        (
            "country_time",
            doc! { "metadata.dimensions.country": 1, "timestamp": -1 },
        ),
        (
            "product_time",
            doc! { "metadata.dimensions.productId": 1, "timestamp": -1 },
        ),
    ]
}

/// Creates what is missing; returns a description of each change, and of each
/// existing collection that is not as expected.
pub async fn ensure_raw_storage(
    db: &Database,
    names: &CollectionNames,
    retention: Retention,
) -> mongodb::error::Result<Vec<String>> {
    let mut report = Vec::new();
    let specs: Vec<_> = db.list_collections().await?.try_collect().await?;
    let existing = |name: &str| specs.iter().find(|s| s.name == name);

    match existing(&names.events) {
        None => {
            db.create_collection(&names.events)
                .timeseries(
                    TimeseriesOptions::builder()
                        .time_field("timestamp".to_string())
                        .meta_field(Some("metadata".to_string()))
                        .granularity(Some(TimeseriesGranularity::Seconds))
                        .build(),
                )
                .expire_after_seconds(retention.raw)
                .await?;
            report.push(format!(
                "created time-series collection {} (timeField timestamp, metaField metadata, granularity seconds, expireAfterSeconds {})",
                names.events,
                retention.raw.as_secs()
            ));
        }
        Some(spec) if spec.collection_type != CollectionType::Timeseries => report.push(format!(
            "warning: {} exists but is not a time-series collection; events are stored in it as they are, but it will not expire and compresses poorly. Rename it and restart to let mongopulsed create it",
            names.events
        )),
        Some(_) => {}
    }
    let events = db.collection::<Document>(&names.events);
    let have: Vec<String> = events.list_index_names().await.unwrap_or_default();
    let missing: Vec<IndexModel> = event_indexes()
        .into_iter()
        .filter(|(name, _)| !have.iter().any(|h| h == name))
        .map(|(name, keys)| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).build())
                .build()
        })
        .collect();
    if !missing.is_empty() {
        let created: Vec<String> = missing
            .iter()
            .filter_map(|m| m.options.as_ref().and_then(|o| o.name.clone()))
            .collect();
        events.create_indexes(missing).await?;
        report.push(format!(
            "created indexes on {}: {}",
            names.events,
            created.join(", ")
        ));
    }

    for (collection, field, keep) in [
        (&names.dead_letters, "receivedAt", retention.dead_letters),
        (&names.pipeline_stats, "timestamp", retention.pipeline_stats),
    ] {
        let coll = db.collection::<Document>(collection);
        let name = format!("{field}_ttl");
        let have: Vec<String> = coll.list_index_names().await.unwrap_or_default();
        if !have.contains(&name) {
            coll.create_index(
                IndexModel::builder()
                    .keys(doc! { field: 1 })
                    .options(
                        IndexOptions::builder()
                            .name(name)
                            .expire_after(keep)
                            .build(),
                    )
                    .build(),
            )
            .await?;
            report.push(format!(
                "created TTL index on {collection}.{field} ({} days)",
                keep.as_secs() / 86_400
            ));
        }
    }
    Ok(report)
}
