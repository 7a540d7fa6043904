//! `{"mode": "plugin"}`: the plugin's own figures as a one-row frame, so a
//! dashboard on this data source can show them without a Prometheus server
//! scraping Grafana. (CollectMetrics adds the cache counters only for the data
//! source a request names; a scrape of the whole plugin may name none.)
//!
//! In: the plugin's state and the data source of the request. Out: a frame of
//! numbers, read now (counters are since the plugin started).

use std::sync::Arc;

use arrow_array::{Array, Float64Array};
use grafana_plugin_sdk::data::{ArrayRefIntoField, Frame};

use super::instances::Instance;
use super::MongoPulsePlugin;
use crate::query::run::RunError;

/// The figures, in the order of the frame's fields.
pub fn figures(plugin: &MongoPulsePlugin, instance: &Instance) -> Vec<(&'static str, Option<f64>)> {
    let cache = instance.cache.stats();
    let (ok, failed) = plugin.state.metrics.queries();
    let live = &plugin.state.live;
    let reads = cache.tail_reads + cache.full_reads;
    vec![
        // Share of builder queries whose closed buckets came from the cache.
        (
            "cacheHitRatio",
            (reads > 0).then(|| cache.tail_reads as f64 / reads as f64),
        ),
        ("cacheTailReads", Some(cache.tail_reads as f64)),
        ("cacheFullReads", Some(cache.full_reads as f64)),
        ("cacheBucketsServed", Some(cache.buckets_served as f64)),
        ("cacheBytes", Some(cache.bytes as f64)),
        ("cacheEvictions", Some(cache.evictions as f64)),
        ("liveChannels", Some(live.known_channels() as f64)),
        (
            "liveStreamingChannels",
            Some(live.streaming_channels() as f64),
        ),
        ("changeStreamsOpen", Some(live.open_feeds() as f64)),
        ("changeStreamsOpened", Some(live.streams_opened() as f64)),
        ("liveResyncs", Some(live.resyncs() as f64)),
        ("queriesOk", Some(ok as f64)),
        ("queriesFailed", Some(failed as f64)),
    ]
}

pub fn frame(plugin: &MongoPulsePlugin, instance: &Arc<Instance>) -> Result<Frame, RunError> {
    let mut frame = Frame::new("plugin");
    for (name, value) in figures(plugin, instance) {
        let array = Float64Array::from(vec![value]);
        let field = (&array as &dyn Array)
            .try_into_field(name)
            .map_err(|e| RunError::Data(e.to_string()))?;
        frame = frame.with_field(field);
    }
    Ok(frame)
}
