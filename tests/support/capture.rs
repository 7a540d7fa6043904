//! Keeps every line the product's processes log and every error text they answer, so
//! `tests/secrets.rs` can check, after the whole suite, that no configured secret
//! reached any of them. In: text from a process's stderr/stdout, an HTTP error body, a
//! gRPC error or health message. Out: files under the suite-output folder, one per
//! process or test binary run.
//!
//! The folder is `MONGOPULSE_SUITE_OUTPUT` when set (scripts/test.sh sets it, and clears
//! it before the suite, so a scan sees exactly one run) and otherwise
//! `<target>/tmp/suite-output`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where captured text goes.
pub fn folder() -> PathBuf {
    match std::env::var_os("MONGOPULSE_SUITE_OUTPUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("suite-output"),
    }
}

/// The test binary's name, so a file says where its text came from.
fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into())
}

fn new_file(label: &str) -> Option<File> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = folder();
    std::fs::create_dir_all(&dir).ok()?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{}-{n}-{label}.log", binary_name(), std::process::id());
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .ok()
}

/// A file that one process's output is appended to as it arrives. Capture is best
/// effort: a test is not failed because the folder could not be written (the scan
/// then fails instead, finding too little text).
/// The file is made on the first write, so a silent process leaves none.
pub struct Sink {
    label: String,
    file: Option<File>,
}

impl Sink {
    pub fn new(label: &str) -> Sink {
        Sink {
            label: label.to_string(),
            file: None,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = new_file(&self.label);
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(bytes);
        }
    }
}

/// Keeps one error text the product answered (an HTTP error body, a gRPC status
/// message, a health check's message), in this binary's error file.
pub fn error_text(what: &str, text: &str) {
    static ERRORS: OnceLock<Mutex<Sink>> = OnceLock::new();
    let sink = ERRORS.get_or_init(|| Mutex::new(Sink::new("errors")));
    if let Ok(mut s) = sink.lock() {
        s.write(format!("{what}: {text}\n").as_bytes());
    }
}

/// Runs `cmd` to completion like `Command::output`, keeping its stdout and stderr.
pub fn output(cmd: &mut Command, label: &str) -> std::io::Result<Output> {
    let out = cmd.output()?;
    let mut sink = Sink::new(label);
    sink.write(&out.stdout);
    sink.write(&out.stderr);
    Ok(out)
}

/// A child's stdout or stderr that goes straight to a capture file (for a process left
/// running in the background), or nowhere when the file cannot be made.
pub fn stdio(label: &str) -> std::process::Stdio {
    match new_file(label) {
        Some(f) => f.into(),
        None => std::process::Stdio::null(),
    }
}
