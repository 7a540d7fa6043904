//! No Docker engine runs on our machines, so this checks that docker-compose.yml,
//! the Dockerfile, provisioning and plugin.json agree with each other and with
//! the code: the same plugin id, data-source uid, database, ports and paths.

use std::path::Path;

use mongopulse::plugin::settings::DataSourceSettings;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn plugin_json() -> Json {
    serde_json::from_str(&read("plugin.json")).expect("plugin.json is valid JSON")
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &compose["services"][name];
    assert!(!s.is_null(), "docker-compose.yml has no service {name}");
    s
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn env<'a>(svc: &'a Yaml, key: &str) -> &'a str {
    svc["environment"][key]
        .as_str()
        .unwrap_or_else(|| panic!("environment {key} missing"))
}

#[test]
fn plugin_json_declares_a_backend_alerting_streaming_datasource() {
    let p = plugin_json();
    assert_eq!(p["id"], "mongopulse-analytics-datasource");
    assert_eq!(p["type"], "datasource");
    assert_eq!(p["backend"], true);
    assert_eq!(p["alerting"], true);
    assert_eq!(p["streaming"], true);
    assert_eq!(p["executable"], "gpx_mongopulse");
    assert!(p["dependencies"]["grafanaDependency"]
        .as_str()
        .unwrap()
        .starts_with(">="));
    for logo in ["small", "large"] {
        let path = p["info"]["logos"][logo].as_str().unwrap();
        assert!(root().join(path).exists(), "logo {path} missing");
    }
    assert_eq!(
        p["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "plugin.json and Cargo.toml versions differ"
    );
}

#[test]
fn compose_stack_agrees_with_plugin_json_and_provisioning() {
    let compose = yaml("docker-compose.yml");
    let id = plugin_json()["id"].as_str().unwrap().to_string();

    // MongoDB: a replica set, initiated by the healthcheck.
    let mongodb = service(&compose, "mongodb");
    let command = strings(&mongodb["command"]).join(" ");
    assert!(command.contains("--replSet rs0"), "{command}");
    let check = strings(&mongodb["healthcheck"]["test"]).join(" ");
    assert!(check.contains("rs.initiate"), "{check}");
    assert!(strings(&mongodb["ports"]).contains(&"27017:27017".to_string()));

    // Grafana loads the plugin folder, unsigned, and our provisioning.
    let grafana = service(&compose, "grafana");
    assert!(env(grafana, "GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS")
        .split(',')
        .any(|p| p == id));
    let volumes = strings(&grafana["volumes"]);
    let plugin_mount = format!(":/var/lib/grafana/plugins/{id}");
    assert!(
        volumes.iter().any(|v| v.contains(&plugin_mount)),
        "{volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./provisioning:/etc/grafana/provisioning")),
        "{volumes:?}"
    );
    assert!(strings(&grafana["ports"]).contains(&"3000:3000".to_string()));
    assert_eq!(
        grafana["depends_on"]["plugin"]["condition"], "service_completed_successfully",
        "Grafana must start after the plugin folder is built"
    );

    // The plugin builder fills the same volume Grafana mounts.
    let plugin = service(&compose, "plugin");
    let volume_name = volumes
        .iter()
        .find(|v| v.contains(&plugin_mount))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(strings(&plugin["volumes"])
        .iter()
        .any(|v| v.starts_with(&format!("{volume_name}:"))));
    let declared = compose["volumes"].as_mapping().expect("top-level volumes");
    assert!(
        declared.contains_key(volume_name.as_str()),
        "volume {volume_name} is not declared"
    );

    // Every build target exists in the Dockerfile, and the executable is named as Grafana expects.
    let dockerfile = read("Dockerfile");
    for name in ["plugin", "mongopulsed"] {
        let target = service(&compose, name)["build"]["target"].as_str().unwrap();
        assert!(
            dockerfile.contains(&format!(" AS {target}\n")),
            "Dockerfile lacks target {target}"
        );
    }
    let exe = plugin_json()["executable"].as_str().unwrap().to_string();
    assert!(dockerfile.contains(&format!("/dist/{exe}_linux_${{TARGETARCH}}")));
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }

    // Cargo needs the file of every target in the manifest to build anything.
    let manifest = read("Cargo.toml");
    for dir in ["src", "benches"] {
        let copied = dockerfile
            .lines()
            .any(|l| l.starts_with("COPY ") && l.split_whitespace().nth(1) == Some(dir));
        let used = dir == "src" || manifest.contains("[[bench]]");
        assert!(
            !used || copied,
            "the backend stage must COPY {dir}: Cargo.toml has targets in it"
        );
    }

    // The daemon listens where compose publishes it and uses the provisioned database.
    let daemon = service(&compose, "mongopulsed");
    let listen_port = env(daemon, "MONGOPULSE__HTTP__LISTEN")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(strings(&daemon["ports"]).contains(&format!("{listen_port}:{listen_port}")));
    assert!(env(daemon, "MONGOPULSE__MONGODB__URI").contains("mongodb:27017"));

    // The daemon's demo alert rules: mounted where its environment says, and valid
    // (the daemon would not start otherwise); the compose stack configures no notifier.
    let rules_at = env(daemon, "MONGOPULSE__ALERTING__RULES_FILE");
    let mount = strings(&daemon["volumes"])
        .into_iter()
        .find(|v| v.contains(&format!(":{rules_at}")))
        .unwrap_or_else(|| panic!("nothing mounted at {rules_at}"));
    let rules_file = mount.split(':').next().unwrap().trim_start_matches("./");
    let rules = mongopulse::alerting::rules::load_file(&root().join(rules_file), &[])
        .unwrap_or_else(|e| panic!("{rules_file}: {e}"));
    assert!(!rules.is_empty(), "{rules_file} has no rule");

    // Provisioning: our type, a fixed uid, the URI Grafana's environment provides.
    let ds_file = yaml("provisioning/datasources/mongopulse.yaml");
    let ds = &ds_file["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some(id.as_str()));
    assert_eq!(ds["uid"].as_str(), Some("mongopulse"));
    let uri_ref = ds["secureJsonData"]["uri"].as_str().unwrap();
    let var = uri_ref.trim_start_matches("${").trim_end_matches('}');
    let uri = env(grafana, var);
    assert!(
        uri.contains("mongodb:27017") && uri.contains("replicaSet=rs0"),
        "{uri}"
    );
    assert_eq!(
        ds["jsonData"]["database"].as_str(),
        Some(env(daemon, "MONGOPULSE__MONGODB__DATABASE")),
        "Grafana and the daemon must use the same database"
    );

    // The provisioned settings are ones the plugin accepts.
    let json_data: Json = serde_json::to_value(&ds["jsonData"]).unwrap();
    let secure = serde_json::json!({ "uri": uri });
    DataSourceSettings::from_grafana(&json_data, &secure).expect("provisioned settings are valid");
}

