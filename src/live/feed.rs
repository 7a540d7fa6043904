//! One change stream per data source, shared by all its channels: opened with
//! the first subscriber, closed after the last leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Document};
use futures_util::StreamExt;
use mongodb::options::FullDocumentType;
use mongodb::Database;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Live queries remembered for Grafana's subscriptions without data.
const MAX_CHANNELS: usize = 10_000;

/// What a channel learns from the feed.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    /// A rollup document as it now is.
    Doc(Arc<Document>),
    /// The stream was lost and reopened: re-read the rollups.
    Resync,
}

struct Feed {
    tx: broadcast::Sender<FeedEvent>,
    subscribers: usize,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct LiveHub {
    feeds: Mutex<HashMap<String, Feed>>,
    /// Channel path → (data source uid, query JSON, registration order), registered by QueryData.
    queries: Mutex<HashMap<String, (String, Value, u64)>>,
    registered: AtomicU64,
    streams_opened: AtomicU64,
    resyncs: AtomicU64,
}

/// Holds a data source's feed open; dropping it releases the feed.
pub struct FeedGuard {
    hub: Arc<LiveHub>,
    uid: String,
    pub events: broadcast::Receiver<FeedEvent>,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let mut feeds = self.hub.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = feeds.get_mut(&self.uid) {
            f.subscribers -= 1;
            if f.subscribers == 0 {
                f.task.abort();
                feeds.remove(&self.uid);
                tracing::info!(datasource = %self.uid, "last live subscriber left; change stream closed");
            }
        }
    }
}

impl LiveHub {
    pub fn register(&self, path: &str, uid: &str, query: Value) {
        let mut q = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.registered.fetch_add(1, Ordering::Relaxed);
        q.insert(path.to_string(), (uid.to_string(), query, stamp));
        // Bounded: forget the query registered longest ago (a panel registers again at each refresh).
        if q.len() > MAX_CHANNELS {
            if let Some(oldest) = q.iter().min_by_key(|(_, v)| v.2).map(|(k, _)| k.clone()) {
                q.remove(&oldest);
            }
        }
    }

    pub fn lookup(&self, path: &str) -> Option<(String, Value)> {
        self.queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .map(|(uid, q, _)| (uid.clone(), q.clone()))
    }

    /// Change streams opened since start (reopens after a lost stream included).
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }

    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Live channels QueryData has registered (and not yet forgotten).
    pub fn known_channels(&self) -> usize {
        self.queries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Channels streaming now (each holds its data source's feed).
    pub fn streaming_channels(&self) -> usize {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|f| f.subscribers)
            .sum()
    }

    /// Data sources with a feed open now.
    pub fn open_feeds(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn subscribe(self: &Arc<Self>, uid: &str, db: Database, collection: String) -> FeedGuard {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = feeds.entry(uid.to_string()).or_insert_with(|| {
            let (tx, _) = broadcast::channel(4096);
            let task = tokio::spawn(run_feed(
                self.clone(),
                uid.to_string(),
                db,
                collection,
                tx.clone(),
            ));
            Feed {
                tx,
                subscribers: 0,
                task,
            }
        });
        feed.subscribers += 1;
        FeedGuard {
            hub: self.clone(),
            uid: uid.to_string(),
            events: feed.tx.subscribe(),
        }
    }
}

/// Watches the collection until aborted. The driver resumes by itself after
/// resumable errors; anything else (history lost, collection dropped) ends
/// the stream: channels re-read the rollups and a new stream starts.
async fn run_feed(
    hub: Arc<LiveHub>,
    uid: String,
    db: Database,
    collection: String,
    tx: broadcast::Sender<FeedEvent>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut first = true;
    loop {
        let opened = db
            .collection::<Document>(&collection)
            .watch()
            .pipeline([
                doc! { "$match": { "operationType": { "$in": ["insert", "update", "replace"] } } },
            ])
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(Duration::from_millis(500))
            .await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(datasource = %uid, "cannot open the change stream on {collection}: {e}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        hub.streams_opened.fetch_add(1, Ordering::Relaxed);
        if !first {
            hub.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        // Whatever was written before this stream opened (while a channel read its
        // first minutes, or between a lost stream and this one) is in the rollups:
        // channels re-read them once.
        let _ = tx.send(FeedEvent::Resync);
        first = false;
        backoff = Duration::from_millis(200);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if let Some(d) = e.full_document {
                        let _ = tx.send(FeedEvent::Doc(Arc::new(d)));
                    }
                }
                Err(e) => {
                    tracing::warn!(datasource = %uid, "change stream on {collection} ended: {e}; reopening and re-reading");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
