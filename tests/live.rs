//! Live panels through the Grafana plugin protocol: the daemon writes partial
//! minutes every flush, the plugin's change stream feeds the channels.

mod support;

use std::time::{Duration, Instant};

use bson::{doc, Document};
use chrono::Utc;
use grafana_plugin_sdk::pluginv2::subscribe_stream_response::Status;
use serde_json::{json, Value};
use support::daemon::{Daemon, API_KEY};
use support::frames::{by_ref, decode_json, instant, DecodedFrame, FieldType};
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};

const ENV: [(&str, &str); 2] = [
    ("MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS", "200"),
    ("MONGOPULSE__INGEST__WRITER__MAX_BATCH_DELAY_MS", "5"),
];

struct Live {
    mongo: TestMongo,
    daemon: Daemon,
    plugin: PluginProcess,
    ds: DataSource,
    minute: i64,
}

async fn live() -> Live {
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(&mongo, &ENV).await;
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);
    let now = Utc::now().timestamp_millis();
    let l = Live {
        mongo,
        daemon,
        plugin,
        ds,
        minute: now - now.rem_euclid(60_000),
    };
    // Some traffic first, so the event type is known.
    l.post("FR", 5).await;
    l.post("DE", 2).await;
    l.wait_for_minute_docs(2).await;
    l
}

impl Live {
    /// The same query not live: QueryData over the test's last ten minutes.
    async fn panel(&self, q: &Value) -> Result<Vec<DecodedFrame>, String> {
        let r = self
            .plugin
            .query(
                &self.ds,
                &[(
                    "A",
                    q.clone(),
                    self.minute - 600_000,
                    self.minute + 60_000,
                    60_000,
                )],
                &[],
            )
            .await;
        by_ref(r).remove("A").expect("an answer for refId A")
    }

    /// Events stamped inside the test's minute, whatever the clock says now.
    async fn post(&self, country: &str, n: usize) {
        let batch: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "timestamp": self.minute + 1_000 + i as i64,
                    "metadata": { "eventType": "page_view", "dimensions": { "country": country, "userId": format!("u{i}"), "deviceType": "mobile", "browser": "Chrome" } },
                    "metrics": { "pageLoadTime": 300 }
                })
            })
            .collect();
        let r = self
            .daemon
            .http
            .post(self.daemon.url("/v1/events"))
            .bearer_auth(API_KEY)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn wait_for_minute_docs(&self, n: u64) {
        let deadline = Instant::now() + support::PATIENCE;
        while self
            .mongo
            .db()
            .collection::<Document>("metrics_minutely")
            .count_documents(doc! {})
            .await
            .unwrap()
            < n
        {
            assert!(Instant::now() < deadline, "no partial minute written");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn query(filter_country: Option<&str>) -> Value {
    let mut q = json!({ "refId": "A", "eventType": "page_view", "measures": [{"type": "count"}], "groupBy": ["country"], "live": true });
    if let Some(c) = filter_country {
        q["filters"] = json!([{ "dimension": "country", "op": "eq", "values": [c] }]);
    }
    q
}

/// (country → value at `minute`) of one JSON frame packet, read as Grafana
/// Live's consumers read it.
fn counts_at(packet: &[u8], minute: i64) -> Vec<(String, f64)> {
    let f =
        decode_json(packet).unwrap_or_else(|e| panic!("Grafana cannot read the live frame: {e}"));
    let Some(time) = f.fields.iter().find(|x| x.kind == FieldType::Time) else {
        return Vec::new();
    };
    let Some(row) = time.times().iter().position(|t| *t == instant(minute)) else {
        return Vec::new();
    };
    f.fields
        .iter()
        .filter(|field| field.kind == FieldType::Number)
        .filter_map(|field| {
            Some((
                field.labels.get("country")?.clone(),
                field.values[row].as_f64()?,
            ))
        })
        .collect()
}

async fn next_count(
    stream: &mut tonic::Streaming<grafana_plugin_sdk::pluginv2::StreamPacket>,
    minute: i64,
    country: &str,
    want: f64,
) -> Vec<Vec<(String, f64)>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, stream.message()).await else {
            panic!("no frame with {country}={want}; saw {seen:?}");
        };
        let packet = next.expect("stream open").expect("a packet");
        let counts = counts_at(&packet.data, minute);
        seen.push(counts.clone());
        if counts.iter().any(|(c, v)| c == country && *v == want) {
            return seen;
        }
    }
}