/// A broker profile's three services run only with that profile, the default ones
/// always; returns its daemon's configuration (from the file mounted where
/// MONGOPULSE_CONFIG says), checked to be a second writer that leaves alerts alone.
fn broker_profile_daemon(
    profile: &str,
    [broker, daemon, loadgen]: [&str; 3],
) -> mongopulse::daemon::Config {
    let compose = yaml("docker-compose.yml");
    for name in [broker, daemon, loadgen] {
        assert_eq!(
            strings(&service(&compose, name)["profiles"]),
            vec![profile],
            "{name}"
        );
    }
    // Off by default: `docker compose up` runs without a broker.
    for name in ["mongodb", "mongopulsed", "loadgen", "grafana"] {
        assert!(
            service(&compose, name)["profiles"].is_null(),
            "{name} must run by default"
        );
    }
    let daemon = service(&compose, daemon);
    let mounted = strings(&daemon["volumes"]);
    let config_path = env(daemon, "MONGOPULSE_CONFIG");
    let file = mounted
        .iter()
        .find_map(|v| v.strip_suffix(&format!(":{config_path}:ro")))
        .expect("the source config is mounted where MONGOPULSE_CONFIG says");
    let config = mongopulse::daemon::Config::from_toml_str(&read(file.trim_start_matches("./")))
        .expect("the broker profile's daemon config is valid");
    assert_ne!(
        config.writer_id, "main",
        "each daemon needs its own writer_id"
    );
    assert!(
        !config.alerting.enabled,
        "one daemon per database evaluates alerts"
    );
    config
}

/// The value after `flag` in a service's command.
fn command_arg(service_name: &str, flag: &str) -> String {
    let compose = yaml("docker-compose.yml");
    let command = strings(&service(&compose, service_name)["command"]);
    let at = command
        .iter()
        .position(|c| c == flag)
        .unwrap_or_else(|| panic!("{service_name} has no {flag}: {command:?}"));
    command[at + 1].clone()
}

#[test]
fn the_broker_profile_wires_loadgen_nats_and_a_second_daemon_together() {
    let config = broker_profile_daemon("broker", ["nats", "mongopulsed-nats", "loadgen-nats"]);
    let [mongopulse::sources::SourceConfig::Nats(source)] = &config.ingest.sources[..] else {
        panic!("one NATS source expected: {:?}", config.ingest.sources);
    };
    assert_eq!(source.url, "nats://nats:4222");
    // loadgen publishes where the stream listens.
    let subject = command_arg("loadgen-nats", "--subject");
    assert!(
        source
            .subjects
            .iter()
            .any(|s| s.strip_suffix('>').is_some_and(|p| subject.starts_with(p))),
        "{subject} is not in the stream's subjects {:?}",
        source.subjects
    );
}

