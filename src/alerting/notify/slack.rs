//! Slack incoming webhook: `POST <url>` with
//!
//! ```json
//! {"text": "[FIRING] Errors (country=FR) value 3.2 > threshold 3",
//!  "channel": "#ops",                       // only when configured
//!  "attachments": [{"color": "#D63232", "fallback": "…", "title": "[FIRING] Errors (country=FR)",
//!                   "title_link": "<generatorURL>", "text": "<summary>\n<description>",
//!                   "fields": [{"title": "Severity", "value": "critical", "short": true}, …],
//!                   "footer": "Mongo Pulse", "ts": 1733754615}]}
//! ```
//!
//! `text` is what notifications and screen readers show; the attachment adds the colour
//! bar (green when resolved, red for critical/error/high, amber for warning, blue for
//! info), the value, threshold, times and labels. User text is escaped as Slack requires
//! (`&`, `<`, `>`).

use serde_json::{json, Value};

use super::text::{headline, number, time, title};
use super::{Notification, NotifyState};

/// The colour bar of an attachment.
pub fn color(n: &Notification) -> &'static str {
    if n.state == NotifyState::Resolved {
        return "#2EB67D";
    }
    match n.severity.to_ascii_lowercase().as_str() {
        "warning" | "warn" | "medium" => "#F2A900",
        "info" | "informational" | "low" | "notice" => "#3AA3E3",
        _ => "#D63232",
    }
}

/// The incoming-webhook payload for `n`.
pub fn slack_payload(n: &Notification, channel: Option<&str>) -> Value {
    let mut fields = vec![field("Severity", &n.severity, true)];
    if let Some(v) = n.value {
        fields.push(field("Value", &number(v), true));
    }
    if let Some(t) = n.threshold {
        fields.push(field("Threshold", &number(t), true));
    }
    if !n.instance.is_empty() {
        fields.push(field("Instance", &n.instance, true));
    }
    fields.push(field("Started", &time(&n.starts_at), true));
    if let Some(end) = &n.ends_at {
        fields.push(field("Ended", &time(end), true));
    }
    let labels: Vec<String> = n
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if !labels.is_empty() {
        fields.push(json!({"title": "Labels", "value": labels.join(", "), "short": false}));
    }
    let mut text_parts = Vec::new();
    for key in ["summary", "description"] {
        if let Some(a) = n.annotations.get(key).filter(|a| !a.trim().is_empty()) {
            text_parts.push(escape(a));
        }
    }
    let headline = escape(&headline(n));
    let mut attachment = json!({
        "color": color(n),
        "fallback": headline,
        "title": escape(&title(n)),
        "text": text_parts.join("\n"),
        "fields": fields,
        "footer": "Mongo Pulse",
        "ts": n.ends_at.unwrap_or(n.starts_at).timestamp(),
    });
    if n.generator_url.starts_with("http://") || n.generator_url.starts_with("https://") {
        attachment["title_link"] = Value::String(n.generator_url.clone());
    }
    let mut payload = json!({ "text": headline, "attachments": [attachment] });
    if let Some(c) = channel {
        payload["channel"] = Value::String(c.to_string());
    }
    payload
}

fn field(title: &str, value: &str, short: bool) -> Value {
    json!({"title": title, "value": escape(value), "short": short})
}

/// Slack's three control characters in message text.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
