//! Runs a query through the stages. In: a builder query and its plan
//! context, or a pipeline query. Out: an [`Outcome`] (series, the grid they
//! came from, the plan, notices, the pipelines that ran) and its frames, or
//! the frame of a pipeline query. A builder query is planned, its pipeline
//! generated and executed (closed buckets come from the cache, and only the
//! plan of the uncached tail is read), decoded, computed, then framed.

use std::time::Duration;

use grafana_plugin_sdk::data::{Frame, Severity};
use mongodb::Database;

use super::cache::BucketCache;
use super::compute::{self, Series};
use super::execute::{aggregate, pipeline_text, ExecError};
use super::grid::Grid;
use super::model::{BuilderQuery, Format, MeasureKind, ModelError, PipelineQuery};
use super::plan::{comparison, plan, Plan, PlanContext};
use super::{decode, frames, generate, pipeline};

/// Where and how a query runs.
pub struct Env<'a> {
    pub db: &'a Database,
    pub cache: Option<&'a BucketCache>,
    /// Prefix of cache keys (the data source uid).
    pub cache_scope: &'a str,
    pub max_time: Duration,
    pub now_ms: i64,
    /// Buckets ending later than now − this may still change.
    pub horizon_ms: i64,
    pub max_rows: usize,
    pub max_series: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{0}")]
    Exec(ExecError),
    #[error("{0}")]
    Data(String),
}

/// What a builder query produced, before framing.
pub struct Outcome {
    /// The panel's start, aligned to the buckets (the grid may reach earlier for moving windows).
    pub from_ms: i64,
    pub series: Vec<Series>,
    pub grid: Grid,
    pub plan: Plan,
    pub notices: Vec<(Severity, String)>,
    pub executed: String,
}

/// Reads the grid of a plan, serving closed buckets from the cache.
async fn read_grid(
    env: &Env<'_>,
    plan: &Plan,
    notices: &mut Vec<(Severity, String)>,
) -> Result<(Grid, String), RunError> {
    let key = cache_key(env.cache_scope, plan);
    let hit = env
        .cache
        .and_then(|c| c.get(&key, plan.from_ms, env.now_ms));
    let read_from = hit
        .as_ref()
        .map_or(plan.from_ms, |h| h.until.min(plan.to_ms));
    let uncached = plan.reading_from(read_from);
    let pipeline = generate::pipeline(&uncached);
    let executed = pipeline_text(&plan.collection, &pipeline);
    let mut tail = Grid::new();
    let mut truncated = false;
    if read_from < plan.to_ms {
        let fetched = aggregate(
            env.db,
            &plan.collection,
            pipeline,
            env.max_time,
            env.max_rows,
        )
        .await?;
        truncated = fetched.truncated;
        if fetched.truncated {
            notices.push((
                Severity::Warning,
                format!(
                    "results cut at {} rows: narrow the time range or group by fewer dimensions",
                    env.max_rows
                ),
            ));
        }
        tail = decode::grid(&uncached, &fetched.rows).map_err(RunError::Data)?;
    }
    let served = hit.as_ref().map_or(0, |h| h.buckets);
    // Cells carried over keep their age, so the cache's time to live still runs out.
    let created = hit.as_ref().map_or(env.now_ms, |h| h.created_ms);
    // The few tail cells go into the cached ones, not the other way round:
    // they start where the cached buckets end, so nothing is overwritten.
    let mut grid = hit.map_or_else(Grid::new, |h| h.grid);
    for (k, cells) in tail {
        grid.entry(k).or_default().extend(cells);
    }
    if let Some(cache) = env.cache {
        cache.record_read(read_from > plan.from_ms, served);
        // A cut-short read lacks buckets that are not empty: never keep it.
        if !truncated {
            let until = closed_until(plan, &grid, env.now_ms - env.horizon_ms);
            cache.put(key, &grid, plan.from_ms, until, created);
        }
    }
    Ok((grid, executed))
}

/// The first bucket that may still change: one with a partial rollup, or one
/// ending after the horizon.
fn closed_until(plan: &Plan, grid: &Grid, horizon: i64) -> i64 {
    let mut until = plan.from_ms;
    for t in plan.buckets() {
        if plan.bucket_end(t) > horizon {
            break;
        }
        if grid
            .values()
            .any(|cells| cells.get(&t).is_some_and(|c| !c.closed))
        {
            break;
        }
        until = plan.bucket_end(t);
    }
    until
}

/// The plan without its time range: what makes two reads share buckets. Top-K
/// sketches are read with the K asked for, so K is part of the shape.
pub fn cache_key(scope: &str, plan: &Plan) -> String {
    format!(
        "{scope}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        plan.collection,
        plan.bucket_ms,
        plan.top_k_sizes,
        plan.strategy,
        plan.filter,
        plan.group_by,
        plan.metrics,
        plan.distinct,
        plan.quantiles,
        plan.top_k,
    )
}

