//! Admit → write → settle: the one way live events enter the windows.
//!
//! In: a request's valid events and the writer of the `events` collection.
//! Out: the events MongoDB stored, counted in the windows once; the others
//! refused (late, or refused by MongoDB) with their admissions given back.
//!
//! The three steps belong together: an event is admitted before it is written
//! (so its minute cannot become final while the write is in flight), and the
//! admission is settled whatever happens next, even when the client goes away
//! and axum drops the request half way ([`Admitted`]'s drop settles it from
//! the writer's reply, in the background).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::engine::Rollups;
use super::tuples::TupleKey;
use super::windows::{Admission, Late, Refused};
use crate::event::Event;
use crate::ingest::record::{NotRecorded, Recorded, Recorder, Refusal};
use crate::ingest::writer::{Queued, Reply, Writer};

impl Recorder for Rollups {
    fn record<'a>(
        self: Arc<Self>,
        events: Vec<(usize, Event<'a>)>,
        writer: &'a Writer,
        writer_id: &'a str,
    ) -> BoxFuture<'a, Result<Recorded<'a>, NotRecorded>> {
        record(self, events, writer, writer_id).boxed()
    }
}

async fn record<'a>(
    rollups: Arc<Rollups>,
    events: Vec<(usize, Event<'a>)>,
    writer: &'a Writer,
    writer_id: &'a str,
) -> Result<Recorded<'a>, NotRecorded> {
    let mut recorded = Recorded::default();
    let events = drop_copies_within(events, &mut recorded.duplicates);
    let mut reserved = Vec::new();
    let admissions = rollups.admit(events.iter().map(|(_, e)| e), &mut reserved);
    let mut admitted: Vec<(usize, Event<'a>)> = Vec::with_capacity(events.len());
    let mut late_with_ids = Vec::new();
    for ((index, event), refused) in events.into_iter().zip(admissions) {
        match refused {
            None => admitted.push((index, event)),
            Some(Refused::Late(late)) if event.id.is_some() => {
                late_with_ids.push((index, event, late))
            }
            Some(Refused::Late(late)) => recorded.refused.push((
                index,
                Refusal::Late {
                    minute_start_ms: late.window_start_ms,
                    watermark_ms: late.watermark_ms,
                },
            )),
            Some(Refused::Duplicate) => recorded.duplicates.push(index),
            Some(Refused::InFlight) => recorded.refused.push((index, Refusal::InFlight)),
            Some(Refused::TooManyTuples(t)) => recorded
                .refused
                .push((index, Refusal::TooManyTuples { limit: t.limit })),
        }
    }
    if admitted.is_empty() {
        rollups.unreserve(&reserved);
        sort_out_late(&mut recorded, late_with_ids, writer).await;
        count_duplicates(&rollups, &recorded);
        return Ok(recorded);
    }

    // From here on the guard gives the reservations back, whatever happens (also
    // if the caller goes away during the lookup of late events just below).
    let mut guard = Admitted {
        rollups: rollups.clone(),
        reserved,
        times: admitted.iter().map(|(_, e)| Admission::of(e)).collect(),
        queued: None,
        settled: false,
    };
    sort_out_late(&mut recorded, late_with_ids, writer).await;
    count_duplicates(&rollups, &recorded);
    let docs = admitted
        .iter()
        .map(|(_, e)| e.to_document(writer_id))
        .collect();
    let queued = match writer.enqueue(docs).await {
        Ok(q) => guard.queued.insert(q),
        // The guard gives the admissions back.
        Err(e) => return Err(NotRecorded::Write(e.to_string())),
    };
    let reply = queued.await;
    guard.settled = true;
    let refused_by_mongodb = match reply {
        Ok(Reply {
            result: Ok(refused),
            ..
        }) => refused,
        Ok(Reply {
            result: Err(e),
            outcome_later: Some(later),
            ..
        }) => {
            // MongoDB has not answered yet and may still store the batch: the client
            // gets its 503 now, and the admissions stay held (the minutes cannot become
            // final) until the real outcome says what to count.
            let times = std::mem::take(&mut guard.times);
            let reserved = std::mem::take(&mut guard.reserved);
            tokio::spawn(settle_from_stored(rollups.clone(), times, reserved, later));
            return Err(NotRecorded::Unanswered(e.to_string()));
        }
        Ok(Reply { result: Err(e), .. }) => {
            rollups.not_stored(admitted.iter().map(|(_, e)| e));
            return Err(NotRecorded::Write(e.to_string()));
        }
        Err(_) => {
            rollups.not_stored(admitted.iter().map(|(_, e)| e));
            return Err(NotRecorded::ShuttingDown);
        }
    };

    // The writer lists refusals by position in the batch, in order.
    let mut refused_by_mongodb = refused_by_mongodb.into_iter().peekable();
    let mut not_stored = Vec::new();
    for (position, (index, event)) in admitted.into_iter().enumerate() {
        match refused_by_mongodb.next_if(|(p, _)| *p == position) {
            Some((_, why)) => {
                recorded.refused.push((index, Refusal::ByMongodb(why)));
                not_stored.push(event);
            }
            None => recorded.stored.push((index, event)),
        }
    }
    rollups.not_stored(&not_stored);
    rollups.stored(recorded.stored.iter().map(|(_, e)| e));
    Ok(recorded)
}

