//! The query model: what panels, alert rules and template variables send
//! (docs/query-model.md). Parsing names the field at fault.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// A query that could not be understood: the field path and the problem.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{path}: {reason}")]
pub struct ModelError {
    pub path: String,
    pub reason: String,
}

impl ModelError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Builder(BuilderQuery),
    Pipeline(PipelineQuery),
    Variable(VariableQuery),
    Annotations(AnnotationsQuery),
    /// The plugin's own figures (cache, live channels, queries), for the operations dashboard.
    Plugin(PluginQuery),
}

/// `{"mode": "plugin"}`: no options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginQuery {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuilderQuery {
    pub event_type: String,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "default_measures")]
    pub measures: Vec<Measure>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default)]
    pub top_n: Option<TopN>,
    #[serde(default)]
    pub compare: Option<Compare>,
    #[serde(default)]
    pub fill: Fill,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub live: bool,
    /// Dashboard ad-hoc filters, as the frontend forwards them.
    #[serde(default)]
    pub adhoc_filters: Vec<AdhocFilter>,
}

fn default_spec() -> String {
    "default".into()
}

fn default_measures() -> Vec<Measure> {
    vec![Measure {
        kind: MeasureKind::Count,
        alias: None,
        window: None,
    }]
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measure {
    #[serde(flatten)]
    pub kind: MeasureKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

// serde cannot refuse unknown keys of a flattened enum, so a measure is read
// by hand: `alias` and `window` first, then the rest must be exactly one kind.
impl<'de> Deserialize<'de> for Measure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, Value>::deserialize(d)?;
        let alias = match map.remove("alias") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "alias must be a string, not {other}"
                )))
            }
        };
        let window = match map.remove("window") {
            None | Some(Value::Null) => None,
            Some(w) => Some(
                serde_json::from_value(w).map_err(|e| D::Error::custom(format!("window: {e}")))?,
            ),
        };
        let kind = serde_json::from_value(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Measure {
            kind,
            alias,
            window,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum MeasureKind {
    Count,
    Rate,
    Sum { metric: String },
    Avg { metric: String },
    Min { metric: String },
    Max { metric: String },
    Distinct { key: String },
    Percentile { metric: String, percentile: f64 },
    Topk { attribute: String, k: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub minutes: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub dimension: String,
    pub op: FilterOp,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterOp {
    Eq,
    Neq,
    In,
    Nin,
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdhocFilter {
    pub key: String,
    pub operator: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Auto,
    Minute,
    Hour,
    Day,
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopN {
    pub limit: usize,
    #[serde(default)]
    pub measure: usize,
    #[serde(default)]
    pub other: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub shift: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    #[default]
    Null,
    Zero,
    Previous,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Timeseries,
    Wide,
    Table,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineQuery {
    pub collection: String,
    pub pipeline: String,
    #[serde(default)]
    pub time_field: Option<String>,
    #[serde(default)]
    pub format: Format,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariableQuery {
    pub variable: VariableKind,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub dimension: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "default_spec")]
    pub spec: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VariableKind {
    EventTypes,
    Dimensions,
    DimensionValues,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnotationsQuery {
    #[serde(default)]
    pub rule: String,
    #[serde(default = "default_states")]
    pub states: Vec<String>,
}

fn default_states() -> Vec<String> {
    vec!["firing".into(), "resolved".into()]
}

/// Grafana's own keys, present on every query, that are not ours to check.
const GRAFANA_KEYS: &[&str] = &[
    "refId",
    "datasource",
    "hide",
    "key",
    "queryType",
    "intervalMs",
    "maxDataPoints",
    "datasourceId",
    "mode",
    "live",
    "interval",
];

/// Parses a query's JSON, naming the field at fault.
pub fn parse(json: &Value) -> Result<Query, ModelError> {
    let Value::Object(map) = json else {
        return Err(ModelError::new("", "a query must be a JSON object"));
    };
    let mode = map.get("mode").and_then(Value::as_str).unwrap_or("builder");
    let mut own = map.clone();
    for k in GRAFANA_KEYS {
        if *k != "live" || mode != "builder" {
            own.remove(*k);
        }
    }
    let own = Value::Object(own);
    fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ModelError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let reason = e.into_inner().to_string();
            ModelError::new(path, reason)
        })
    }
    let query = match mode {
        "builder" => Query::Builder(typed(&own)?),
        "pipeline" => Query::Pipeline(typed(&own)?),
        "variable" => Query::Variable(typed(&own)?),
        "annotations" => Query::Annotations(typed(&own)?),
        "plugin" => Query::Plugin(typed(&own)?),
        other => {
            return Err(ModelError::new(
                "mode",
                format!(
                "unknown mode '{other}': use builder, pipeline, variable, annotations or plugin"
            ),
            ))
        }
    };
    if let Query::Builder(b) = &query {
        check_builder(b)?;
    }
    Ok(query)
}

/// Checks what the types alone cannot.
fn check_builder(b: &BuilderQuery) -> Result<(), ModelError> {
    if b.event_type.trim().is_empty() {
        return Err(ModelError::new(
            "eventType",
            "choose an event type (or * for all)",
        ));
    }
    if b.measures.is_empty() {
        return Err(ModelError::new("measures", "add at least one measure"));
    }
    for (i, m) in b.measures.iter().enumerate() {
        let at = |f: &str| format!("measures[{i}].{f}");
        match &m.kind {
            MeasureKind::Percentile { percentile, .. }
                if !(*percentile > 0.0 && *percentile < 100.0) =>
            {
                return Err(ModelError::new(
                    at("percentile"),
                    format!("{percentile} is not between 0 and 100 (exclusive)"),
                ));
            }
            MeasureKind::Topk { k, .. } if *k == 0 || *k > 100 => {
                return Err(ModelError::new(
                    at("k"),
                    format!("{k} is not between 1 and 100"),
                ));
            }
            MeasureKind::Sum { metric }
            | MeasureKind::Avg { metric }
            | MeasureKind::Min { metric }
            | MeasureKind::Max { metric }
            | MeasureKind::Percentile { metric, .. }
                if metric.trim().is_empty() =>
            {
                return Err(ModelError::new(at("metric"), "choose a metric"));
            }
            _ => {}
        }
        if let Some(w) = m.window {
            if w.minutes == 0 || w.minutes > 10_080 {
                return Err(ModelError::new(
                    at("window.minutes"),
                    "a moving window is 1 to 10080 minutes",
                ));
            }
        }
    }
    for (i, f) in b.filters.iter().enumerate() {
        let single = matches!(f.op, FilterOp::Eq | FilterOp::Neq | FilterOp::Prefix);
        if f.values.is_empty() {
            return Err(ModelError::new(
                format!("filters[{i}].values"),
                "give at least one value",
            ));
        }
        if single && f.values.len() > 1 && f.op != FilterOp::Eq && f.op != FilterOp::Neq {
            return Err(ModelError::new(
                format!("filters[{i}].values"),
                "prefix takes one value",
            ));
        }
        if f.dimension.trim().is_empty() {
            return Err(ModelError::new(
                format!("filters[{i}].dimension"),
                "choose a dimension",
            ));
        }
    }
    for (i, g) in b.group_by.iter().enumerate() {
        if g.is_empty() || g.starts_with('$') || g.contains('.') {
            return Err(ModelError::new(
                format!("groupBy[{i}]"),
                format!("'{g}' is not a dimension name: names are not empty and hold no '$' at the start and no '.'"),
            ));
        }
    }
    if let Some(t) = &b.top_n {
        if b.group_by.is_empty() {
            return Err(ModelError::new(
                "topN",
                "top-N ranks groups: add a group-by dimension, or remove top-N",
            ));
        }
        if t.limit == 0 {
            return Err(ModelError::new("topN.limit", "keep at least one series"));
        }
        if t.measure >= b.measures.len() {
            return Err(ModelError::new(
                "topN.measure",
                format!(
                    "there is no measure number {} (measures count from 0)",
                    t.measure
                ),
            ));
        }
    }
    if let Some(c) = &b.compare {
        parse_shift(&c.shift).map_err(|r| ModelError::new("compare.shift", r))?;
    }
    Ok(())
}

/// `30m`, `1h`, `1d`, `7d`, `2w` → milliseconds.
pub fn parse_shift(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 1h, 1d or 7d"))?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "'{text}' is not a duration such as 1h, 1d or 7d (units m, h, d, w)"
            ))
        }
    };
    if n <= 0 {
        return Err(format!("'{text}' must be a positive duration"));
    }
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= 100 * 365 * 86_400_000)
        .ok_or_else(|| format!("'{text}' is longer than a hundred years"))
}

