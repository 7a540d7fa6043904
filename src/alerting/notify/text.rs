//! Human-readable renderings shared by the Slack and email notifiers.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Notification, NotifyState};

/// `FIRING` or `RESOLVED`.
pub(crate) fn state_word(n: &Notification) -> &'static str {
    match n.state {
        NotifyState::Firing => "FIRING",
        NotifyState::Resolved => "RESOLVED",
    }
}

/// `[FIRING] <rule> (<instance>)`, the instance left out when empty; one line.
pub fn title(n: &Notification) -> String {
    let mut t = format!("[{}] {}", state_word(n), one_line(&n.rule_name));
    if !n.instance.trim().is_empty() {
        t.push_str(&format!(" ({})", one_line(&n.instance)));
    }
    t
}

/// `[FIRING] <rule> (<instance>) value 3.2 > threshold 3`: the title, then the value and
/// the threshold with the relation that actually holds between them (`>`, `<` or `=`),
/// which reads right for "above" and "below" rules, firing or resolved.
pub fn headline(n: &Notification) -> String {
    let mut t = title(n);
    if let Some(vt) = value_vs_threshold(n) {
        t.push(' ');
        t.push_str(&vt);
    }
    if n.repeat && n.state == NotifyState::Firing {
        t.push_str(" (still firing)");
    }
    t
}

/// `value 3.2 > threshold 3`, `value 3.2` or `threshold 3`; `None` with neither.
pub(crate) fn value_vs_threshold(n: &Notification) -> Option<String> {
    match (n.value, n.threshold) {
        (Some(v), Some(t)) => {
            let rel = if v > t {
                ">"
            } else if v < t {
                "<"
            } else if v == t {
                "="
            } else {
                "vs"
            };
            Some(format!("value {} {rel} threshold {}", number(v), number(t)))
        }
        (Some(v), None) => Some(format!("value {}", number(v))),
        (None, Some(t)) => Some(format!("threshold {}", number(t))),
        (None, None) => None,
    }
}

/// A number for people: at most 6 decimals, trailing zeros dropped (`3.2`, `3`,
/// `0.3` for 0.30000000000000004), scientific notation when very large or very small.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        return format!("{v:e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-12-09T14:30:15.234Z`.
pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Control characters (newlines included) replaced by spaces, so a name cannot break a
/// subject line or a one-line message.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(3.2), "3.2");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(1234567.891), "1234567.891");
        assert_eq!(number(1e20), "1e20");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
