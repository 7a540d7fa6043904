//! MongoDB for the tests. Which one is set once for the whole run:
//!
//! - `MONGODB_URI` set: that real server (every fixture gets its own database on it);
//! - else `MONGOPULSE_TEST_BACKEND=standin` (the default): a fresh MongoDB stand-in
//!   (`tests/standin/standin.py`, a wire-protocol server backed by mongomock) per fixture;
//! - `MONGOPULSE_TEST_BACKEND=secantus`: a fresh SecantusDB (`secantusd-py`, PyPI
//!   `SecantusDB`, a wire server over WiredTiger) per fixture, on a data folder of its own,
//!   so a test can crash it with `kill -9` and restart it on the same data
//!   ([`TestMongo::crash`], [`TestMongo::restart`]).
//!
//! A local server is started for its fixture alone and killed when the fixture is dropped.
//! Every fixture also gets its own database name, so tests never see each other's data,
//! also when they share a real server.
//!
//! Both local servers run on `$MONGOPULSE_STANDIN_PYTHON` if set, else
//! `<crate>/target/standin-venv/bin/python`; `scripts/test.sh` creates that venv from
//! `tests/standin/requirements.txt`, which pins both. The URI names the replica set
//! (`?replicaSet=rs0`, SecantusDB's `secantus`) rather than `directConnection=true` so the
//! driver does the same replica-set discovery as in production and the product sees a
//! replica set, which change streams require.
//!
//! A local server's stderr goes to `<target>/tmp/<backend>-<db>.log`; the file is removed
//! when the test passes and its tail is printed when the test panics.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::{Client, Database};

/// The bound on every wait for a condition in the black-box tests (a server listening, a
/// daemon ready, a frame arriving, rollups catching up). Only a hang reaches it: the
/// tests wait for the condition itself, so a slow, busy machine merely takes longer.
/// (Defined here because tests/standin_conformance.rs includes this file on its own.)
pub const PATIENCE: Duration = Duration::from_secs(180);

/// How long a local server may take to say it is listening: both start in about a
/// second, a few on a busy machine.
const STARTUP_TIMEOUT: Duration = PATIENCE;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which MongoDB the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The mongomock-based stand-in (`tests/standin/standin.py`).
    Standin,
    /// SecantusDB's Python server over WiredTiger; durable across restarts.
    Secantus,
    /// The real server in `MONGODB_URI`.
    Server,
}

