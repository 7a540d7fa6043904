//! What a process holds, read from Linux's `/proc`: resident memory, open file
//! descriptors, threads; sampled on a timer by a background task, and the least-squares
//! slope of the memory samples. Measurements for the reliability tests' report, never
//! timing assertions.
//!
//! In: a process id (changeable, for a daemon restarted under a new pid), an interval.
//! Out: the samples taken, [`slope_kib_per_min`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub at_secs: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
}

/// Reads `/proc/PID/status` (VmRSS, Threads) and counts `/proc/PID/fd`; `None` when the
/// process is gone.
pub fn read(pid: u32, at_secs: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Sample {
        at_secs,
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")? as usize,
    })
}

/// Samples one process every `every` until stopped.
pub struct Sampler {
    pid: Arc<AtomicU32>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid` now (one sample at once, then one each `every`).
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let pid = Arc::new(AtomicU32::new(pid));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (pid, samples, stop) = (pid.clone(), samples.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let at = started.elapsed().as_secs_f64();
                    if let Some(s) = read(pid.load(Ordering::Relaxed), at) {
                        samples.lock().unwrap().push(s);
                    }
                }
            })
        };
        Sampler {
            pid,
            samples,
            stop,
            task,
        }
    }

    /// Follows a restarted process.
    pub fn follow(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops and returns every sample taken.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        let _ = self.task.await;
        let samples = self.samples.lock().unwrap().clone();
        samples
    }
}

/// The least-squares slope of resident memory over time, in KiB per minute (0 with
/// fewer than two samples).
pub fn slope_kib_per_min(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.at_secs).sum::<f64>() / n;
    let mean_m = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        let dt = s.at_secs - mean_t;
        num += dt * (s.rss_kib as f64 - mean_m);
        den += dt * dt;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

/// How many times a process's stderr says a thread panicked.
pub fn panics(stderr: &str) -> usize {
    stderr.matches("panicked").count()
}

/// A small seeded generator (splitmix64), so a run's random moments can be replayed
/// from the seed it printed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}
