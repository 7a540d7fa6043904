//! Every provisioned dashboard, evaluated the way Grafana would: the real daemon
//! ingests demo traffic from `mongopulsed loadgen` (twelve minutes of history, then
//! live; a few malformed events; an alert rule whose notifier is down), then for each
//! dashboard in `provisioning/dashboards/json/` the test resolves the template
//! variables to their defaults (query variables run through the plugin, "All" becomes
//! every value, as Grafana's template service does), substitutes them into every
//! panel's and annotation's query as the frontend does (`pkg/src/datasource.ts`), and
//! asks the real plugin over its gRPC protocol. Each must answer without error and
//! with at least one frame holding data; builder panels are asked again with an
//! ad-hoc filter. What the plugin answered is rendered into PNG plots
//! (`tests/plots/plot_dashboards.py`, matplotlib) so a reader sees what the
//! dashboards show; `MONGOPULSE_UPDATE_PLOTS=1` also refreshes the README's copies in
//! `docs/img/`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bson::doc;
use grafana_plugin_sdk::pluginv2::subscribe_stream_response::Status;
use serde_json::{json, Value};
use support::daemon::{Daemon, API_KEY};
use support::frames::{by_ref, DecodedFrame};
use support::mongo::TestMongo;
use support::plugin_harness::{closed_port, DataSource, PluginProcess};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The provisioned dashboards, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("provisioning/dashboards/json");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    // The operations dashboard last: it reports on the queries and live channels of the others.
    out.sort_by_key(|(name, d)| (d["uid"] == "mongopulse-operations", name.clone()));
    out
}

/// Kills the loadgen when the test ends, however it ends.
struct Loadgen(Child);

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Grafana's relative times as used by the dashboards: `now`, `now-24h`, `now-15m`, `5m`.
fn relative_ms(text: &str, now_ms: i64) -> i64 {
    let t = text.trim().trim_start_matches("now");
    if t.is_empty() {
        return now_ms;
    }
    let t = t.trim_start_matches('-');
    now_ms - duration_ms(t)
}

fn duration_ms(t: &str) -> i64 {
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: i64 = t[..split]
        .parse()
        .unwrap_or_else(|_| panic!("duration {t}"));
    n * match &t[split..] {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => panic!("unit {other} in {t}"),
    }
}

/// Dashboard variables resolved to their defaults.
#[derive(Default)]
struct Vars {
    values: BTreeMap<String, Vec<String>>,
}

