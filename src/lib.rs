//! Mongo Pulse: real-time analytics on MongoDB, seen through Grafana.
//!
//! One library, two thin binaries:
//! - `gpx_mongopulse`, the Grafana backend data-source plugin ([`plugin`]);
//! - `mongopulsed`, the companion daemon ([`daemon`]).
//!
//! Both talk to MongoDB through [`store`], which owns connection building,
//! collection names and error messages that never carry a password.

pub mod alerting;
pub mod daemon;
pub mod event;
pub mod ingest;
pub mod live;
pub mod plugin;
pub mod query;
pub mod rollup;
pub mod sources;
pub mod store;
