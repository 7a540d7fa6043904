//! The query engine of the plugin.
//!
//! In: a query's JSON, its time range and interval, the data source's
//! instance. Out: Grafana data frames, or an error naming what was wrong.
//! Stages: [`model`] (parse) → [`plan`] (pure: level, buckets, pipeline) →
//! execution → [`compute`] (pure: merge buckets, measures, fill, top-N,
//! windows) → [`frames`].

pub mod cache;
pub mod compute;
pub mod execute;
pub mod frames;
pub mod metadata;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod run;
