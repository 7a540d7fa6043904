//! What a transition says: the rule's annotation templates filled in, and the
//! [`Notification`] handed to the notifiers and stored with the transition.
//!
//! In: a rule, one instance's labels, its value, the episode's start and the time of the
//! transition. Out: the notification and its rendered annotations. Pure.

use std::collections::BTreeMap;

use super::evaluate::Labels;
use super::instance::date;
use super::notify::{number, Notification, NotifyState};
use super::rules::Rule;

/// One instance of a rule at one evaluation, as far as a notification needs it.
pub(crate) struct Moment<'a> {
    pub rule: &'a Rule,
    pub labels: &'a Labels,
    pub instance: &'a str,
    pub value: Option<f64>,
    /// When the episode (pending, then firing) began, epoch ms.
    pub since: i64,
    /// The evaluation time, epoch ms.
    pub at: i64,
}

/// Whether the notification ends an episode or reminds of one still going on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Firing,
    Reminder,
    Resolved,
}

/// The notification of `m` and its annotations; links point under `public_url`.
pub(crate) fn notification(
    m: &Moment<'_>,
    kind: Kind,
    public_url: &str,
) -> (Notification, BTreeMap<String, String>) {
    let rule = m.rule;
    let threshold = rule.config.condition.threshold();
    let mut vars: BTreeMap<String, String> = m.labels.clone();
    vars.insert("value".into(), m.value.map_or("no data".into(), number));
    vars.insert("threshold".into(), threshold.map_or(String::new(), number));
    vars.insert("rule".into(), rule.name.clone());
    vars.insert("instance".into(), m.instance.to_string());
    let mut annotations: BTreeMap<String, String> = rule
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), render(v, &vars)))
        .collect();
    annotations
        .entry("summary".into())
        .or_insert_with(|| format!("{} ({}): {}", rule.name, m.instance, vars["value"]));
    let mut all_labels = rule.config.labels.clone();
    all_labels.extend(m.labels.clone());
    all_labels.insert("alertname".into(), rule.name.clone());
    all_labels.insert("severity".into(), rule.config.severity.clone());
    let resolved = kind == Kind::Resolved;
    let n = Notification {
        rule_id: rule.config.id.clone(),
        rule_name: rule.name.clone(),
        instance: m.instance.to_string(),
        state: if resolved {
            NotifyState::Resolved
        } else {
            NotifyState::Firing
        },
        severity: rule.config.severity.clone(),
        labels: all_labels,
        annotations: annotations.clone(),
        value: m.value,
        threshold,
        starts_at: date(m.since),
        ends_at: resolved.then(|| date(m.at)),
        generator_url: format!(
            "{}/v1/alerts/history?rule={}",
            public_url.trim_end_matches('/'),
            rule.config.id
        ),
        repeat: kind == Kind::Reminder,
    };
    (n, annotations)
}

/// `{{name}}` (or `{{ name }}`) → value, for annotations, in one pass over
/// the template: a value is never read again, so a label value that itself
/// holds `{{x}}` stays as it is. An unknown name is left as written.
pub(crate) fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        match vars.get(after[..close].trim()) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::render;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_are_expanded_once_and_values_are_not_read_again() {
        let v = vars(&[("country", "{{value}}"), ("value", "812")]);
        assert_eq!(
            render("p95 {{value}} ms in {{ country }}", &v),
            "p95 812 ms in {{value}}"
        );
        assert_eq!(
            render("{{unknown}} and {{value}}", &v),
            "{{unknown}} and 812"
        );
        assert_eq!(render("no close {{value", &v), "no close {{value");
        assert_eq!(render("", &v), "");
        assert_eq!(render("{{value}}{{value}}", &v), "812812");
    }
}
