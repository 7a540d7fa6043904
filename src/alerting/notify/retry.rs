//! The retry loop shared by every notifier: attempts bounded by a per-attempt timeout,
//! exponential backoff with jitter between them, and the classification of a failed
//! attempt as worth retrying or not.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::RetryConfig;

/// One failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    /// What went wrong, already free of secrets or about to be scrubbed.
    pub message: String,
    /// HTTP status, or SMTP reply code, when the receiver answered.
    pub status: Option<u16>,
    /// Whether another attempt may succeed (5xx, 429, transport errors, timeouts).
    pub retryable: bool,
    /// The receiver's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn retryable(message: impl Into<String>, status: Option<u16>) -> Failure {
        Failure {
            message: message.into(),
            status,
            retryable: true,
            retry_after: None,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>, status: Option<u16>) -> Failure {
        Failure {
            message: message.into(),
            status,
            retryable: false,
            retry_after: None,
        }
    }
}

/// What one attempt returns: the status (HTTP or SMTP) of a success, or the failure.
pub(crate) type AttemptResult = Result<Option<u16>, Failure>;

/// The outcome of all attempts of one delivery.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    pub attempts: u32,
    pub result: AttemptResult,
}

/// Runs `attempt(n)` for n = 1, 2, … until it succeeds, fails permanently or `attempts`
/// are used up. Each attempt is bounded by `timeout_ms` (a timed-out attempt counts as a
/// retryable failure); before attempt n+1 it sleeps [`backoff`]`(n)`.
pub(crate) async fn run<F, Fut>(retry: &RetryConfig, mut attempt: F) -> Outcome
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = AttemptResult>,
{
    let attempts = retry.attempts.max(1);
    let timeout = Duration::from_millis(retry.timeout_ms.max(1));
    let mut n = 1;
    loop {
        let result = match tokio::time::timeout(timeout, attempt(n)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::retryable(
                format!("timed out after {} ms", retry.timeout_ms),
                None,
            )),
        };
        match result {
            Ok(status) => {
                return Outcome {
                    attempts: n,
                    result: Ok(status),
                }
            }
            Err(f) if !f.retryable || n >= attempts => {
                return Outcome {
                    attempts: n,
                    result: Err(f),
                }
            }
            Err(f) => {
                let pause = backoff(retry, n, f.retry_after);
                tracing::debug!(
                    attempt = n,
                    of = attempts,
                    pause_ms = pause.as_millis() as u64,
                    error = %f.message,
                    "notification attempt failed, retrying"
                );
                tokio::time::sleep(pause).await;
                n += 1;
            }
        }
    }
}

/// The pause after failed attempt `n` (1-based): nominal `initial · 2^(n-1)` capped at
/// `max`, drawn uniformly in [nominal/2, nominal] ("equal jitter": retries of many
/// alerts spread out, yet never come back immediately). A receiver's `Retry-After` raises
/// the pause, still capped at `max`.
pub(crate) fn backoff(retry: &RetryConfig, n: u32, retry_after: Option<Duration>) -> Duration {
    let nominal = nominal_backoff(retry, n);
    let half = nominal / 2;
    let jittered = half + random_below(nominal - half + 1);
    let mut ms = jittered;
    if let Some(ra) = retry_after {
        let ra = u64::try_from(ra.as_millis()).unwrap_or(u64::MAX);
        ms = ms.max(ra.min(retry.max_backoff_ms));
    }
    Duration::from_millis(ms)
}

/// `initial · 2^(n-1)` capped at `max`, without jitter.
pub(crate) fn nominal_backoff(retry: &RetryConfig, n: u32) -> u64 {
    let shift = n.saturating_sub(1).min(63);
    retry
        .initial_backoff_ms
        .saturating_mul(1u64.checked_shl(shift).unwrap_or(u64::MAX))
        .min(retry.max_backoff_ms)
}

/// A uniformly-ish random number in [0, bound) (0 when bound is 0). Jitter only needs
/// spread, not cryptographic quality: std's randomly keyed hasher over a counter.
fn random_below(bound: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if bound == 0 {
        return 0;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() % bound
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is ignored).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn cfg(attempts: u32) -> RetryConfig {
        RetryConfig {
            attempts,
            initial_backoff_ms: 1,
            max_backoff_ms: 4,
            timeout_ms: 1_000,
        }
    }

    #[test]
    fn nominal_backoff_doubles_and_caps() {
        let r = RetryConfig {
            attempts: 10,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
            timeout_ms: 5_000,
        };
        let v: Vec<u64> = (1..=7).map(|n| nominal_backoff(&r, n)).collect();
        assert_eq!(v, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(nominal_backoff(&r, 200), 10_000);
    }

    #[test]
    fn jitter_stays_between_half_and_nominal_and_honours_retry_after() {
        let r = RetryConfig::default();
        for n in 1..6 {
            for _ in 0..50 {
                let nominal = nominal_backoff(&r, n);
                let d = backoff(&r, n, None).as_millis() as u64;
                assert!(d >= nominal / 2 && d <= nominal, "{d} vs {nominal}");
            }
        }
        let d = backoff(&r, 1, Some(Duration::from_secs(3)));
        assert!(d >= Duration::from_secs(3));
        let d = backoff(&r, 1, Some(Duration::from_secs(3600)));
        assert_eq!(d, Duration::from_millis(r.max_backoff_ms));
    }

    #[tokio::test]
    async fn retries_retryable_failures_until_success() {
        let calls = AtomicU32::new(0);
        let out = run(&cfg(4), |_| {
            let c = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if c < 2 {
                    Err(Failure::retryable("boom", Some(500)))
                } else {
                    Ok(Some(200))
                }
            }
        })
        .await;
        assert_eq!(out.attempts, 3);
        assert_eq!(out.result, Ok(Some(200)));
    }

    #[tokio::test]
    async fn stops_at_a_permanent_failure_and_at_the_attempt_limit() {
        let out = run(&cfg(4), |_| async {
            Err(Failure::permanent("no", Some(400)))
        })
        .await;
        assert_eq!(out.attempts, 1);
        let out = run(&cfg(3), |_| async { Err(Failure::retryable("x", None)) }).await;
        assert_eq!(out.attempts, 3);
        assert!(out.result.is_err());
    }

    #[tokio::test]
    async fn a_hanging_attempt_times_out() {
        let r = RetryConfig {
            timeout_ms: 20,
            ..cfg(2)
        };
        let out = run(&r, |_| std::future::pending::<AttemptResult>()).await;
        assert_eq!(out.attempts, 2);
        assert!(out.result.unwrap_err().message.contains("timed out"));
    }
}