pub async fn run_builder(
    env: &Env<'_>,
    q: &BuilderQuery,
    ctx: &PlanContext,
) -> Result<Outcome, RunError> {
    let main = plan(q, ctx)?;
    let mut notices: Vec<(Severity, String)> = main
        .notices
        .iter()
        .map(|n| (Severity::Info, n.clone()))
        .collect();
    let (grid, executed) = read_grid(env, &main, &mut notices).await?;
    let grid = compute::top_n(q, &main, grid);
    let mut series = compute::series(q, &main, &grid, main.panel_start());
    let mut executed_all = executed;

    if let Some(earlier) = comparison(q, &main)? {
        let (prev, executed) = read_grid(env, &earlier.plan, &mut notices).await?;
        // Compare the groups shown, not a separately ranked set.
        let prev = if q.top_n.is_some() {
            compute::keep_shown_groups(&grid, prev, main.group_by.len())
        } else {
            prev
        };
        series.extend(compute::shift(
            compute::series(q, &earlier.plan, &prev, earlier.plan.panel_start()),
            earlier.shift_ms,
            &earlier.label,
        ));
        executed_all = format!("{executed_all}\n// compare {}\n{executed}", earlier.label);
    }
    if series.len() > env.max_series {
        notices.push((
            Severity::Warning,
            format!(
                "{} series, showing the first {}: add filters or use top-N",
                series.len(),
                env.max_series
            ),
        ));
        series.truncate(env.max_series);
    }
    Ok(Outcome {
        from_ms: main.panel_start(),
        series,
        grid,
        plan: main,
        notices,
        executed: executed_all,
    })
}

/// Rows a pipeline query may return before it is cut short.
const PIPELINE_MAX_ROWS: usize = 100_000;

/// Runs a pipeline query over the context's range and collections: its
/// checked stages, then one frame of its rows.
pub async fn run_pipeline(
    db: &Database,
    max_time: Duration,
    q: &PipelineQuery,
    ctx: &PlanContext,
) -> Result<Vec<Frame>, RunError> {
    let stages = pipeline::prepare(q, &ctx.collections, ctx.from_ms, ctx.to_ms, ctx.interval_ms)?;
    let executed = pipeline_text(&q.collection, &stages);
    let fetched = aggregate(db, &q.collection, stages, max_time, PIPELINE_MAX_ROWS).await?;
    let mut notices = Vec::new();
    if fetched.truncated {
        notices.push((
            Severity::Warning,
            "results cut at 100,000 rows: add a $limit or narrow the range".to_string(),
        ));
    }
    let frame = frames::pipeline_frame(q, &fetched.rows)?;
    Ok(vec![
        frame.with_metadata(frames::metadata(Some(executed), &notices))
    ])
}

/// Frames for a builder query. Alert evaluations always get one numeric
/// series per label set, whatever the panel format.
pub fn builder_frames(
    q: &BuilderQuery,
    out: &Outcome,
    from_alert: bool,
) -> Result<Vec<Frame>, RunError> {
    let meta = frames::metadata(Some(out.executed.clone()), &out.notices);
    let format = if from_alert {
        Format::Timeseries
    } else {
        q.format
    };
    let frames = match format {
        Format::Timeseries => frames::timeseries(&out.series, meta),
        Format::Wide => frames::wide(&out.series, meta),
        Format::Table => {
            let names: Vec<String> = q
                .measures
                .iter()
                .map(|m| m.alias.clone().unwrap_or_else(|| m.kind.label()))
                .collect();
            let numeric: Vec<Series> = out
                .series
                .iter()
                .filter(|s| !matches!(q.measures[s.measure].kind, MeasureKind::Topk { .. }))
                .cloned()
                .collect();
            let mut frames = if numeric.is_empty() {
                Vec::new()
            } else {
                frames::table(&numeric, &out.plan.group_by, &names, meta.clone())
                    .map_err(RunError::Data)?
            };
            for m in &q.measures {
                if let MeasureKind::Topk { attribute, k } = &m.kind {
                    let rows =
                        compute::top_k_table(&out.plan, &out.grid, attribute, *k, out.from_ms);
                    frames.push(
                        frames::top_list(
                            &format!("top {attribute}"),
                            &out.plan.group_by,
                            attribute,
                            &rows,
                            meta.clone(),
                        )
                        .map_err(RunError::Data)?,
                    );
                }
            }
            Ok(frames)
        }
    }
    .map_err(RunError::Data)?;
    Ok(frames)
}

impl From<ExecError> for RunError {
    fn from(e: ExecError) -> Self {
        RunError::Exec(e)
    }
}
