//! Admit → write → settle: the one way live events enter the windows.
//!
//! In: a request's valid events and the writer of the `events` collection.
//! Out: the events MongoDB stored, counted in the windows once; the others
//! refused (late, or refused by MongoDB) with their admissions given back.
//!
//! The three steps belong together: an event is admitted before it is written
//! (so its minute cannot become final while the write is in flight), and the
//! admission is settled whatever happens next, even when the client goes away
//! and axum drops the request half way, or MongoDB answers only after the
//! writer's timeout ([`Admitted`]'s drop settles it from the writer's final
//! reply, in the background).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::engine::Rollups;
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
    let admissions = rollups.admit(events.iter().map(|(_, e)| e.timestamp.timestamp_millis()));
    let mut recorded = Recorded::default();
    let mut admitted: Vec<(usize, Event<'a>)> = Vec::with_capacity(events.len());
    for ((index, event), late) in events.into_iter().zip(admissions) {
        match late {
            None => admitted.push((index, event)),
            Some(late) => recorded.refused.push((
                index,
                Refusal::Late {
                    minute_start_ms: late.window_start_ms,
                    watermark_ms: late.watermark_ms,
                },
            )),
        }
    }
    if admitted.is_empty() {
        return Ok(recorded);
    }

    let mut guard = Admitted {
        rollups: rollups.clone(),
        times: admitted
            .iter()
            .map(|(_, e)| e.timestamp.timestamp_millis())
            .collect(),
        queued: None,
        settled: false,
    };
    let docs = admitted
        .iter()
        .map(|(_, e)| e.to_document(writer_id))
        .collect();
    let queued = match writer.enqueue(docs).await {
        Ok(q) => guard.queued.insert(q),
        // The guard gives the admissions back.
        Err(e) => return Err(NotRecorded::Write(e.to_string())),
    };
    // Bounded: with MongoDB stalled, a batch can wait for a free write slot as well as
    // for its insert. Past the write timeout the client hears 503 and the guard counts
    // whatever the write stores once it is answered, in the background.
    let reply = match tokio::time::timeout(writer.write_timeout(), queued).await {
        Ok(reply) => reply,
        Err(_) => {
            return Err(NotRecorded::Unanswered(format!(
                "MongoDB sent no answer within {} ms",
                writer.write_timeout().as_millis()
            )))
        }
    };
    if let Ok(Reply {
        result: Err(e),
        later: Some(later),
        ..
    }) = reply
    {
        // MongoDB has not answered yet and may still store them: the guard counts what
        // it stores once it answers, in the background, and the client hears 503 now.
        guard.queued = Some(later);
        return Err(NotRecorded::Unanswered(e.to_string()));
    }
    guard.settled = true;
    let refused_by_mongodb = match reply {
        Ok(Reply {
            result: Ok(refused),
            ..
        }) => refused,
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

/// The admissions of one request's events until they are settled.
struct Admitted {
    rollups: Arc<Rollups>,
    times: Vec<i64>,
    queued: Option<Queued>,
    settled: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let rollups = self.rollups.clone();
        let times = std::mem::take(&mut self.times);
        let Some(queued) = self.queued.take() else {
            rollups.release(&times);
            return;
        };
        // The request's events are gone with it; the stored documents say what
        // to count.
        tokio::spawn(async move {
            let mut reply = queued.await;
            // A reply that came before MongoDB answered: the final one follows.
            while let Ok(Reply {
                later: Some(later), ..
            }) = reply
            {
                reply = later.await;
            }
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
        });
    }
}
