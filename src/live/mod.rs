//! Live panels: Grafana Live channels fed by one change stream per data source.
//!
//! In: builder queries with `live: true` (their channel is in the frame meta
//! of the QueryData answer; the query travels in the subscribe request's
//! data, or is found by its channel path), and the change events of
//! `metrics_minutely` (partial and final minutes the daemon writes every
//! second). Out: per channel, a first frame with the last minutes, then the
//! minutes that changed, at most `liveMaxPushesPerSecond` times a second.
//!
//! Values are recomputed per minute from the current rollup documents, never
//! accumulated, so a resumed or restarted change stream can neither lose nor
//! double an event.

mod channel;
mod feed;

pub use channel::{channel_path, run_channel, ChannelQuery, Runner};
pub use feed::{FeedEvent, FeedGuard, LiveHub};
