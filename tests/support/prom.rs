//! Reads `/metrics` the way Prometheus does, from its text exposition format
//! (prometheus.io/docs/instrumenting/exposition_formats): one sample a line,
//! `name{label="value",…} value [timestamp]`, `#` lines are comments, label values
//! escape `\\`, `\"` and `\n`, and the order of the labels carries no meaning.

use std::collections::BTreeMap;

/// One sample: the metric's name, its labels as a set, and its value.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The value of the sample `selector` names (`name` or `name{label="value",…}`,
/// labels in any order, all of them), if `text` holds it.
pub fn value(text: &str, selector: &str) -> Option<f64> {
    let (name, labels) = series(selector.trim())?;
    text.lines()
        .filter_map(sample)
        .find(|s| s.name == name && s.labels == labels)
        .map(|s| s.value)
}

/// One line of the exposition; `None` for comments, blank lines and what it cannot read.
pub fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = series_end(line)?;
    let (name, labels) = series(&line[..end])?;
    let mut rest = line[end..].split_whitespace();
    let value = match rest.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Where the name and its labels end: after the closing brace (whose quoted
/// values may hold spaces and braces), or at the first blank.
fn series_end(line: &str) -> Option<usize> {
    let Some(open) = line.find('{') else {
        return line.find(char::is_whitespace);
    };
    if line[..open].contains(char::is_whitespace) {
        return line.find(char::is_whitespace);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i + 1),
            _ => {}
        }
    }
    None
}

/// `name` or `name{label="value",…}` (a trailing comma allowed).
fn series(s: &str) -> Option<(String, BTreeMap<String, String>)> {
    let Some(open) = s.find('{') else {
        return Some((s.to_string(), BTreeMap::new()));
    };
    let body = s[open + 1..].strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
    Some((s[..open].to_string(), labels))
}
