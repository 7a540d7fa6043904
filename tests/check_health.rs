//! CheckHealth through the Grafana plugin protocol, against the MongoDB stand-in
//! (or the server in MONGODB_URI).

mod support;

use std::time::{Duration, Instant};

use grafana_plugin_sdk::pluginv2::check_health_response::HealthStatus;
use serde_json::Value;
use support::mongo::TestMongo;
use support::plugin_harness::{closed_port, DataSource, PluginProcess};

fn details(r: &grafana_plugin_sdk::pluginv2::CheckHealthResponse) -> Value {
    serde_json::from_slice(&r.json_details).expect("details are JSON")
}

#[tokio::test]
async fn healthy_server_reports_version_replica_set_and_collections() {
    let mongo = TestMongo::start().await;
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);

    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Ok, "{}", r.message);
    let d = details(&r);
    assert!(
        d["serverVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{d}"
    );
    assert_eq!(d["changeStreams"], true, "{d}");
    assert!(d["replicaSet"].is_string(), "{d}");
    assert_eq!(d["database"], mongo.db_name.as_str());
    assert_eq!(
        d["rollupCollections"]["missing"],
        serde_json::json!([
            "metrics_minutely",
            "metrics_hourly",
            "metrics_daily",
            "metrics_monthly"
        ]),
    );
    assert!(r.message.contains("no metrics_minutely"), "{}", r.message);

    // Once the daemon has created a rollup collection, the check sees it.
    mongo
        .db()
        .create_collection("metrics_minutely")
        .await
        .unwrap();
    let r = plugin.check_health(&ds).await;
    let d = details(&r);
    assert_eq!(
        d["rollupCollections"]["present"],
        serde_json::json!(["metrics_minutely"])
    );
    assert!(r.message.contains("has metrics_minutely"), "{}", r.message);
}

#[tokio::test]
async fn closed_port_fails_naming_the_host_within_the_timeout() {
    let port = closed_port();
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(
        &format!("mongodb://alice:Pa55wordXyz@127.0.0.1:{port}/?authSource=admin"),
        "analytics",
    )
    .with_json("connectTimeoutSeconds", 2.into());

    let started = Instant::now();
    let r = plugin.check_health(&ds).await;
    let took = started.elapsed();
    assert_eq!(r.status(), HealthStatus::Error);
    assert!(
        r.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.message
    );
    // Usually the driver's reason ("connection refused"); on a starved machine the
    // overall bound may come first, which also names the host.
    assert!(
        r.message.contains("Could not reach MongoDB")
            || r.message.contains("did not answer within"),
        "{}",
        r.message
    );
    // A bound, not a benchmark: the driver's own default would wait 30 s.
    assert!(took < Duration::from_secs(2 + 8), "took {took:?}");
    assert!(!r.message.contains("Pa55wordXyz"));
    assert!(!plugin.stderr().contains("Pa55wordXyz"));
}

#[tokio::test]
async fn malformed_uri_gets_a_syntax_message() {
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new("mongodb://::bad", "analytics");
    let started = Instant::now();
    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Error);
    assert!(
        r.message.contains("connection URI is not valid"),
        "{}",
        r.message
    );
    assert!(started.elapsed() < Duration::from_secs(5 + 8));
}

#[tokio::test]
async fn missing_uri_says_where_to_enter_it() {
    let plugin = PluginProcess::start().await;
    let mut ds = DataSource::new("unused", "analytics");
    ds.secure_json_data.clear();
    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Error);
    assert!(r.message.contains("Connection URI"), "{}", r.message);
}

#[tokio::test]
async fn rejected_credentials_never_leak_the_password_even_at_trace_level() {
    let mongo = TestMongo::start().await;
    let plugin = PluginProcess::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_gpx_mongopulse")),
        &[("RUST_LOG", "trace")],
    )
    .await;
    // Credentials the server does not know: the stand-in has no users at all,
    // a real server has no user by this name.
    let uri = with_credentials(&mongo.uri, "nobody_here", "Sup3rS3cretPw");
    let ds = DataSource::new(&uri, &mongo.db_name).with_json("connectTimeoutSeconds", 3.into());
    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Error, "{}", r.message);
    assert!(
        r.message.contains("rejected the credentials"),
        "{}",
        r.message
    );
    assert!(r.message.contains("nobody_here"), "{}", r.message);
    assert!(!r.message.contains("Sup3rS3cretPw"), "{}", r.message);
    assert!(!String::from_utf8_lossy(&r.json_details).contains("Sup3rS3cretPw"));
    assert!(
        !plugin.stderr().contains("Sup3rS3cretPw"),
        "{}",
        plugin.stderr()
    );
}

#[tokio::test]
async fn one_client_per_data_source_rebuilt_when_settings_change() {
    let mongo = TestMongo::start().await;
    let plugin = PluginProcess::start().await;
    let mut ds = DataSource::new(&mongo.uri, &mongo.db_name);
    for _ in 0..3 {
        assert_eq!(plugin.check_health(&ds).await.status(), HealthStatus::Ok);
    }
    assert!(plugin
        .metrics(&ds)
        .await
        .contains("mongopulse_plugin_clients_built_total 1\n"));

    ds.updated_ms += 1000;
    assert_eq!(plugin.check_health(&ds).await.status(), HealthStatus::Ok);
    assert!(plugin
        .metrics(&ds)
        .await
        .contains("mongopulse_plugin_clients_built_total 2\n"));

    // A second data source gets its own client.
    let mut other = ds.clone();
    other.uid = "another".into();
    assert_eq!(plugin.check_health(&other).await.status(), HealthStatus::Ok);
    assert!(plugin
        .metrics(&ds)
        .await
        .contains("mongopulse_plugin_clients_built_total 3\n"));
}

/// Puts `user:password@` into a `mongodb://host...` URI.
fn with_credentials(uri: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = uri.split_once("://").expect("URI has a scheme");
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let sep = if rest.contains('?') { '&' } else { '?' };
    let base = if rest.contains('/') {
        rest.to_string()
    } else {
        format!("{rest}/")
    };
    format!("{scheme}://{user}:{password}@{base}{sep}authSource=admin")
}
