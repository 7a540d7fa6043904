//! Which documents a builder query reads, as one value with one meaning.
//!
//! In: a builder query's spec, event type, `filters` and ad-hoc filters. Out: a
//! [`RowFilter`], checked once, that pipeline generation writes as MongoDB's
//! `$match` and that [`CompiledFilter::matches`] applies in Rust to a
//! document's spec and dimensions (live channels read change-stream documents
//! with it), so a panel shows the same series live and not live.
//!
//! Each [`Test`] means what its generated condition means to MongoDB: a
//! condition on a dimension that is absent (or not a string) holds only for
//! the negative tests, a regular expression (`=~`, `!~`) searches anywhere in
//! the value as `$regex` does (anchor it with `^` or `$` to say otherwise),
//! and a prefix is the literal start of the value.

use regex::Regex;

use super::model::{BuilderQuery, FilterOp, ModelError};
use super::regex_check::check_regex;

/// The rows of one spec and event type whose dimensions pass every condition.
#[derive(Clone, Debug, PartialEq)]
pub struct RowFilter {
    pub spec: String,
    /// `None` reads every event type (the query's `*`).
    pub event_type: Option<String>,
    /// In the query's order: filters, then ad-hoc filters.
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub dimension: String,
    pub test: Test,
}

/// What a dimension's value must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Is(String),
    IsNot(String),
    OneOf(Vec<String>),
    NoneOf(Vec<String>),
    /// The value starts with this literal text.
    Prefix(String),
    /// A regular expression found anywhere in the value.
    Regex(String),
    /// No match of the regular expression in the value (or no value).
    NotRegex(String),
}

/// The query's filters as a [`RowFilter`], or the first one that cannot be read.
pub fn row_filter(q: &BuilderQuery) -> Result<RowFilter, ModelError> {
    let mut conditions = Vec::new();
    for (i, f) in q.filters.iter().enumerate() {
        if f.dimension.starts_with('$') || f.dimension.contains('.') {
            return Err(ModelError::new(
                format!("filters[{i}].dimension"),
                format!("'{}' is not a dimension name", f.dimension),
            ));
        }
        let mut values = expand_values(&f.values);
        let test = match (f.op, values.len()) {
            (FilterOp::Eq, 1) => Test::Is(values.remove(0)),
            (FilterOp::Neq, 1) => Test::IsNot(values.remove(0)),
            (FilterOp::Eq | FilterOp::In, _) => Test::OneOf(values),
            (FilterOp::Neq | FilterOp::Nin, _) => Test::NoneOf(values),
            (FilterOp::Prefix, 1) => Test::Prefix(values.remove(0)),
            (FilterOp::Prefix, _) => {
                return Err(ModelError::new(
                    format!("filters[{i}].values"),
                    "prefix takes one value",
                ))
            }
        };
        conditions.push(Condition {
            dimension: f.dimension.clone(),
            test,
        });
    }
    for (i, a) in q.adhoc_filters.iter().enumerate() {
        if a.key.is_empty() || a.key.starts_with('$') || a.key.contains('.') {
            return Err(ModelError::new(
                format!("adhocFilters[{i}].key"),
                format!("'{}' is not a dimension name: names are not empty and hold no '$' at the start and no '.'", a.key),
            ));
        }
        let value = a.value.clone();
        if matches!(a.operator.as_str(), "=~" | "!~") {
            check_regex(&value)
                .map_err(|reason| ModelError::new(format!("adhocFilters[{i}].value"), reason))?;
        }
        let test = match a.operator.as_str() {
            "=" => Test::Is(value),
            "!=" => Test::IsNot(value),
            "=~" => Test::Regex(value),
            "!~" => Test::NotRegex(value),
            other => {
                return Err(ModelError::new(
                    format!("adhocFilters[{i}].operator"),
                    format!("operator '{other}' is not supported; use =, !=, =~ or !~"),
                ))
            }
        };
        conditions.push(Condition {
            dimension: a.key.clone(),
            test,
        });
    }
    Ok(RowFilter {
        spec: q.spec.clone(),
        event_type: (q.event_type != "*").then(|| q.event_type.clone()),
        conditions,
    })
}

/// A value holding a JSON array (a multi-value variable formatted as
/// `${var:json}`) stands for all its items.
pub fn expand_values(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        match serde_json::from_str::<Vec<serde_json::Value>>(v) {
            Ok(items) if v.trim_start().starts_with('[') => {
                out.extend(items.into_iter().map(|i| match i {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }))
            }
            _ => out.push(v.clone()),
        }
    }
    out.dedup();
    out
}

/// MongoDB runs `$regex` with PCRE; Rust runs it with the `regex` crate, whose
/// syntax is PCRE's less lookaround and backreferences. A pattern the crate
/// cannot read is refused, never approximated, so that Rust and MongoDB never
/// disagree about a row.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        format!(
            "the regular expression '{pattern}' cannot be applied to a live panel ({}); \
             live panels read regular expressions without lookaround or backreferences: \
             simplify it, or turn live off",
            e.to_string().lines().last().unwrap_or("invalid")
        )
    })
}

