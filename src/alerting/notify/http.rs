//! One HTTP attempt shared by the webhook, Slack and Alertmanager notifiers: send a
//! prepared request, then classify the answer (2xx succeeds; 408, 425, 429 and 5xx are
//! retried; redirects and other 4xx fail at once) or the transport error (retried).

use std::error::Error as StdError;

use reqwest::{header, RequestBuilder, Response, StatusCode};

use super::error::SenderError;
use super::redact::display_url;
use super::retry::{parse_retry_after, AttemptResult, Failure};

/// How much of a failed response's body goes into the error message.
const BODY_SNIPPET: usize = 300;

/// The shared client: no redirects (a redirect of a POST either drops the body — 301/302/
/// 303 turn it into a GET that "succeeds" — or replays it, with its signature and custom
/// headers, to another host; either is worse than a clear error), rustls, our user agent.
pub(crate) fn client(connect_timeout_ms: u64) -> Result<reqwest::Client, SenderError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mongopulse/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_millis(connect_timeout_ms.max(1)))
        .build()
        .map_err(|e| SenderError::HttpClient(chain(&e.without_url())))
}

/// Sends `req` and classifies the outcome.
pub(crate) async fn attempt(req: RequestBuilder) -> AttemptResult {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Err(transport_failure(e)),
    };
    classify(resp).await
}

fn transport_failure(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    if e.is_builder() {
        return Failure::permanent(format!("cannot build the request: {}", chain(&e)), None);
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Failure::retryable(format!("{what}: {}", chain(&e)), None)
}

async fn classify(resp: Response) -> AttemptResult {
    let status = resp.status();
    let code = status.as_u16();
    if status.is_success() {
        return Ok(Some(code));
    }
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| match reqwest::Url::parse(l) {
                Ok(_) => display_url(l, true),
                Err(_) => String::from("a relative location"),
            })
            .unwrap_or_else(|| String::from("an unspecified location"));
        return Err(Failure::permanent(
            format!(
                "HTTP {code}: redirected to {to}; redirects are not followed, configure the final URL"
            ),
            Some(code),
        ));
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = snippet(resp).await;
    let message = if body.is_empty() {
        format!("HTTP {code}{}", reason(status))
    } else {
        format!("HTTP {code}{}: {body}", reason(status))
    };
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || code == 425;
    Err(Failure {
        message,
        status: Some(code),
        retryable,
        retry_after,
    })
}

fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

/// The start of the body, on one line.
async fn snippet(mut resp: Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_SNIPPET {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf[..buf.len().min(BODY_SNIPPET)]).into_owned();
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if buf.len() > BODY_SNIPPET {
        format!("{one_line}…")
    } else {
        one_line
    }
}

/// An error and its sources, joined with ": ", repeated messages dropped.
pub(crate) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}
