//! The query engine of the plugin.
//!
//! In: a query's JSON, its time range and interval, the data source's
//! instance. Out: Grafana data frames, or an error naming what was wrong.
//!
//! A builder query passes through these stages, in order ([`run`] drives them):
//! 1. [`model`]: parse and check the query's JSON;
//! 2. [`plan`] (pure): the logical plan — level, buckets, aligned range, the
//!    rows' [`filter`], the comparison's earlier period;
//! 3. [`generate`] (pure): the plan's MongoDB pipeline, final as written;
//! 4. [`execute`]: run it, bounded in time and rows (closed buckets come
//!    from the [`cache`] instead, and only the open tail is read);
//! 5. [`decode`]: the returned documents as a [`grid`] of cells per group and
//!    bucket;
//! 6. [`compute`] (pure): measures, top-N, moving windows, fill, totals,
//!    comparison shift;
//! 7. [`frames`]: Grafana data frames.
//!
//! A pipeline query is checked by [`pipeline`], run by [`execute`], its rows
//! decoded into columns by [`decode`] and framed by [`frames`]
//! ([`run::run_pipeline`]). Every regular expression either kind sends to
//! MongoDB passes [`regex_check`] first. Live channels read change-stream documents with the
//! same [`filter`] the pipeline's `$match` is written from.

pub mod cache;
pub mod compute;
pub mod decode;
pub mod execute;
pub mod filter;
pub mod frames;
pub mod generate;
pub mod grid;
pub mod metadata;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod regex_check;
pub mod run;
#[cfg(test)]
mod testing;
