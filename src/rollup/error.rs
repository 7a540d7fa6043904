//! What can go wrong in the rollups, each saying what was wrong and what to do.
//!
//! [`RollupConfigError`]: the `[rollups]` configuration (refused at start).
//! [`SketchError`]: sketch bytes that cannot be read or merged.
//! [`RollupError`]: reading or writing MongoDB, and stored documents that are
//! not what this daemon writes. Texts never carry a connection string; the
//! daemon still passes them through its redactor before logging.

use thiserror::Error;

use super::aggregate::MAX_DIMENSIONS;

const FIX_CONFIG: &str = "fix the daemon's [rollups] configuration";

#[derive(Debug, Clone, PartialEq, Error)]
pub enum RollupConfigError {
    #[error("rollups.specs is empty: configure at least one spec (or remove the key to use the default)")]
    NoSpecs,
    #[error("rollups.specs: name '{0}' must be letters, digits, '_' or '-'")]
    BadSpecName(String),
    #[error("rollups.specs: two specs are named '{0}'; {FIX_CONFIG}")]
    SpecNamedTwice(String),
    #[error("rollups.specs '{spec}': {list} entry '{entry}' is not a usable field name (not empty, no leading '$', no '.', at most 64 bytes)")]
    BadFieldName {
        spec: String,
        list: &'static str,
        entry: String,
    },
    #[error("rollups.specs '{spec}': {list} lists a name twice")]
    NamedTwice { spec: String, list: &'static str },
    #[error("rollups.specs '{spec}': at most {MAX_DIMENSIONS} dimensions")]
    TooManyDimensions { spec: String },
    #[error(
        "rollups.specs '{spec}': quantile_relative_error must be between 0 and 0.5, got {got}"
    )]
    BadRelativeError { spec: String, got: f64 },
    #[error("rollups.specs '{spec}': top_k needs an attribute name and 1 ≤ k ≤ 100 (got '{attribute}', {k})")]
    BadTopK {
        spec: String,
        attribute: String,
        k: usize,
    },
    #[error("{setting} must be a number of seconds ≥ 0, got {got}")]
    BadSeconds { setting: &'static str, got: f64 },
    #[error("rollups.flush_interval_ms must be between 1 and 60000 (1000 keeps live panels within a second)")]
    BadFlushInterval,
    #[error("rollups.max_open_tuples must be at least 1 (default 100000): it bounds the distinct dimension tuples held in memory")]
    NoOpenTuples,
    #[error("rollups.sessions.spec '{0}' names no configured spec")]
    UnknownSessionSpec(String),
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SketchError {
    #[error("not a HyperLogLog sketch: {0}")]
    NotHll(String),
    #[error("not a DDSketch: {0}")]
    NotDdSketch(String),
    #[error("not a frequent-items sketch: {0}")]
    NotFrequentItems(String),
    #[error("quantile sketches with different accuracy cannot merge: {0}; query specs with the same quantile_relative_error together")]
    AccuracyMismatch(String),
}

#[derive(Debug, Error)]
pub enum RollupError {
    #[error(transparent)]
    Config(#[from] RollupConfigError),
    /// MongoDB did not answer a read, or answered with an error.
    #[error("reading {what}: {source}; check that MongoDB is reachable (the daemon retries)")]
    Read {
        what: String,
        source: mongodb::error::Error,
    },
    /// MongoDB did not take a write; nothing of it counts as written.
    #[error("writing {collection}: {problem}")]
    Write { collection: String, problem: String },
    /// A stored rollup document is not what this daemon writes.
    #[error("a document in {collection} cannot be read ({problem}); it was damaged or written by another program: rebuild the range with `mongopulsed backfill --force`")]
    Damaged { collection: String, problem: String },
    #[error("clearing {collection}: {source}; check that MongoDB is reachable, then run the backfill again (it is safe to rerun)")]
    Clear {
        collection: String,
        source: mongodb::error::Error,
    },
    #[error("{0}")]
    BadRange(String),
}

/// A field of a stored rollup document that cannot be read.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl std::fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

impl RollupError {
    pub fn read(what: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> RollupError {
        let what = what.into();
        move |source| RollupError::Read { what, source }
    }

    pub fn damaged<E: std::fmt::Display>(collection: &str) -> impl FnOnce(E) -> RollupError + '_ {
        move |problem| RollupError::Damaged {
            collection: collection.to_string(),
            problem: problem.to_string(),
        }
    }

    pub fn clear(collection: &str) -> impl FnOnce(mongodb::error::Error) -> RollupError + '_ {
        move |source| RollupError::Clear {
            collection: collection.to_string(),
            source,
        }
    }
}
