//! What the editors and template variables offer: event types, dimensions,
//! dimension values, metric names, from the rollups in a time range (bounded).

use std::collections::BTreeSet;
use std::time::Duration;

use bson::{doc, Bson, Document};
use serde::Serialize;

use super::execute::{aggregate, ExecError};
use crate::rollup::Level;
use crate::store::CollectionNames;

pub const MAX_VALUES: usize = 1000;

/// The level to scan for a range: fine enough to see recent data, coarse enough to be cheap.
fn level_for(from_ms: i64, to_ms: i64) -> Level {
    match to_ms - from_ms {
        d if d <= 6 * 3_600_000 => Level::Minute,
        d if d <= 31 * 86_400_000 => Level::Hour,
        _ => Level::Day,
    }
}

fn range(from_ms: i64, to_ms: i64) -> Document {
    doc! { "$gte": bson::DateTime::from_millis(from_ms), "$lt": bson::DateTime::from_millis(to_ms) }
}

pub struct Scope<'a> {
    pub db: &'a mongodb::Database,
    pub names: &'a CollectionNames,
    pub spec: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub max_time: Duration,
}

impl Scope<'_> {
    fn collection(&self) -> &str {
        level_for(self.from_ms, self.to_ms).collection(self.names)
    }

    async fn distinct_values(
        &self,
        field: &str,
        mut filter: Document,
    ) -> Result<Vec<String>, ExecError> {
        filter.insert("spec", self.spec);
        filter.insert("timestamp", range(self.from_ms, self.to_ms));
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$group": { "_id": format!("${field}") } },
            doc! { "$sort": { "_id": 1 } },
            doc! { "$limit": MAX_VALUES as i64 },
        ];
        let rows = aggregate(
            self.db,
            self.collection(),
            pipeline,
            self.max_time,
            MAX_VALUES,
        )
        .await?;
        Ok(rows
            .rows
            .iter()
            .filter_map(|r| match r.get("_id") {
                Some(Bson::String(s)) => Some(s.clone()),
                Some(Bson::Null) | None => None,
                Some(other) => Some(other.to_string()),
            })
            .collect())
    }

    pub async fn event_types(&self) -> Result<Vec<String>, ExecError> {
        self.distinct_values("dimensions.eventType", doc! {}).await
    }

    pub async fn dimension_values(
        &self,
        dimension: &str,
        event_type: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<String>, ExecError> {
        let mut filter = doc! {};
        if let Some(t) = event_type.filter(|t| !t.is_empty() && *t != "*") {
            filter.insert("dimensions.eventType", t);
        }
        if !prefix.is_empty() {
            let escaped: String = prefix
                .chars()
                .flat_map(|c| {
                    if "\\^$.|?*+()[]{}".contains(c) {
                        vec!['\\', c]
                    } else {
                        vec![c]
                    }
                })
                .collect();
            filter.insert(
                format!("dimensions.{dimension}"),
                doc! { "$regex": format!("^{escaped}") },
            );
        }
        self.distinct_values(&format!("dimensions.{dimension}"), filter)
            .await
    }

    /// Names found in the newest rollup documents of the spec.
    pub async fn schema(&self, event_type: Option<&str>) -> Result<Schema, ExecError> {
        let mut filter = doc! { "spec": self.spec };
        if let Some(t) = event_type.filter(|t| !t.is_empty() && *t != "*") {
            filter.insert("dimensions.eventType", t);
        }
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$sort": { "timestamp": -1 } },
            doc! { "$limit": 200 },
            doc! { "$project": { "dimensions": 1, "metrics": 1, "sketches": 1, "spec": 1 } },
        ];
        let mut schema = Schema::default();
        let rows = aggregate(
            self.db,
            Level::Minute.collection(self.names),
            pipeline,
            self.max_time,
            200,
        )
        .await?;
        let mut dims = BTreeSet::new();
        let mut metrics = BTreeSet::new();
        let mut quantiles = BTreeSet::new();
        let mut distinct = BTreeSet::new();
        let mut top_k = BTreeSet::new();
        for r in &rows.rows {
            if let Ok(d) = r.get_document("dimensions") {
                dims.extend(d.keys().cloned());
            }
            if let Ok(m) = r.get_document("metrics") {
                metrics.extend(m.keys().filter(|k| *k != "count").cloned());
            }
            if let Ok(s) = r.get_document("sketches") {
                let keys = |g: &str| {
                    s.get_document(g)
                        .map(|d| d.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                quantiles.extend(keys("quantiles"));
                distinct.extend(keys("distinct"));
                top_k.extend(keys("topK"));
            }
        }
        schema.dimensions = dims.into_iter().collect();
        schema.metrics = metrics.into_iter().collect();
        schema.quantiles = quantiles.into_iter().collect();
        schema.distinct = distinct.into_iter().collect();
        schema.top_k = top_k.into_iter().collect();
        Ok(schema)
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    pub event_types: Vec<String>,
    pub specs: Vec<String>,
    pub dimensions: Vec<String>,
    pub metrics: Vec<String>,
    pub quantiles: Vec<String>,
    pub distinct: Vec<String>,
    pub top_k: Vec<String>,
}

/// Rollup specs present (from the newest minute documents).
pub async fn specs(
    db: &mongodb::Database,
    names: &CollectionNames,
    max_time: Duration,
) -> Result<Vec<String>, ExecError> {
    let pipeline = vec![
        doc! { "$sort": { "timestamp": -1 } },
        doc! { "$limit": 1000 },
        doc! { "$group": { "_id": "$spec" } },
        doc! { "$sort": { "_id": 1 } },
    ];
    let rows = aggregate(db, Level::Minute.collection(names), pipeline, max_time, 100).await?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| r.get_str("_id").ok().map(str::to_string))
        .collect())
}