impl Vars {
    /// `$name`, `${name}` and `${name:json}` in `text` (Grafana's syntax); other `$…`
    /// (the backend's macros, MongoDB operators) are left alone.
    fn replace(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, format, used) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => {
                        let body = &inner[..end];
                        let (n, f) = body.split_once(':').unwrap_or((body, ""));
                        (n.to_string(), f.to_string(), end + 2)
                    }
                    None => (String::new(), String::new(), 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (after[..end].to_string(), String::new(), end)
            };
            match self.values.get(&name) {
                Some(values) => {
                    let piece = match format.as_str() {
                        "json" => serde_json::to_string(values).expect("json"),
                        "" => values.join(","),
                        other => panic!("variable format {other} is not emulated here"),
                    };
                    out.push_str(&piece);
                    rest = &after[used..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// A list value that is exactly one variable becomes all its values (`expandValues`).
    fn expand(&self, values: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        for v in values {
            let Some(s) = v.as_str() else {
                out.push(v.clone());
                continue;
            };
            let whole = s.trim().trim_start_matches('$');
            let whole = whole.trim_start_matches('{').trim_end_matches('}');
            match self.values.get(whole) {
                Some(many) if s.trim().starts_with('$') => {
                    out.extend(many.iter().map(|m| Value::String(m.clone())))
                }
                _ => out.push(Value::String(self.replace(s))),
            }
        }
        out
    }

    /// `applyTemplateVariables` of the frontend, plus its ad-hoc filter conversion.
    fn apply(&self, q: &Value, adhoc: &[(String, String, String)]) -> Value {
        let mut out = q.clone();
        let text = |v: &Value| Value::String(self.replace(v.as_str().unwrap_or_default()));
        match q["mode"].as_str().unwrap_or("builder") {
            "builder" => {
                out["eventType"] = text(&q["eventType"]);
                if q.get("alias").is_some() {
                    out["alias"] = text(&q["alias"]);
                }
                if let Some(g) = q["groupBy"].as_array() {
                    out["groupBy"] = Value::Array(self.expand(g));
                }
                let mut filters: Vec<Value> = q["filters"]
                    .as_array()
                    .map(|fs| {
                        fs.iter()
                            .map(|f| {
                                let values = self.expand(f["values"].as_array().unwrap());
                                let op = match (f["op"].as_str().unwrap(), values.len() > 1) {
                                    ("eq", true) => "in",
                                    ("neq", true) => "nin",
                                    (op, _) => op,
                                };
                                json!({ "dimension": text(&f["dimension"]), "op": op, "values": values })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for (key, operator, value) in adhoc {
                    let op = match operator.as_str() {
                        "=" => "eq",
                        "!=" => "neq",
                        other => panic!("ad-hoc operator {other} is not emulated"),
                    };
                    filters.push(json!({ "dimension": key, "op": op, "values": [value] }));
                }
                if !filters.is_empty() {
                    out["filters"] = Value::Array(filters);
                }
            }
            "pipeline" => {
                for k in ["pipeline", "collection", "timeField"] {
                    if q.get(k).is_some() {
                        out[k] = text(&q[k]);
                    }
                }
            }
            "variable" => {
                for k in ["eventType", "dimension", "prefix"] {
                    if q.get(k).is_some() {
                        out[k] = text(&q[k]);
                    }
                }
            }
            "annotations" if q.get("rule").is_some() => {
                out["rule"] = text(&q["rule"]);
            }
            _ => {}
        }
        out
    }
}

/// Grafana's interval: the range over the panel's width in points, at least the
/// panel's minimum interval, at least a second.
fn interval_ms(panel: &Value, from: i64, to: i64) -> i64 {
    let min = panel["interval"].as_str().map(duration_ms).unwrap_or(1_000);
    ((to - from) / 1_000).max(min).max(1_000)
}

/// Fields that hold times in our frames; a frame of times alone holds no data.
const TIME_FIELDS: [&str; 5] = ["time", "timeEnd", "timestamp", "at", "since"];

/// True when some frame has a value beside its times: a number, or a text
/// (variable values, annotation titles, table columns).
fn has_data(frames: &[DecodedFrame]) -> bool {
    frames.iter().any(|f| {
        f.fields
            .iter()
            .filter(|field| !TIME_FIELDS.contains(&field.name.as_str()))
            .any(|field| {
                field
                    .values
                    .iter()
                    .any(|v| v.is_number() || v.as_str().is_some_and(|s| !s.is_empty()))
            })
    })
}

/// A frame as plain JSON, for the plotting script (values as the reader decoded them).
fn frame_json(f: &DecodedFrame) -> Value {
    json!({
        "name": f.name,
        "fields": f.fields.iter().map(|field| json!({
            "name": field.name,
            "labels": field.labels,
            "values": field.values,
        })).collect::<Vec<_>>(),
    })
}

struct Context<'a> {
    plugin: &'a PluginProcess,
    ds: &'a DataSource,
    now_ms: i64,
}

impl Context<'_> {
    /// One query through the plugin; panics naming `what` unless it answered with data.
    async fn data(
        &self,
        what: &str,
        q: &Value,
        from: i64,
        to: i64,
        interval: i64,
    ) -> Vec<DecodedFrame> {
        let ref_id = q["refId"].as_str().unwrap_or("A").to_string();
        let response = self
            .plugin
            .query(self.ds, &[(&ref_id, q.clone(), from, to, interval)], &[])
            .await;
        let mut answers = by_ref(response);
        let frames = answers
            .remove(&ref_id)
            .unwrap_or_else(|| panic!("{what}: no answer for refId {ref_id}"))
            .unwrap_or_else(|e| panic!("{what}: the plugin answered an error: {e}\nquery: {q}"));
        assert!(
            has_data(&frames),
            "{what}: no frame holds data on the demo traffic\nquery: {q}\nframes: {frames:?}"
        );
        frames
    }

    /// Resolves the dashboard's variables, in order (later ones may use earlier ones).
    async fn variables(&self, title: &str, dash: &Value) -> (Vars, Vec<(String, String, String)>) {
        let mut vars = Vars::default();
        let mut adhoc = Vec::new();
        let from = relative_ms(dash["time"]["from"].as_str().unwrap(), self.now_ms);
        let to = relative_ms(dash["time"]["to"].as_str().unwrap(), self.now_ms);
        for v in dash["templating"]["list"]
            .as_array()
            .expect("templating.list")
        {
            let name = v["name"].as_str().expect("variable name").to_string();
            match v["type"].as_str() {
                Some("query") => {
                    let q = vars.apply(&v["query"], &[]);
                    let frames = self
                        .data(&format!("{title}: variable {name}"), &q, from, to, 60_000)
                        .await;
                    let options: Vec<String> = frames[0]
                        .field("value")
                        .values
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect();
                    assert!(
                        !options.is_empty(),
                        "{title}: variable {name} has no values"
                    );
                    let current = &v["current"]["value"];
                    let chosen: Vec<String> = match current {
                        Value::Array(a) if a.iter().any(|x| x == "$__all") => options.clone(),
                        Value::Array(a) => {
                            a.iter().map(|x| x.as_str().unwrap().to_string()).collect()
                        }
                        Value::String(s) if s == "$__all" => options.clone(),
                        Value::String(s) => vec![s.clone()],
                        other => panic!("{title}: variable {name} has no default ({other})"),
                    };
                    for c in &chosen {
                        assert!(
                            options.contains(c),
                            "{title}: {name} default {c} is not among {options:?}"
                        );
                    }
                    vars.values.insert(name, chosen);
                }
                Some("adhoc") => {
                    assert_eq!(
                        v["datasource"]["uid"], "mongopulse",
                        "{title}: ad-hoc filters on our data source"
                    );
                    for f in v["filters"].as_array().into_iter().flatten() {
                        adhoc.push((
                            f["key"].as_str().unwrap().to_string(),
                            f["operator"].as_str().unwrap().to_string(),
                            f["value"].as_str().unwrap().to_string(),
                        ));
                    }
                }
                other => panic!("{title}: variable {name} of type {other:?} is not emulated"),
            }
        }
        (vars, adhoc)
    }
}

/// Count over all frames' numeric fields (for comparing a query with and without a filter).
fn total(frames: &[DecodedFrame]) -> f64 {
    frames
        .iter()
        .flat_map(|f| f.fields.iter())
        .flat_map(|field| field.values.iter())
        .filter_map(Value::as_f64)
        // Leaves out time values should a reader give them as epoch numbers.
        .filter(|v| *v < 1e11)
        .sum()
}

fn write_config(dir: &Path, hook_port: u16) -> PathBuf {
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        r#"
rules:
  # Fires on any traffic, so the demo has alert history; its notifier is down,
  # so the operations dashboard has notification failures to show.
  - id: page-views-flowing
    name: Page views flowing
    eventType: page_view
    measure: { type: count }
    window: 1m
    condition: { type: above, threshold: 0 }
    severity: info
    annotations: { summary: "{{value}} page views in the last minute" }
    notifiers: [ops-hook]
"#,
    )
    .expect("rules file");
    let config = dir.join("mongopulse.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[stats]
interval_secs = 1

[rollups]
# Long enough that the loadgen's twelve minutes of history are not late.
allowed_lateness_secs = 5
idle_finalize_secs = 86400
flush_interval_ms = 200

[alerting]
rules_file = "{}"

[alerting.retry]
attempts = 1
timeout_ms = 1000

[[alerting.notifiers]]
type = "webhook"
name = "ops-hook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "demo-secret"
"#,
            rules.display()
        ),
    )
    .expect("config file");
    config
}

/// Waits until the daemon has written what every panel needs.
async fn wait_for_demo_data(mongo: &TestMongo, daemon: &Daemon) {
    let db = mongo.db();
    let conditions: [(&str, &str, bson::Document); 5] = [
        ("a final minute", "metrics_minutely", doc! { "final": true }),
        (
            "stats with a final materialization lag",
            "pipeline_stats",
            doc! { "materializationLagSeconds": { "$ne": null }, "partialLagSeconds": { "$ne": null } },
        ),
        (
            "stats with rejections by reason",
            "pipeline_stats",
            doc! { "rejectedByReason.count": { "$gt": 0 } },
        ),
        ("a firing alert", "alerts", doc! { "state": "firing" }),
        (
            "a failed notification",
            "alerts",
            doc! { "notifications.ok": false },
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(180);
    for (what, collection, filter) in conditions {
        loop {
            let n = db
                .collection::<bson::Document>(collection)
                .count_documents(filter.clone())
                .await
                .unwrap_or(0);
            if n > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {collection}; daemon log:\n{}",
                daemon.stderr()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Enough history for the time series: every minute of the loadgen's history is final.
    loop {
        let finals = db
            .collection::<bson::Document>("metrics_minutely")
            .distinct("timestamp", doc! { "final": true })
            .await
            .map(|d| d.len())
            .unwrap_or(0);
        let stats = db
            .collection::<bson::Document>("pipeline_stats")
            .count_documents(doc! {})
            .await
            .unwrap_or(0);
        if finals >= 10 && stats >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {finals} final minutes and {stats} stats documents; daemon log:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn python() -> PathBuf {
    std::env::var_os("MONGOPULSE_STANDIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/standin-venv/bin/python"))
}

#[tokio::test]
async fn every_provisioned_dashboard_gets_data_from_the_plugin_for_every_panel() {
    let mongo = TestMongo::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), closed_port());
    let daemon = Daemon::start(&mongo, &[("MONGOPULSE_CONFIG", config.to_str().unwrap())]).await;
    let loadgen = Loadgen(
        Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
            .args(["loadgen", "--url", &daemon.base_url, "--rate", "4"])
            .args(["--history-minutes", "12", "--invalid-fraction", "0.02"])
            .env("MONGOPULSE_LOADGEN_KEY", API_KEY)
            .stdout(support::capture::stdio("loadgen-stdout"))
            .stderr(support::capture::stdio("loadgen"))
            .spawn()
            .expect("start mongopulsed loadgen"),
    );
    let waited = Instant::now();
    wait_for_demo_data(&mongo, &daemon).await;
    eprintln!("demo data ready after {:?}", waited.elapsed());
    // Stopped before the queries: the stand-in serves one request at a time, and the
    // daemon's writes of a live minute would only slow the panels' reads.
    drop(loadgen);

    let plugin = PluginProcess::start().await;
    let mut ds = DataSource::new(&mongo.uri, &mongo.db_name);
    ds.uid = "mongopulse".into();
    let cx = Context {
        plugin: &plugin,
        ds: &ds,
        now_ms: chrono::Utc::now().timestamp_millis(),
    };

    let dashboards = dashboards();
    let uids: Vec<&str> = dashboards
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap())
        .collect();
    for uid in [
        "mongopulse-overview",
        "mongopulse-realtime",
        "mongopulse-operations",
    ] {
        assert!(uids.contains(&uid), "no dashboard {uid} in {uids:?}");
    }
    let started = Instant::now();
    let mut dump = Vec::new();
    let mut streams = Vec::new();
    let mut panels_seen = 0;
    for (file, dash) in &dashboards {
        let title = dash["title"].as_str().unwrap_or(file).to_string();
        let (vars, adhoc) = cx.variables(&title, dash).await;
        for name in ["eventType", "country", "device"] {
            assert!(
                vars.values.contains_key(name),
                "{title}: template variable {name} missing"
            );
        }
        assert!(
            dash["templating"]["list"]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v["type"] == "adhoc")),
            "{title}: no ad-hoc filter variable"
        );
        let dash_from = relative_ms(dash["time"]["from"].as_str().unwrap(), cx.now_ms);
        let dash_to = relative_ms(dash["time"]["to"].as_str().unwrap(), cx.now_ms);

        let mut panels_out = Vec::new();
        for panel in dash["panels"].as_array().expect("panels") {
            let ptitle = vars.replace(panel["title"].as_str().unwrap_or("?"));
            let (from, to) = match panel["timeFrom"].as_str() {
                Some(t) => (cx.now_ms - duration_ms(t), cx.now_ms),
                None => (dash_from, dash_to),
            };
            let interval = interval_ms(panel, from, to);
            let targets = panel["targets"].as_array().expect("a panel with queries");
            assert!(!targets.is_empty(), "{title} / {ptitle}: no query");
            let mut frames_out = Vec::new();
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "mongopulse", "{title} / {ptitle}");
                let q = vars.apply(t, &adhoc);
                let what = format!("{title} / {ptitle}");
                let frames = cx.data(&what, &q, from, to, interval).await;
                frames_out.extend(frames.iter().map(frame_json));

                // A live panel names its channel; Grafana then subscribes and streams it
                // while the dashboard is open. So does this test, until it ends.
                if q["live"] == true {
                    let channel = frames[0].meta["channel"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: a live panel's frame names no channel"));
                    let path = channel
                        .strip_prefix(&format!("ds/{}/", ds.uid))
                        .unwrap_or_else(|| {
                            panic!("{what}: channel {channel} is not this data source's")
                        })
                        .to_string();
                    let status = plugin.subscribe(&ds, &path, &q).await;
                    assert_eq!(status, Ok(Status::Ok), "{what}: subscribing to {path}");
                    let mut stream = plugin.run_stream(&ds, &path, &q).await;
                    let first = stream.message().await.expect("stream packet");
                    assert!(
                        first.is_some(),
                        "{what}: the live channel sent no initial frame"
                    );
                    streams.push(stream);
                }

                // Ad-hoc filters reach builder queries (the frontend appends them as filters).
                if q["mode"].as_str().unwrap_or("builder") == "builder" {
                    let filter = [("browser".to_string(), "=".to_string(), "Chrome".to_string())];
                    let filtered = vars.apply(t, &filter);
                    let narrowed = cx
                        .data(
                            &format!("{what} (ad-hoc browser = Chrome)"),
                            &filtered,
                            from,
                            to,
                            interval,
                        )
                        .await;
                    let counts = q["measures"]
                        .as_array()
                        .is_some_and(|m| m.iter().all(|m| m["type"] == "count"));
                    if counts {
                        let (all, some) = (total(&frames), total(&narrowed));
                        assert!(
                            some > 0.0 && some < all,
                            "{what}: the ad-hoc filter should keep some events but not all ({some} of {all})"
                        );
                    }
                }
            }
            panels_seen += 1;
            panels_out.push(json!({
                "title": ptitle,
                "type": panel["type"],
                "gridPos": panel["gridPos"],
                "options": panel["options"],
                "fieldConfig": panel["fieldConfig"],
                "transformations": panel["transformations"],
                "frames": frames_out,
            }));
        }

        // Alert history as annotations, on our data source.
        let mut annotations = 0;
        for a in dash["annotations"]["list"]
            .as_array()
            .expect("annotations.list")
        {
            if a["datasource"]["uid"] != "mongopulse" {
                continue;
            }
            let q = vars.apply(&a["target"], &[]);
            let frames = cx
                .data(
                    &format!("{title}: annotation {}", a["name"]),
                    &q,
                    dash_from,
                    dash_to,
                    60_000,
                )
                .await;
            assert!(
                frames[0]
                    .field("title")
                    .values
                    .iter()
                    .any(|t| t.as_str().is_some_and(|t| t.contains("firing"))),
                "{title}: the alert annotation shows no firing alert: {frames:?}"
            );
            annotations += 1;
        }
        assert!(
            annotations >= 1,
            "{title}: no alert annotations on the Mongo Pulse data source"
        );

        dump.push(json!({ "uid": dash["uid"], "title": title, "panels": panels_out }));
        eprintln!("{title}: evaluated at {:?}", started.elapsed());
    }
    assert!(panels_seen >= 30, "only {panels_seen} panels evaluated");

    // The plugin's own figures moved: the panels above went through its cache.
    let own = cx
        .data(
            "plugin figures",
            &json!({"refId": "P", "mode": "plugin"}),
            cx.now_ms - 60_000,
            cx.now_ms,
            1_000,
        )
        .await;
    let figure = |name: &str| own[0].field(name).values[0].as_f64().unwrap_or(0.0);
    let ok = figure("queriesOk");
    assert!(
        ok >= panels_seen as f64,
        "queriesOk {ok} after {panels_seen} panels"
    );
    assert!(
        figure("cacheFullReads") > 0.0,
        "no builder query went through the cache"
    );
    assert!(
        figure("liveStreamingChannels") >= streams.len() as f64 && !streams.is_empty(),
        "{} live panels stream, the plugin counts {}",
        streams.len(),
        figure("liveStreamingChannels")
    );
    assert_eq!(
        figure("changeStreamsOpen"),
        1.0,
        "one change stream for the data source"
    );

    render_plots(&dump);
    drop(streams);
}

/// Renders every dashboard's panel data to `<target>/dashboard-plots/<uid>.png`.
fn render_plots(dump: &[Value]) {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-plots");
    std::fs::create_dir_all(&out_dir).expect("plot dir");
    let data = out_dir.join("panels.json");
    std::fs::write(&data, serde_json::to_vec_pretty(dump).expect("json")).expect("panel data");
    let python = python();
    let status = Command::new(&python)
        .arg(root().join("tests/plots/plot_dashboards.py"))
        .arg(&data)
        .arg(&out_dir)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/test.sh, which installs matplotlib (tests/plots/requirements.txt) into target/standin-venv",
                python.display()
            )
        });
    assert!(
        status.success(),
        "tests/plots/plot_dashboards.py failed ({status})"
    );
    let update = std::env::var("MONGOPULSE_UPDATE_PLOTS").is_ok_and(|v| v == "1");
    let mut written = HashMap::new();
    for d in dump {
        let uid = d["uid"].as_str().unwrap();
        let png = out_dir.join(format!("{uid}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
        assert!(
            bytes.len() > 20_000,
            "{} is suspiciously small",
            png.display()
        );
        if update {
            let dest = root().join(format!("docs/img/dashboard-{uid}.png"));
            std::fs::copy(&png, &dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
        }
        written.insert(uid.to_string(), png);
    }
    eprintln!("dashboard plots: {written:?}");
}