impl Backend {
    /// The backend this run uses: `MONGODB_URI` when set, else `MONGOPULSE_TEST_BACKEND`.
    pub fn current() -> Backend {
        if std::env::var("MONGODB_URI").is_ok_and(|u| !u.trim().is_empty()) {
            return Backend::Server;
        }
        match std::env::var("MONGOPULSE_TEST_BACKEND")
            .unwrap_or_default()
            .trim()
        {
            "" | "standin" => Backend::Standin,
            "secantus" => Backend::Secantus,
            other => panic!(
                "MONGOPULSE_TEST_BACKEND={other:?} is not a test backend: use `standin` (the \
                 default) or `secantus`, or set MONGODB_URI to test against a real server"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Standin => "standin",
            Backend::Secantus => "secantus",
            Backend::Server => "server",
        }
    }
}

pub struct TestMongo {
    /// Connection string for the driver (and for the product under test).
    pub uri: String,
    /// A database name unique to this fixture.
    pub db_name: String,
    pub backend: Backend,
    client: Client,
    local: Option<LocalServer>,
}

/// A server process started for one fixture.
struct LocalServer {
    child: Option<Child>,
    log_path: PathBuf,
    /// The port it listens on; a restart listens there again, so URIs stay valid.
    port: u16,
    /// SecantusDB's data folder, kept across [`TestMongo::restart`], removed on drop.
    data: Option<tempfile::TempDir>,
}

impl TestMongo {
    /// Connects to `MONGODB_URI`, or starts this run's local server. Panics with
    /// instructions when it cannot be started.
    pub async fn start() -> TestMongo {
        let db_name = unique_db_name();
        let backend = Backend::current();
        let (uri, local) = match backend {
            Backend::Server => (std::env::var("MONGODB_URI").unwrap_or_default(), None),
            Backend::Standin | Backend::Secantus => {
                let log_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("{}-{db_name}.log", backend.name()));
                let (uri, local) = tokio::task::spawn_blocking(move || {
                    let data = (backend == Backend::Secantus).then(secantus_data_dir);
                    LocalServer::spawn(backend, log_path, data, 0)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                (uri, Some(local))
            }
        };
        let client = Client::with_uri_str(&uri)
            .await
            .unwrap_or_else(|e| panic!("cannot build a MongoDB client for {uri}: {e}"));
        TestMongo {
            uri,
            db_name,
            backend,
            client,
            local,
        }
    }

    /// The fixture's client (shared; cheap to clone).
    pub async fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of its own, with its own connection pool.
    pub async fn new_client(&self) -> Client {
        Client::with_uri_str(&self.uri)
            .await
            .unwrap_or_else(|e| panic!("cannot build a MongoDB client for {}: {e}", self.uri))
    }

    /// The fixture's database.
    pub fn db(&self) -> Database {
        self.client.database(&self.db_name)
    }

    /// True when the tests run against the stand-in.
    pub fn is_standin(&self) -> bool {
        self.backend == Backend::Standin
    }

    /// True when the tests run against SecantusDB.
    pub fn is_secantus(&self) -> bool {
        self.backend == Backend::Secantus
    }

    /// The local server's process id (tests may SIGSTOP/SIGCONT it); `None` on a real
    /// server, or while a crashed SecantusDB is down.
    pub fn server_pid(&self) -> Option<u32> {
        self.local.as_ref()?.child.as_ref().map(Child::id)
    }

    /// Everything the local server wrote to stderr so far (across restarts); `None` on a
    /// real server.
    pub fn server_log(&self) -> Option<String> {
        self.local
            .as_ref()
            .map(|s| std::fs::read_to_string(&s.log_path).unwrap_or_default())
    }

    /// Kills SecantusDB with SIGKILL, as a crash would: no shutdown, no flush. Its data
    /// folder stays for [`TestMongo::restart`]. Panics on any other backend (only a
    /// durable server can be restarted with its data).
    pub fn crash(&mut self) {
        assert!(self.is_secantus(), "crash() needs the SecantusDB backend");
        let local = self.local.as_mut().expect("SecantusDB runs locally");
        if let Some(mut child) = local.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts SecantusDB again on the same data folder and port after [`TestMongo::crash`].
    pub async fn restart(&mut self) {
        assert!(self.is_secantus(), "restart() needs the SecantusDB backend");
        let mut local = self.local.take().expect("SecantusDB runs locally");
        assert!(local.child.is_none(), "restart() after crash()");
        let local = tokio::task::spawn_blocking(move || {
            let data = local.data.take();
            let (_, mut fresh) =
                LocalServer::spawn(Backend::Secantus, local.log_path.clone(), data, local.port);
            local.child = fresh.child.take();
            local.data = fresh.data.take();
            local
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.local = Some(local);
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        match self.local.take() {
            Some(mut s) => {
                if let Some(mut child) = s.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                if std::thread::panicking() {
                    eprintln!(
                        "---- {} log ({}), last lines ----\n{}",
                        self.backend.name(),
                        s.log_path.display(),
                        tail(&s.log_path, 60)
                    );
                } else {
                    let _ = std::fs::remove_file(&s.log_path);
                }
            }
            None => {
                // A real server: drop the test database, best effort, on a runtime of our
                // own (the test's runtime may be shutting down).
                let uri = self.uri.clone();
                let name = self.db_name.clone();
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        let fut = async {
                            if let Ok(client) = Client::with_uri_str(&uri).await {
                                let _ = client.database(&name).drop().await;
                            }
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(10), fut).await;
                    });
                })
                .join();
            }
        }
    }
}

fn unique_db_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t_{}_{n}_{nanos}", std::process::id())
}

fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("MONGOPULSE_STANDIN_PYTHON") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standin-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "MongoDB tests need MONGODB_URI or the test servers' Python environment, and \
         neither is there.\nRun the test suite with `scripts/test.sh` (it creates the venv), \
         or create it yourself:\n    python3 -m venv target/standin-venv && \
         target/standin-venv/bin/pip install -r tests/standin/requirements.txt\n\
         (or point MONGOPULSE_STANDIN_PYTHON at a Python that has those packages)."
    );
}