#[tokio::test]
async fn initial_frame_then_a_frame_with_the_new_events() {
    let l = live().await;
    let q = query(None);
    // QueryData names the channel in the frame meta.
    let frames = l.panel(&q).await.unwrap();
    let channel = frames[0].meta["channel"]
        .as_str()
        .expect("a channel in the meta")
        .to_string();
    assert!(channel.starts_with("ds/mongopulse-test/live/"), "{channel}");
    let path = channel
        .trim_start_matches("ds/mongopulse-test/")
        .to_string();

    assert_eq!(l.plugin.subscribe(&l.ds, &path, &q).await, Ok(Status::Ok));
    let mut stream = l.plugin.run_stream(&l.ds, &path, &q).await;
    let first = stream.message().await.unwrap().unwrap();
    // Read as Grafana Live reads it, it spans the channel's last 15 minutes
    // (the data source's default), ending with the minute that is open now,
    // and holds the test's minute as an instant, not a 1970 one.
    let frame = decode_json(&first.data).expect("a frame Grafana Live can read");
    let times = frame.times();
    let (oldest, newest) = (times[0], times[times.len() - 1]);
    assert_eq!(newest - oldest, chrono::Duration::minutes(14), "{times:?}");
    assert!(
        newest >= instant(l.minute) && newest <= instant(l.minute + 60_000),
        "{times:?}"
    );
    assert!(times.contains(&instant(l.minute)), "{times:?}");
    let initial = counts_at(&first.data, l.minute);
    assert!(initial.contains(&("FR".to_string(), 5.0)), "{initial:?}");
    assert!(initial.contains(&("DE".to_string(), 2.0)), "{initial:?}");

    l.post("FR", 3).await;
    next_count(&mut stream, l.minute, "FR", 8.0).await;
}

