//! What the events endpoint asks of whatever counts events, and what it gets back.
//!
//! In: a request's valid events (with their index in the request) and the
//! [`Writer`] that stores them in `events`. Out: which were stored and counted,
//! which were refused and why, or that nothing was stored.
//!
//! Ingest comes before the rollups in the data flow, so it names this contract
//! and the rollup engine implements it (`rollup::record`); the daemon hands the
//! one to the other. That keeps the "admit → write → settle" protocol, whose
//! steps must never be separated, in one function of the rollup engine.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::writer::Writer;
use crate::event::Event;

/// Stores events and counts exactly those MongoDB stored.
pub trait Recorder: Send + Sync {
    /// Admits `events` into the open windows (refusing those whose minute is
    /// already final), stores the admitted ones with `writer`, then counts the
    /// stored ones and gives back the admissions of the rest. If the caller
    /// goes away before the write is answered, the settling still happens, in
    /// the background.
    fn record<'a>(
        self: Arc<Self>,
        events: Vec<(usize, Event<'a>)>,
        writer: &'a Writer,
        writer_id: &'a str,
    ) -> BoxFuture<'a, Result<Recorded<'a>, NotRecorded>>;
}

/// The outcome of [`Recorder::record`] when MongoDB answered.
#[derive(Debug, Default)]
pub struct Recorded<'a> {
    /// Stored in `events` and counted, with their index in the request.
    pub stored: Vec<(usize, Event<'a>)>,
    /// Not stored, with their index in the request.
    pub refused: Vec<(usize, Refusal)>,
    /// Not stored again: an event with the same id is stored already (by this
    /// request's earlier attempt, or by whoever stored it first). Their index.
    pub duplicates: Vec<usize>,
}

/// Why one event was not stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Its minute is already final: it could never be counted.
    Late {
        minute_start_ms: i64,
        watermark_ms: i64,
    },
    /// It would open a new dimension tuple while `limit` are open already
    /// (`rollups.max_open_tuples`); not stored, so the client may retry later.
    TooManyTuples { limit: usize },
    /// MongoDB refused this document (the rest of the batch was stored).
    ByMongodb(String),
    /// An event with the same id is being stored right now; retry once it is answered.
    InFlight,
}

/// The request's events were not (or not yet) stored; the client should retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotRecorded {
    #[error("{0}; nothing from this request was stored")]
    Write(String),
    #[error("the daemon is shutting down; nothing from this request was stored")]
    ShuttingDown,
    /// The write was sent but not answered in time: MongoDB may still store the
    /// events (they are counted if it does), so a retry may store them twice.
    #[error("{0}; the events may still be stored (and are then counted): retry later")]
    Unanswered(String),
}