fn secantus_data_dir() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(root);
    tempfile::Builder::new()
        .prefix("secantus-data-")
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("cannot create a data folder in {}: {e}", root.display()))
}

impl LocalServer {
    /// Starts the stand-in or SecantusDB on `port` (0: any free one) and waits until it
    /// says it is listening. The stand-in prints `LISTENING 127.0.0.1:<port>` on stdout;
    /// SecantusDB logs `secantus listening on 127.0.0.1:<port>` on stderr.
    fn spawn(
        backend: Backend,
        log_path: PathBuf,
        data: Option<tempfile::TempDir>,
        port: u16,
    ) -> (String, LocalServer) {
        let python = venv_python();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin");
        if let Some(parent) = log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let port_arg = port.to_string();
        let mut cmd = Command::new(&python);
        let script = match backend {
            Backend::Standin => {
                let script = dir.join("standin.py");
                cmd.arg(&script).args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port_arg,
                    "--exit-with-parent",
                ]);
                script
            }
            Backend::Secantus => {
                let script = dir.join("secantus_launcher.py");
                let data = data.as_ref().expect("SecantusDB needs a data folder");
                cmd.arg(&script)
                    .args(["--host", "127.0.0.1", "--port", &port_arg])
                    .arg("--storage-path")
                    .arg(data.path())
                    // configureFailPoint, as mongod's enableTestCommands.
                    .arg("--enable-test-commands")
                    // One server per test, many at once: a small cache each.
                    .args(["--cache-size", "64M"]);
                script
            }
            Backend::Server => unreachable!("a real server is not started by the tests"),
        };
        let _ = writeln!(
            log,
            "==> starting {} ({})",
            backend.name(),
            script.display()
        );
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} with {}: {e}\nRun `scripts/test.sh`, or create the venv: \
                     python3 -m venv target/standin-venv && \
                     target/standin-venv/bin/pip install -r tests/standin/requirements.txt",
                    script.display(),
                    python.display()
                )
            });
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // The listening address, or `None` once stderr closes (the server exited).
        let (tx, rx) = mpsc::channel::<Option<String>>();
        // stderr goes to the log file; SecantusDB's listening line is picked out of it.
        let tx_err = tx.clone();
        on_lines(stderr, move |line| {
            if line.is_empty() {
                let _ = tx_err.send(None);
                return;
            }
            let _ = log.write_all(line.as_bytes());
            if let Some(at) = line.find("secantus listening on ") {
                let addr = line[at + "secantus listening on ".len()..].trim();
                let _ = tx_err.send(Some(addr.to_string()));
            }
        });
        // The stand-in says it on stdout.
        on_lines(stdout, move |line| {
            if let Some(addr) = line.trim().strip_prefix("LISTENING ") {
                let _ = tx.send(Some(addr.to_string()));
            }
        });
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{} ({} {}) exited before listening (status {status:?}). Does that Python \
                     have tests/standin/requirements.txt installed (`scripts/test.sh` sets one \
                     up)?\nIts stderr:\n{}",
                    backend.name(),
                    python.display(),
                    script.display(),
                    tail(&log_path, 40)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not say it was listening within {STARTUP_TIMEOUT:?}.\nIts stderr:\n{}",
                    backend.name(),
                    tail(&log_path, 40)
                );
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} listens on an unexpected address {addr:?}",
                    backend.name()
                )
            });
        let set_name = match backend {
            Backend::Secantus => "secantus",
            _ => "rs0",
        };
        let uri = format!("mongodb://{addr}/?replicaSet={set_name}");
        (
            uri,
            LocalServer {
                child: Some(child),
                log_path,
                port,
                data,
            },
        )
    }
}

/// Calls `f` with each line read from `pipe`, on a thread of its own, until it closes;
/// then calls it once more with an empty line.
fn on_lines(pipe: impl Read + Send + 'static, mut f: impl FnMut(&str) + Send + 'static) {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(pipe);
        let mut line = String::new();
        while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            f(&line);
            line.clear();
        }
        f("");
    });
}

/// The last `lines` lines of a file (at most the last 64 KiB of it).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let all: Vec<&str> = buf.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