impl MeasureKind {
    /// Counts, sums and extremes can be grouped by MongoDB; the rest need sketches.
    pub fn is_additive(&self) -> bool {
        matches!(
            self,
            MeasureKind::Count
                | MeasureKind::Rate
                | MeasureKind::Sum { .. }
                | MeasureKind::Avg { .. }
                | MeasureKind::Min { .. }
                | MeasureKind::Max { .. }
        )
    }

    /// The default series name.
    pub fn label(&self) -> String {
        match self {
            MeasureKind::Count => "count".into(),
            MeasureKind::Rate => "rate".into(),
            MeasureKind::Sum { metric } => format!("sum {metric}"),
            MeasureKind::Avg { metric } => format!("avg {metric}"),
            MeasureKind::Min { metric } => format!("min {metric}"),
            MeasureKind::Max { metric } => format!("max {metric}"),
            MeasureKind::Distinct { key } => format!("distinct {key}"),
            MeasureKind::Percentile { metric, percentile } => {
                format!("p{} {metric}", trim_float(*percentile))
            }
            MeasureKind::Topk { attribute, .. } => format!("top {attribute}"),
        }
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fixtures_shared_with_the_frontend_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queries");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            parse(&v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 7);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"eventType": "x", "measures": [{"type": "percentile", "metric": "t", "percentile": 120}]}),
                "measures[0].percentile",
            ),
            (
                json!({"eventType": "x", "measures": [{"type": "median", "metric": "t"}]}),
                "measures[0]",
            ),
            (
                json!({"eventType": "x", "filters": [{"dimension": "c", "op": "like", "values": ["a"]}]}),
                "filters[0].op",
            ),
            (
                json!({"eventType": "x", "granularity": "week"}),
                "granularity",
            ),
            (
                json!({"eventType": "x", "compare": {"shift": "yesterday"}}),
                "compare.shift",
            ),
            (
                json!({"eventType": "x", "groupBy": ["c"], "topN": {"limit": 3, "measure": 2}}),
                "topN.measure",
            ),
            (json!({"eventType": "x", "topN": {"limit": 3}}), "topN"),
            (json!({"measures": []}), ""),
            (json!({"eventType": "x", "colour": "red"}), "colour"),
            (
                json!({"mode": "pipeline", "collection": "metrics_minutely"}),
                "",
            ),
            (json!({"mode": "sql"}), "mode"),
        ];
        for (q, path) in cases {
            let e = parse(&q).unwrap_err();
            assert_eq!(e.path, path, "{q} → {e}");
            assert!(!e.reason.is_empty());
        }
        let e = parse(&json!({"eventType": "x", "colour": "red"})).unwrap_err();
        assert!(e.reason.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn grafana_keys_are_ignored_and_defaults_apply() {
        let q = parse(&json!({"refId": "A", "datasource": {"uid": "x"}, "eventType": "page_view", "intervalMs": 1000})).unwrap();
        let Query::Builder(b) = q else { panic!() };
        assert_eq!(b.measures, default_measures());
        assert_eq!(b.spec, "default");
        assert_eq!(parse_shift("7d").unwrap(), 7 * 86_400_000);
    }
}
