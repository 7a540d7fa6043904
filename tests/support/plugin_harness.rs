//! Talks to `gpx_mongopulse` the way Grafana does: spawn the executable, read
//! the go-plugin handshake from its stdout, then call its gRPC services with
//! data-source instance settings shaped like Grafana's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use grafana_plugin_sdk::pluginv2;
use pluginv2::data_client::DataClient;
use pluginv2::diagnostics_client::DiagnosticsClient;
use pluginv2::resource_client::ResourceClient;
use pluginv2::stream_client::StreamClient;
use serde_json::Value;
use tonic::transport::Channel;

pub const PLUGIN_ID: &str = "mongopulse-analytics-datasource";

/// A running plugin process; killed when dropped.
pub struct PluginProcess {
    child: Child,
    pub address: String,
    channel: Channel,
    stderr: Arc<Mutex<String>>,
}

impl PluginProcess {
    /// Starts the binary cargo built for this test run.
    pub async fn start() -> PluginProcess {
        Self::start_with(Path::new(env!("CARGO_BIN_EXE_gpx_mongopulse")), &[]).await
    }

    /// Starts `executable` with extra environment variables, as Grafana would.
    pub async fn start_with(executable: &Path, env: &[(&str, &str)]) -> PluginProcess {
        let mut child = Command::new(executable)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", executable.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut kept = super::capture::Sink::new("gpx_mongopulse");
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.write(&buf[..n]);
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Anything after the handshake would break Grafana; keep it for asserts.
            let mut kept = super::capture::Sink::new("gpx_mongopulse-stdout");
            for line in lines.map_while(Result::ok) {
                kept.write(format!("{line}\n").as_bytes());
                eprintln!("plugin wrote to stdout after the handshake: {line}");
            }
        });
        let line = match rx.recv_timeout(super::PATIENCE) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "no handshake from the plugin ({other:?}); stderr: {}",
                stderr.lock().unwrap()
            ),
        };
        let address = parse_handshake(&line);
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("valid endpoint")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the plugin at {address}: {e}"));
        PluginProcess {
            child,
            address,
            channel,
            stderr,
        }
    }

    pub fn diagnostics(&self) -> DiagnosticsClient<Channel> {
        DiagnosticsClient::new(self.channel.clone())
    }

    pub fn data(&self) -> DataClient<Channel> {
        DataClient::new(self.channel.clone())
    }

    pub fn resource(&self) -> ResourceClient<Channel> {
        ResourceClient::new(self.channel.clone())
    }

    pub fn stream(&self) -> StreamClient<Channel> {
        StreamClient::new(self.channel.clone())
    }

    /// Everything the plugin logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CheckHealth for `ds`.
    pub async fn check_health(&self, ds: &DataSource) -> pluginv2::CheckHealthResponse {
        let r = self
            .diagnostics()
            .check_health(pluginv2::CheckHealthRequest {
                plugin_context: Some(ds.context()),
                headers: HashMap::new(),
            })
            .await
            .expect("CheckHealth answered")
            .into_inner();
        super::capture::error_text(
            "CheckHealth",
            &format!("{} {}", r.message, String::from_utf8_lossy(&r.json_details)),
        );
        r
    }

    /// QueryData with queries `(refId, json, from_ms, to_ms, interval_ms)`,
    /// and request headers (e.g. `FromAlert: true`).
    pub async fn query(
        &self,
        ds: &DataSource,
        queries: &[(&str, Value, i64, i64, i64)],
        headers: &[(&str, &str)],
    ) -> pluginv2::QueryDataResponse {
        let r = self
            .data()
            .query_data(pluginv2::QueryDataRequest {
                plugin_context: Some(ds.context()),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                queries: queries
                    .iter()
                    .map(|(r, json, from, to, interval)| pluginv2::DataQuery {
                        ref_id: r.to_string(),
                        max_data_points: 1000,
                        interval_ms: *interval,
                        time_range: Some(pluginv2::TimeRange {
                            from_epoch_ms: *from,
                            to_epoch_ms: *to,
                        }),
                        json: serde_json::to_vec(json).expect("json"),
                        query_type: String::new(),
                    })
                    .collect(),
            })
            .await
            .expect("QueryData answered")
            .into_inner();
        for (ref_id, answer) in &r.responses {
            if !answer.error.is_empty() {
                super::capture::error_text(&format!("QueryData {ref_id}"), &answer.error);
            }
        }
        r
    }

    /// CallResource: `(status, JSON body)`.
    pub async fn call_resource(
        &self,
        ds: &DataSource,
        method: &str,
        url: &str,
        body: &[u8],
    ) -> (i32, Value) {
        use futures_util::StreamExt;
        let mut stream = self
            .resource()
            .call_resource(pluginv2::CallResourceRequest {
                plugin_context: Some(ds.context()),
                path: url.split('?').next().unwrap_or("").to_string(),
                method: method.to_string(),
                url: url.to_string(),
                headers: HashMap::new(),
                body: body.to_vec().into(),
            })
            .await
            .expect("CallResource answered")
            .into_inner();
        let first = stream
            .next()
            .await
            .expect("a response")
            .expect("a response");
        let mut bytes = first.body.to_vec();
        while let Some(Ok(more)) = stream.next().await {
            bytes.extend_from_slice(&more.body);
        }
        if first.code >= 400 {
            super::capture::error_text(
                &format!("CallResource {method} {url}"),
                &String::from_utf8_lossy(&bytes),
            );
        }
        (
            first.code,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// SubscribeStream for `path` with the query as data: `Ok(status)` or the error.
    pub async fn subscribe(
        &self,
        ds: &DataSource,
        path: &str,
        query: &Value,
    ) -> Result<pluginv2::subscribe_stream_response::Status, String> {
        self.stream()
            .subscribe_stream(pluginv2::SubscribeStreamRequest {
                plugin_context: Some(ds.context()),
                path: path.to_string(),
                data: serde_json::to_vec(query).expect("json").into(),
            })
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| {
                super::capture::error_text("SubscribeStream", s.message());
                s.message().to_string()
            })
    }

    /// RunStream for `path`: each packet's JSON frame, in order.
    pub async fn run_stream(
        &self,
        ds: &DataSource,
        path: &str,
        query: &Value,
    ) -> tonic::Streaming<pluginv2::StreamPacket> {
        self.stream()
            .run_stream(pluginv2::RunStreamRequest {
                plugin_context: Some(ds.context()),
                path: path.to_string(),
                data: serde_json::to_vec(query).expect("json").into(),
            })
            .await
            .expect("RunStream answered")
            .into_inner()
    }

    /// The plugin's Prometheus metrics, as text.
    pub async fn metrics(&self, ds: &DataSource) -> String {
        let payload = self
            .diagnostics()
            .collect_metrics(pluginv2::CollectMetricsRequest {
                plugin_context: Some(ds.context()),
            })
            .await
            .expect("CollectMetrics answered")
            .into_inner()
            .metrics
            .expect("metrics payload");
        String::from_utf8(payload.prometheus).expect("utf-8 metrics")
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `1|2|tcp|127.0.0.1:PORT|grpc` → `127.0.0.1:PORT`.
pub fn parse_handshake(line: &str) -> String {
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(parts.len(), 5, "handshake has five fields: {line:?}");
    assert_eq!(parts[0], "1", "core protocol version: {line:?}");
    assert_eq!(parts[1], "2", "app protocol version: {line:?}");
    assert_eq!(parts[2], "tcp", "network: {line:?}");
    assert_eq!(parts[4], "grpc", "protocol: {line:?}");
    parts[3].to_string()
}

/// A data-source instance as Grafana sends it in every request's plugin context.
#[derive(Clone, Debug)]
pub struct DataSource {
    pub id: i64,
    pub uid: String,
    pub name: String,
    pub json_data: Value,
    pub secure_json_data: HashMap<String, String>,
    pub updated_ms: i64,
}

impl DataSource {
    /// A data source pointing at `uri`, database `database`.
    pub fn new(uri: &str, database: &str) -> DataSource {
        DataSource {
            id: 1,
            uid: "mongopulse-test".into(),
            name: "Mongo Pulse".into(),
            json_data: serde_json::json!({ "database": database }),
            secure_json_data: HashMap::from([("uri".to_string(), uri.to_string())]),
            updated_ms: 1_700_000_000_000,
        }
    }

    pub fn with_json(mut self, key: &str, value: Value) -> DataSource {
        self.json_data[key] = value;
        self
    }

    pub fn context(&self) -> pluginv2::PluginContext {
        pluginv2::PluginContext {
            org_id: 1,
            plugin_id: PLUGIN_ID.into(),
            user: Some(pluginv2::User {
                login: "admin".into(),
                name: "Admin".into(),
                email: "admin@localhost".into(),
                role: "Admin".into(),
            }),
            app_instance_settings: None,
            data_source_instance_settings: Some(pluginv2::DataSourceInstanceSettings {
                id: self.id,
                name: self.name.clone(),
                url: String::new(),
                user: String::new(),
                database: String::new(),
                basic_auth_enabled: false,
                basic_auth_user: String::new(),
                json_data: serde_json::to_vec(&self.json_data).expect("json"),
                decrypted_secure_json_data: self.secure_json_data.clone(),
                last_updated_ms: self.updated_ms,
                uid: self.uid.clone(),
            }),
        }
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}