#[tokio::test]
async fn channels_get_only_their_series_and_share_one_change_stream() {
    let l = live().await;
    let (fr, de) = (query(Some("FR")), query(Some("DE")));
    let (pf, pd) = (
        mongopulse::live::channel_path(&fr),
        mongopulse::live::channel_path(&de),
    );
    let mut a = l.plugin.run_stream(&l.ds, &pf, &fr).await;
    let mut b = l.plugin.run_stream(&l.ds, &pd, &de).await;
    let mut more = Vec::new();
    for _ in 0..8 {
        more.push(l.plugin.run_stream(&l.ds, &pf, &fr).await);
    }
    l.post("FR", 4).await;
    l.post("DE", 6).await;
    let seen_a = next_count(&mut a, l.minute, "FR", 9.0).await;
    let seen_b = next_count(&mut b, l.minute, "DE", 8.0).await;
    assert!(
        seen_a.iter().flatten().all(|(c, _)| c == "FR"),
        "{seen_a:?}"
    );
    assert!(
        seen_b.iter().flatten().all(|(c, _)| c == "DE"),
        "{seen_b:?}"
    );
    // Ten subscribers, one data source: one change stream. A stream the driver gives up
    // on is reopened by the same feed and counted as a resync (on a starved machine a
    // server that answers no heartbeat within the connect timeout is dropped by the
    // driver, and the stream with it; tests/standin/README.md), so the streams the
    // data source started are those opened minus those reopened: exactly one.
    let metrics = l.plugin.metrics(&l.ds).await;
    let counter = |name: &str| -> u64 {
        support::prom::value(&metrics, name).unwrap_or_else(|| panic!("no {name} in {metrics}"))
            as u64
    };
    let opened = counter("mongopulse_plugin_live_change_streams_opened_total");
    let reopened = counter("mongopulse_plugin_live_resyncs_total");
    assert_eq!(opened - reopened, 1, "{metrics}\n{}", l.plugin.stderr());
    assert!(
        metrics.contains("mongopulse_plugin_live_open_feeds 1\n"),
        "{metrics}"
    );
    // The last one to leave closes it.
    drop((a, b, more));
    let deadline = Instant::now() + support::PATIENCE;
    while !l
        .plugin
        .metrics(&l.ds)
        .await
        .contains("mongopulse_plugin_live_open_feeds 0\n")
    {
        assert!(Instant::now() < deadline, "the change stream stayed open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lost_change_stream_loses_and_duplicates_nothing() {
    let l = live().await;
    let q = query(None);
    let path = mongopulse::live::channel_path(&q);
    let mut stream = l.plugin.run_stream(&l.ds, &path, &q).await;
    stream.message().await.unwrap().unwrap();
    let admin = l.mongo.client().await.database("admin");
    for (error_code, labels) in [(286, vec![]), (91, vec!["ResumableChangeStreamError"])] {
        // The plugin's next getMore fails: history lost (286), then a resumable shutdown (91).
        let set = admin
            .run_command(doc! {
                "configureFailPoint": "failCommand",
                "mode": { "times": 1 },
                "data": { "failCommands": ["getMore"], "errorCode": error_code, "errorLabels": labels, "appName": "mongopulse-grafana" },
            })
            .await;
        if let Err(e) = set {
            eprintln!("skipped: this server does not take fail points ({e}); start it with --setParameter enableTestCommands=1");
            return;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    l.post("FR", 3).await;
    let seen = next_count(&mut stream, l.minute, "FR", 8.0).await;
    assert!(
        seen.iter().flatten().all(|(c, v)| c != "FR" || *v <= 8.0),
        "never more than the events sent: {seen:?}"
    );
    let metrics = l.plugin.metrics(&l.ds).await;
    let resyncs = support::prom::value(&metrics, "mongopulse_plugin_live_resyncs_total")
        .unwrap_or(0.0) as u64;
    assert!(
        resyncs >= 1,
        "the lost history made the channels re-read the rollups: {metrics}"
    );
}

#[tokio::test]
async fn unknown_event_type_is_not_found_and_bad_measure_is_explained() {
    let l = live().await;
    let unknown = json!({ "eventType": "no_such_event", "live": true });
    assert_eq!(
        l.plugin
            .subscribe(&l.ds, &mongopulse::live::channel_path(&unknown), &unknown)
            .await,
        Ok(Status::NotFound)
    );
    let bad = json!({ "eventType": "page_view", "measures": [{"type": "percentile", "metric": "nope", "percentile": 95}], "live": true });
    let e = l
        .plugin
        .subscribe(&l.ds, &mongopulse::live::channel_path(&bad), &bad)
        .await
        .unwrap_err();
    assert!(e.contains("no percentile sketch of 'nope'"), "{e}");
}

/// Issue 13: an ad-hoc filter means the same on a live panel as on the same
/// panel not live — a regex is a regex (not a prefix of its literal start) —
/// both for the first frame and for the changes the change stream brings.
#[tokio::test]
async fn adhoc_filters_give_the_same_series_live_and_not_live() {
    let l = live().await;
    l.post("FI", 3).await;
    l.post("US", 4).await;
    l.wait_for_minute_docs(4).await;
    let cases = [
        ("=~", "^D|US$"),
        ("!~", "^D|US$"),
        ("=", "FR"),
        ("!=", "FR"),
    ];
    let query_for = |operator: &str, value: &str| {
        let mut q = query(None);
        q["adhocFilters"] = json!([{ "key": "country", "operator": operator, "value": value }]);
        q
    };
    let mut streams = Vec::new();
    for (operator, value) in cases {
        let q = query_for(operator, value);
        let path = mongopulse::live::channel_path(&q);
        assert_eq!(l.plugin.subscribe(&l.ds, &path, &q).await, Ok(Status::Ok));
        let mut stream = l.plugin.run_stream(&l.ds, &path, &q).await;
        stream.message().await.unwrap().unwrap();
        streams.push(stream);
    }
    // Changes the channels learn of through the change stream only.
    for (country, n) in [("US", 2), ("DE", 1), ("FR", 1), ("FI", 1)] {
        l.post(country, n).await;
    }
    let totals = [("DE", 3.0), ("FI", 4.0), ("FR", 6.0), ("US", 6.0)];
    for ((operator, value), stream) in cases.into_iter().zip(&mut streams) {
        let q = query_for(operator, value);
        // Not live: QueryData's series at the test's minute once the daemon has
        // written the new events, read as Grafana reads them.
        let deadline = Instant::now() + support::PATIENCE;
        let panel = loop {
            let mut panel: Vec<(String, f64)> = l
                .panel(&q)
                .await
                .unwrap_or_else(|e| panic!("{operator} {value}: {e}"))
                .iter()
                .filter_map(|f| {
                    let v = f.value_field();
                    let row = f.times().iter().position(|t| *t == instant(l.minute))?;
                    Some((v.labels.get("country")?.clone(), v.values[row].as_f64()?))
                })
                .collect();
            panel.sort_by(|a, b| a.0.cmp(&b.0));
            if panel
                .iter()
                .all(|(c, n)| totals.contains(&(c.as_str(), *n)))
                && !panel.is_empty()
            {
                break panel;
            }
            assert!(
                Instant::now() < deadline,
                "{operator} {value}: not written: {panel:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Live: frames until the channel shows the same series.
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(next) = tokio::time::timeout(left, stream.message()).await else {
                panic!("{operator} {value}: live never showed {panel:?}; saw {seen:?}")
            };
            let packet = next.unwrap().unwrap();
            let mut live = counts_at(&packet.data, l.minute);
            live.sort_by(|a, b| a.0.cmp(&b.0));
            if live == panel {
                break;
            }
            seen.push(live);
        }
    }
}