#[test]
fn the_kafka_profile_wires_loadgen_kafka_and_a_consumer_group_daemon_together() {
    let config = broker_profile_daemon("kafka", ["kafka", "mongopulsed-kafka", "loadgen-kafka"]);
    let [mongopulse::sources::SourceConfig::Kafka(source)] = &config.ingest.sources[..] else {
        panic!("one Kafka source expected: {:?}", config.ingest.sources);
    };
    // The broker advertises the address the daemon and loadgen use.
    let compose = yaml("docker-compose.yml");
    let advertised = env(service(&compose, "kafka"), "KAFKA_ADVERTISED_LISTENERS");
    assert_eq!(advertised, format!("PLAINTEXT://{}", source.brokers));
    assert_eq!(command_arg("loadgen-kafka", "--kafka"), source.brokers);
    assert_eq!(
        vec![command_arg("loadgen-kafka", "--topic")],
        source.topics,
        "loadgen publishes to the topic the daemon consumes"
    );
}

/// Grafana-managed alert rules: every query on our data source is one the
/// plugin accepts, expressions refer to existing queries, the condition exists.
#[test]
fn provisioned_grafana_alert_rules_are_consistent() {
    let file = yaml("provisioning/alerting/mongopulse-rules.yaml");
    let groups = file["groups"].as_sequence().expect("groups");
    let mut rules = 0;
    for g in groups {
        for rule in g["rules"].as_sequence().expect("rules") {
            rules += 1;
            let title = rule["title"].as_str().unwrap();
            let data = rule["data"].as_sequence().unwrap();
            let refs: Vec<&str> = data.iter().map(|d| d["refId"].as_str().unwrap()).collect();
            assert!(
                refs.contains(&rule["condition"].as_str().unwrap()),
                "{title}: condition refers to no query"
            );
            for d in data {
                let uid = d["datasourceUid"].as_str().unwrap();
                let model: Json = serde_json::to_value(&d["model"]).unwrap();
                match uid {
                    "mongopulse" => {
                        mongopulse::query::model::parse(&model)
                            .unwrap_or_else(|e| panic!("{title}: {e}"));
                        assert!(d["relativeTimeRange"]["from"].as_i64().unwrap() > 0);
                    }
                    "__expr__" => {
                        let text = model.to_string();
                        for r in refs.iter().filter(|r| {
                            text.contains(&format!("\"expression\":\"{r}\""))
                                || text.contains(&format!("${r}"))
                        }) {
                            assert!(refs.contains(r));
                        }
                        if let Some(e) = model["expression"].as_str() {
                            if model["type"] != "math" {
                                assert!(
                                    refs.contains(&e),
                                    "{title}: expression {e} refers to no query"
                                );
                            }
                        }
                    }
                    other => panic!("{title}: unexpected data source {other}"),
                }
            }
        }
    }
    assert!(rules >= 2);
}

/// The provisioned dashboards: fixed, distinct uids; every query on our data
/// source is one the plugin accepts (`tests/dashboards.rs` also runs them).
#[test]
fn provisioned_dashboard_queries_parse() {
    let dir = root().join("provisioning/dashboards/json");
    let mut uids = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards folder") {
        let path = entry.expect("entry").path();
        let name = path.display().to_string();
        let dash: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("readable"))
            .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
        let uid = dash["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no fixed uid"));
        assert!(
            !uids.contains(&uid.to_string()),
            "{name}: uid {uid} used twice"
        );
        uids.push(uid.to_string());
        let mut queries: Vec<Json> = Vec::new();
        for p in dash["panels"].as_array().unwrap() {
            queries.extend(p["targets"].as_array().unwrap().iter().cloned());
        }
        for v in dash["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                queries.push(v["query"].clone());
            }
        }
        for a in dash["annotations"]["list"].as_array().unwrap() {
            if a["datasource"]["uid"] == "mongopulse" {
                queries.push(a["target"].clone());
            }
        }
        assert!(queries.len() >= 8, "{name}");
        for q in queries {
            assert_eq!(
                q["datasource"]["uid"].as_str().unwrap_or("mongopulse"),
                "mongopulse",
                "{name}"
            );
            mongopulse::query::model::parse(&q).unwrap_or_else(|e| panic!("{name}: {q}: {e}"));
        }
    }
    uids.sort();
    assert_eq!(
        uids,
        [
            "mongopulse-operations",
            "mongopulse-overview",
            "mongopulse-realtime"
        ]
    );
    let provider = yaml("provisioning/dashboards/dashboards.yaml");
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/etc/grafana/provisioning/dashboards/json"
    );
}