/// A [`RowFilter`] with its regular expressions compiled, to test many documents.
pub struct CompiledFilter {
    filter: RowFilter,
    /// Aligned with `filter.conditions`; `Some` for the regex tests.
    regexes: Vec<Option<Regex>>,
}

impl CompiledFilter {
    pub fn new(filter: &RowFilter) -> Result<CompiledFilter, String> {
        let regexes = filter
            .conditions
            .iter()
            .map(|c| match &c.test {
                Test::Regex(p) | Test::NotRegex(p) => compile_regex(p).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledFilter {
            filter: filter.clone(),
            regexes,
        })
    }

    /// Whether a document of `spec` with these dimensions is one the query reads.
    pub fn matches(&self, spec: Option<&str>, dimensions: &bson::Document) -> bool {
        if spec != Some(self.filter.spec.as_str()) {
            return false;
        }
        if let Some(event_type) = &self.filter.event_type {
            if dimensions.get_str("eventType").ok() != Some(event_type.as_str()) {
                return false;
            }
        }
        self.filter
            .conditions
            .iter()
            .zip(&self.regexes)
            .all(|(c, re)| {
                let value = dimensions.get_str(&c.dimension).ok();
                let found = |re: &Option<Regex>| match (re, value) {
                    (Some(re), Some(v)) => re.is_match(v),
                    _ => false,
                };
                match &c.test {
                    Test::Is(x) => value == Some(x.as_str()),
                    Test::IsNot(x) => value != Some(x.as_str()),
                    Test::OneOf(xs) => value.is_some_and(|v| xs.iter().any(|x| x == v)),
                    Test::NoneOf(xs) => !value.is_some_and(|v| xs.iter().any(|x| x == v)),
                    Test::Prefix(p) => value.is_some_and(|v| v.starts_with(p.as_str())),
                    Test::Regex(_) => found(re),
                    Test::NotRegex(_) => !found(re),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::model::{parse, Query};
    use bson::doc;

    fn filter(v: serde_json::Value) -> CompiledFilter {
        let mut q = serde_json::json!({"eventType": "page_view"});
        if let (Some(q), Some(extra)) = (q.as_object_mut(), v.as_object()) {
            q.extend(extra.clone());
        }
        let Query::Builder(b) = parse(&q).unwrap() else {
            panic!("not a builder query")
        };
        CompiledFilter::new(&row_filter(&b).unwrap()).unwrap()
    }

    fn adhoc(operator: &str, value: &str) -> CompiledFilter {
        filter(serde_json::json!({
            "adhocFilters": [{ "key": "country", "operator": operator, "value": value }]
        }))
    }

    fn op(op: &str, values: &[&str]) -> CompiledFilter {
        filter(serde_json::json!({
            "filters": [{ "dimension": "country", "op": op, "values": values }]
        }))
    }

    fn dims(country: Option<&str>) -> bson::Document {
        let mut d = doc! { "eventType": "page_view", "browser": "Chrome" };
        if let Some(c) = country {
            d.insert("country", c);
        }
        d
    }

    /// Which of FR, DE, US and an absent country pass.
    fn passing(f: &CompiledFilter) -> Vec<&'static str> {
        [Some("FR"), Some("DE"), Some("US"), None]
            .into_iter()
            .filter(|c| f.matches(Some("default"), &dims(*c)))
            .map(|c| c.unwrap_or("absent"))
            .collect()
    }

    #[test]
    fn spec_and_event_type_come_first() {
        let f = adhoc("=", "FR");
        assert!(f.matches(Some("default"), &dims(Some("FR"))));
        assert!(!f.matches(Some("other"), &dims(Some("FR"))));
        assert!(!f.matches(None, &dims(Some("FR"))));
        let click = doc! { "eventType": "click", "country": "FR" };
        assert!(!f.matches(Some("default"), &click));
        let every_type = filter(serde_json::json!({"eventType": "*"}));
        assert!(every_type.matches(Some("default"), &click));
    }

    #[test]
    fn each_adhoc_operator_means_what_its_match_means() {
        assert_eq!(passing(&adhoc("=", "FR")), ["FR"]);
        assert_eq!(passing(&adhoc("!=", "FR")), ["DE", "US", "absent"]);
        assert_eq!(passing(&adhoc("=~", "^D|US$")), ["DE", "US"]);
        assert_eq!(passing(&adhoc("!~", "^D|US$")), ["FR", "absent"]);
    }

    #[test]
    fn each_builder_operator_means_what_its_match_means() {
        assert_eq!(passing(&op("eq", &["FR"])), ["FR"]);
        assert_eq!(passing(&op("eq", &["[\"FR\",\"DE\"]"])), ["FR", "DE"]);
        assert_eq!(passing(&op("neq", &["FR"])), ["DE", "US", "absent"]);
        assert_eq!(passing(&op("in", &["US", "DE"])), ["DE", "US"]);
        assert_eq!(passing(&op("nin", &["US", "DE"])), ["FR", "absent"]);
        assert_eq!(passing(&op("prefix", &["U"])), ["US"]);
    }

    #[test]
    fn a_regex_searches_the_whole_value_as_mongodb_regex_does() {
        // `$regex` is not anchored: it finds the pattern anywhere.
        assert_eq!(passing(&adhoc("=~", "R")), ["FR"]);
        assert_eq!(passing(&adhoc("=~", "^R")), Vec::<&str>::new());
        assert_eq!(passing(&adhoc("=~", "F$")), Vec::<&str>::new());
        assert_eq!(passing(&adhoc("=~", "^FR$")), ["FR"]);
        assert_eq!(passing(&adhoc("!~", "S")), ["FR", "DE", "absent"]);
        // Not the prefix of its literal start.
        assert_eq!(passing(&adhoc("=~", "U.*x")), Vec::<&str>::new());
    }

    #[test]
    fn a_prefix_is_literal_and_anchored() {
        let f = filter(serde_json::json!({
            "filters": [{ "dimension": "browser", "op": "prefix", "values": ["Chr.me"] }]
        }));
        let with = |b: &str| doc! { "eventType": "page_view", "browser": b };
        assert!(f.matches(Some("default"), &with("Chr.me 120")));
        assert!(
            !f.matches(Some("default"), &with("Chrome")),
            "the dot is literal"
        );
        assert!(!f.matches(Some("default"), &with("Old Chr.me")), "anchored");
    }

    #[test]
    fn conditions_on_one_dimension_all_hold() {
        let f = filter(serde_json::json!({
            "filters": [
                { "dimension": "country", "op": "in", "values": ["FR", "DE", "US"] },
                { "dimension": "country", "op": "neq", "values": ["US"] }
            ],
            "adhocFilters": [{ "key": "country", "operator": "!=", "value": "DE" }]
        }));
        assert_eq!(passing(&f), ["FR"]);
    }

    #[test]
    fn a_value_that_is_not_a_string_is_no_value() {
        let f = adhoc("=~", ".");
        let d = doc! { "eventType": "page_view", "country": 33 };
        assert!(!f.matches(Some("default"), &d));
        assert!(adhoc("!=", "33").matches(Some("default"), &d));
    }

    #[test]
    fn bad_filters_name_their_place() {
        let q = |v: serde_json::Value| {
            let Query::Builder(b) = parse(&v).unwrap() else {
                panic!("not a builder query")
            };
            row_filter(&b).unwrap_err().path
        };
        assert_eq!(
            q(
                serde_json::json!({"eventType": "x", "adhocFilters": [{"key": "c", "operator": "<", "value": "1"}]})
            ),
            "adhocFilters[0].operator"
        );
        assert_eq!(
            q(
                serde_json::json!({"eventType": "x", "filters": [{"dimension": "a.b", "op": "eq", "values": ["1"]}]})
            ),
            "filters[0].dimension"
        );
        assert_eq!(
            q(
                serde_json::json!({"eventType": "x", "filters": [{"dimension": "a", "op": "prefix", "values": ["[\"1\",\"2\"]"]}]})
            ),
            "filters[0].values"
        );
        let lookaround = row_filter(&{
            let Query::Builder(b) = parse(&serde_json::json!({"eventType": "x", "adhocFilters": [{"key": "c", "operator": "=~", "value": "^(?!FR)"}]})).unwrap() else {
                panic!("not a builder query")
            };
            b
        })
        .unwrap();
        assert!(CompiledFilter::new(&lookaround).is_err());
    }

    #[test]
    fn catastrophic_regexes_and_odd_keys_are_refused_before_mongodb_sees_them() {
        let refused = |adhoc: serde_json::Value| {
            let Query::Builder(b) =
                parse(&serde_json::json!({"eventType": "x", "adhocFilters": [adhoc]})).unwrap()
            else {
                panic!("not a builder query")
            };
            row_filter(&b).unwrap_err()
        };
        for op in ["=~", "!~"] {
            let e = refused(serde_json::json!({"key": "c", "operator": op, "value": "(a+)+$"}));
            assert_eq!(e.path, "adhocFilters[0].value");
            assert!(e.reason.contains("without bound"), "{e}");
        }
        let e = refused(serde_json::json!({"key": "c", "operator": "=~", "value": "(a)\\1"}));
        assert!(e.reason.contains("backreference"), "{e}");
        for key in ["$where", "a.b", ""] {
            let e = refused(serde_json::json!({"key": key, "operator": "=", "value": "1"}));
            assert_eq!(e.path, "adhocFilters[0].key", "{key}");
        }
    }
}
