//! MongoDB for the tests: the server in `MONGODB_URI` when it is set, otherwise a fresh
//! MongoDB stand-in (`tests/standin/standin.py`, a wire-protocol server backed by
//! mongomock) started for this fixture alone and killed when the fixture is dropped.
//!
//! Every fixture gets its own database name, so tests never see each other's data, also
//! when they share a real server.
//!
//! The stand-in's interpreter is `$MONGOPULSE_STANDIN_PYTHON` if set, else
//! `<crate>/target/standin-venv/bin/python`; `scripts/test.sh` creates that venv. The URI
//! names the replica set (`?replicaSet=rs0`) rather than `directConnection=true` so the
//! driver does the same replica-set discovery as in production (the stand-in answers
//! `hello` as the primary of `rs0`, listing itself as `127.0.0.1:<port>`), and the
//! product sees a replica set, which change streams require.
//!
//! The stand-in's stderr goes to `<target>/tmp/standin-<db>.log`; the file is removed
//! when the test passes and its tail is printed when the test panics.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::{Client, Database};

/// How long the stand-in may take to print its `LISTENING` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestMongo {
    /// Connection string for the driver (and for the product under test).
    pub uri: String,
    /// A database name unique to this fixture.
    pub db_name: String,
    client: Client,
    standin: Option<Standin>,
}

struct Standin {
    child: Child,
    log_path: PathBuf,
}

impl TestMongo {
    /// Connects to `MONGODB_URI`, or starts a stand-in. Panics with instructions when the
    /// stand-in cannot be started.
    pub async fn start() -> TestMongo {
        let db_name = unique_db_name();
        let (uri, standin) = match std::env::var("MONGODB_URI") {
            Ok(uri) if !uri.trim().is_empty() => (uri, None),
            _ => {
                let log_path =
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("standin-{db_name}.log"));
                let (uri, standin) = tokio::task::spawn_blocking(move || spawn_standin(log_path))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                (uri, Some(standin))
            }
        };
        let client = Client::with_uri_str(&uri)
            .await
            .unwrap_or_else(|e| panic!("cannot build a MongoDB client for {uri}: {e}"));
        TestMongo {
            uri,
            db_name,
            client,
            standin,
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

    /// True when the tests run against the stand-in rather than `MONGODB_URI`.
    pub fn is_standin(&self) -> bool {
        self.standin.is_some()
    }

    /// The stand-in's process id (tests may SIGSTOP/SIGCONT it); `None` on a real server.
    pub fn standin_pid(&self) -> Option<u32> {
        self.standin.as_ref().map(|s| s.child.id())
    }

    /// Everything the stand-in wrote to stderr so far; `None` on a real server.
    pub fn standin_log(&self) -> Option<String> {
        self.standin
            .as_ref()
            .map(|s| std::fs::read_to_string(&s.log_path).unwrap_or_default())
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        match self.standin.take() {
            Some(mut s) => {
                let _ = s.child.kill();
                let _ = s.child.wait();
                if std::thread::panicking() {
                    eprintln!(
                        "---- MongoDB stand-in log ({}), last lines ----\n{}",
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

fn standin_python() -> PathBuf {
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
        "MongoDB tests need MONGODB_URI or the MongoDB stand-in's Python environment, and \
         neither is there.\nRun the test suite with `scripts/test.sh` (it creates the venv), \
         or create it yourself:\n    python3 -m venv target/standin-venv && \
         target/standin-venv/bin/pip install -r tests/standin/requirements.txt\n\
         (or point MONGOPULSE_STANDIN_PYTHON at a Python that has those packages)."
    );
}

/// Starts the stand-in and waits for its `LISTENING 127.0.0.1:<port>` line.
fn spawn_standin(log_path: PathBuf) -> (String, Standin) {
    let python = standin_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/standin.py");
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = std::fs::File::create(&log_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    let mut child = Command::new(&python)
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", "0", "--exit-with-parent"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the MongoDB stand-in with {}: {e}\nRun `scripts/test.sh`, or \
                 create the venv: python3 -m venv target/standin-venv && \
                 target/standin-venv/bin/pip install -r tests/standin/requirements.txt",
                python.display()
            )
        });
    let stdout = child.stdout.take().expect("stand-in stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let res = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(res);
    });
    let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(res) => {
            let status = child.wait().ok();
            panic!(
                "the MongoDB stand-in ({} {}) exited before listening (status {status:?}, \
                 read {res:?}). Does that Python have tests/standin/requirements.txt installed \
                 (`scripts/test.sh` sets one up)?\nIts stderr:\n{}",
                python.display(),
                script.display(),
                tail(&log_path, 40)
            );
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the MongoDB stand-in did not print LISTENING within {STARTUP_TIMEOUT:?}.\nIts \
                 stderr:\n{}",
                tail(&log_path, 40)
            );
        }
    };
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("unexpected first line from the stand-in: {line:?}"))
        .to_string();
    let uri = format!("mongodb://{addr}/?replicaSet=rs0");
    (uri, Standin { child, log_path })
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