fn count_duplicates(rollups: &Rollups, recorded: &Recorded<'_>) {
    rollups
        .metrics
        .duplicates
        .inc_by(recorded.duplicates.len() as u64);
}

/// A batch that holds the same event twice (same id, same minute) stores it once;
/// the later copies are duplicates.
fn drop_copies_within<'a>(
    events: Vec<(usize, Event<'a>)>,
    duplicates: &mut Vec<usize>,
) -> Vec<(usize, Event<'a>)> {
    if events.iter().all(|(_, e)| e.id.is_none()) {
        return events;
    }
    let mut seen = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|(index, e)| {
            let Some(key) = e.id_key() else {
                return true;
            };
            let minute = e.timestamp.timestamp_millis().div_euclid(60_000);
            let first = seen.insert((key, minute));
            if !first {
                duplicates.push(*index);
            }
            first
        })
        .collect()
}

/// Events refused as late that carry an id may be copies of events stored before their
/// minute became final (a retry, a broker's redelivery): those `events` holds are
/// duplicates, the others late. If the lookup fails they stay late, which stores
/// nothing twice.
async fn sort_out_late<'a>(
    recorded: &mut Recorded<'a>,
    late: Vec<(usize, Event<'a>, Late)>,
    writer: &Writer,
) {
    if late.is_empty() {
        return;
    }
    let wanted: Vec<(&str, i64)> = late
        .iter()
        .filter_map(|(_, e, _)| Some((e.id.as_deref()?, e.timestamp.timestamp_millis())))
        .collect();
    let stored = writer.stored_ids(&wanted).await.unwrap_or_else(|why| {
        tracing::warn!("could not tell whether late events with ids were stored before: {why}");
        Default::default()
    });
    for (index, event, l) in late {
        let ms = event.timestamp.timestamp_millis();
        if event
            .id
            .as_deref()
            .is_some_and(|id| stored.contains(&(id.to_string(), ms)))
        {
            recorded.duplicates.push(index);
        } else {
            recorded.refused.push((
                index,
                Refusal::Late {
                    minute_start_ms: l.window_start_ms,
                    watermark_ms: l.watermark_ms,
                },
            ));
        }
    }
}

/// The admissions of one request's events until they are settled.
struct Admitted {
    rollups: Arc<Rollups>,
    /// Tuples held open for these events; given back after they are counted.
    reserved: Vec<Arc<TupleKey>>,
    times: Vec<Admission>,
    queued: Option<Queued>,
    settled: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Settled in `record`: the stored events are counted by now, so the
        // windows hold their tuples and the reservations can go.
        if self.settled {
            self.rollups.unreserve(&self.reserved);
            return;
        }
        let rollups = self.rollups.clone();
        let times = std::mem::take(&mut self.times);
        let reserved = std::mem::take(&mut self.reserved);
        let Some(queued) = self.queued.take() else {
            rollups.release(&times);
            rollups.unreserve(&reserved);
            return;
        };
        // The request's events are gone with it; the stored documents say what
        // to count.
        tokio::spawn(settle_from_stored(rollups, times, reserved, queued));
    }
}

/// Settles admissions from the writer's reply alone, for a request that no longer
/// holds its events (its client went away, or it was answered before MongoDB did):
/// what the stored documents hold is counted, the rest given back, and then the
/// tuples reserved for them.
async fn settle_from_stored(
    rollups: Arc<Rollups>,
    times: Vec<Admission>,
    reserved: Vec<Arc<TupleKey>>,
    mut queued: Queued,
) {
    let reply = loop {
        match queued.await {
            Ok(Reply {
                outcome_later: Some(later),
                ..
            }) => queued = later,
            other => break other,
        }
    };
    match reply {
        Ok(Reply {
            result: Ok(refused),
            docs,
            ..
        }) => {
            let refused: HashSet<usize> = refused.iter().map(|r| r.0).collect();
            let mut stored = Vec::new();
            let mut released = Vec::new();
            for (position, (doc, time)) in docs.iter().zip(&times).enumerate() {
                match (refused.contains(&position), Event::from_stored(doc)) {
                    (false, Ok(e)) => stored.push(e),
                    _ => released.push(*time),
                }
            }
            rollups.stored(&stored);
            rollups.release(&released);
        }
        _ => rollups.release(&times),
    }
    rollups.unreserve(&reserved);
}
