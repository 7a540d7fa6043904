//! Pipeline mode's checks. In: a user's aggregation pipeline (JSON text with
//! time macros) and the collection it names. Out: the pipeline's stages as
//! BSON, with the macros expanded to the panel's range, or a [`ModelError`]
//! when it names another collection than the data source's (or another
//! database), could write, could run JavaScript, or holds a regular expression
//! that [`super::regex_check`] refuses. `run::run_pipeline` runs it; its rows become columns
//! in `decode` and a frame in `frames`.

use bson::{Bson, Document};

use super::model::{ModelError, PipelineQuery};
use super::regex_check::check_regex;
use crate::store::CollectionNames;

/// Stages and operators that write or run code: refused.
const FORBIDDEN: &[&str] = &["$out", "$merge", "$function", "$accumulator", "$where"];

/// Expands the macros and parses the pipeline.
pub fn prepare(
    q: &PipelineQuery,
    names: &CollectionNames,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
) -> Result<Vec<Document>, ModelError> {
    let allowed = allowed_collections(names);
    if !allowed.iter().any(|c| *c == q.collection) {
        return Err(ModelError::new(
            "collection",
            format!(
                "'{}' is not one of this data source's collections ({})",
                q.collection,
                allowed.join(", ")
            ),
        ));
    }
    let text = expand_macros(&q.pipeline, from_ms, to_ms, interval_ms.max(1))
        .map_err(|r| ModelError::new("pipeline", r))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        ModelError::new("pipeline", format!("not valid JSON after expanding macros: {e}. The pipeline must be a JSON array of stages such as [{{\"$match\": $__timeFilter(timestamp)}}]"))
    })?;
    let serde_json::Value::Array(stages) = value else {
        return Err(ModelError::new(
            "pipeline",
            "must be a JSON array of stages",
        ));
    };
    let mut out = Vec::with_capacity(stages.len());
    for (i, stage) in stages.into_iter().enumerate() {
        let bson = Bson::try_from(stage).map_err(|e| {
            ModelError::new(
                format!("pipeline[{i}]"),
                format!("not valid extended JSON: {e}"),
            )
        })?;
        let Bson::Document(d) = bson else {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                "each stage must be an object such as {\"$match\": {…}}",
            ));
        };
        let stage = Bson::Document(d);
        if let Some(op) = find_forbidden(&stage) {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                format!(
                    "{op} is not allowed: pipeline queries are read-only and run no JavaScript \
                     (refused anywhere, sub-pipelines included: $out, $merge, $function, \
                     $accumulator, $where); use $match, $group, $project, $lookup and the \
                     other read-only stages"
                ),
            ));
        }
        if let Some((op, what)) = foreign_collection(&stage, &allowed) {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                format!("{op} may not read {what}: $lookup, $graphLookup and $unionWith may read only this data source's collections in its own database ({})", allowed.join(", ")),
            ));
        }
        if let Some((op, why)) = refused_regex(&stage) {
            return Err(ModelError::new(
                format!("pipeline[{i}]"),
                format!("{op}: {why}"),
            ));
        }
        let Bson::Document(d) = stage else {
            continue;
        };
        out.push(d);
    }
    Ok(out)
}

pub fn allowed_collections(n: &CollectionNames) -> Vec<&str> {
    vec![
        &n.metrics_minutely,
        &n.metrics_hourly,
        &n.metrics_daily,
        &n.metrics_monthly,
        &n.sessions,
        &n.events,
        &n.alerts,
        &n.alert_rules,
        &n.pipeline_stats,
        &n.dead_letters,
    ]
}

/// A stage that reads what the data source may not, and what it names:
/// a collection not allowed, or any collection of another database (the
/// `from: {db, coll}` form of `$lookup` and `$graphLookup`), searched in
/// sub-pipelines (`$facet`, `$lookup`, `$unionWith`) too.
fn foreign_collection(b: &Bson, allowed: &[&str]) -> Option<(String, String)> {
    match b {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            let named = match (k.as_str(), v) {
                ("$lookup" | "$graphLookup", Bson::Document(spec)) => spec.get("from"),
                ("$unionWith", Bson::Document(spec)) => spec.get("coll"),
                ("$unionWith", other) => Some(other),
                _ => None,
            };
            let refused = match named {
                Some(Bson::String(c)) if allowed.contains(&c.as_str()) => None,
                Some(Bson::String(c)) => Some(format!("'{c}'")),
                Some(Bson::Document(ns)) => Some(format!(
                    "{} in database '{}'",
                    ns.get_str("coll").unwrap_or("?"),
                    ns.get_str("db").unwrap_or("?")
                )),
                Some(other) => Some(format!("{other}")),
                None => None,
            };
            match refused {
                Some(what) => Some((k.clone(), what)),
                None => foreign_collection(v, allowed),
            }
        }),
        Bson::Array(items) => items.iter().find_map(|i| foreign_collection(i, allowed)),
        _ => None,
    }
}

/// Operators whose argument document holds a pattern in `regex`.
const REGEX_EXPRESSIONS: &[&str] = &["$regexMatch", "$regexFind", "$regexFindAll"];

/// The first regular expression that [`check_regex`] refuses, as
/// (operator, reason): `$regex` in a `$match`, the `regex` of the aggregation
/// expressions, and BSON regular expressions anywhere.
fn refused_regex(b: &Bson) -> Option<(String, String)> {
    let pattern_of = |v: &Bson| match v {
        Bson::String(p) => Some(p.clone()),
        Bson::RegularExpression(r) => Some(r.pattern.clone()),
        _ => None,
    };
    match b {
        Bson::RegularExpression(r) => check_regex(&r.pattern)
            .err()
            .map(|why| ("a regular expression".to_string(), why)),
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            let pattern = if k == "$regex" {
                pattern_of(v)
            } else if REGEX_EXPRESSIONS.contains(&k.as_str()) {
                match v {
                    Bson::Document(args) => args.get("regex").and_then(pattern_of),
                    _ => None,
                }
            } else {
                None
            };
            match pattern.map(|p| check_regex(&p)) {
                Some(Err(why)) => Some((k.clone(), why)),
                _ => refused_regex(v),
            }
        }),
        Bson::Array(items) => items.iter().find_map(refused_regex),
        _ => None,
    }
}

fn find_forbidden(b: &Bson) -> Option<&'static str> {
    match b {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            FORBIDDEN
                .iter()
                .find(|f| **f == k)
                .copied()
                .or_else(|| find_forbidden(v))
        }),
        Bson::Array(items) => items.iter().find_map(find_forbidden),
        _ => None,
    }
}

fn date(ms: i64) -> String {
    let iso = chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    format!("{{\"$date\": \"{iso}\"}}")
}

/// The first `n` characters of `text`, for quoting it in an error. By
/// characters, not bytes: a byte count can fall inside a character (a panic the
/// fuzzer found, fuzz/regressions/pipeline_check/).
fn first_chars(text: &str, n: usize) -> &str {
    text.char_indices()
        .nth(n)
        .map_or(text, |(end, _)| &text[..end])
}

/// `$__timeFilter(f)`, `$__timeGroup(f)`, `$__timeFrom`, `$__timeTo`, `$__interval_ms`.
pub fn expand_macros(
    text: &str,
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut rest = text;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let (name, consumed_name) = ["$__timeFilter", "$__timeGroup", "$__timeFrom", "$__timeTo", "$__interval_ms"]
            .iter()
            .find(|m| after.starts_with(**m))
            .map(|m| (*m, m.len()))
            .ok_or_else(|| format!("unknown macro at '{}': use $__timeFilter(field), $__timeGroup(field), $__timeFrom, $__timeTo or $__interval_ms", first_chars(after, 20)))?;
        let tail = &after[consumed_name..];
        match name {
            "$__timeFilter" | "$__timeGroup" => {
                let inner = tail
                    .strip_prefix('(')
                    .ok_or_else(|| format!("{name} needs a field: {name}(timestamp)"))?;
                let close = inner
                    .find(')')
                    .ok_or_else(|| format!("{name}( is not closed"))?;
                let field = inner[..close]
                    .trim()
                    .trim_matches('"')
                    .trim_start_matches('$');
                if field.is_empty()
                    || !field
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    return Err(format!(
                        "{name}({}) needs a field name such as timestamp",
                        &inner[..close]
                    ));
                }
                if name == "$__timeFilter" {
                    out.push_str(&format!(
                        "{{\"{field}\": {{\"$gte\": {}, \"$lt\": {}}}}}",
                        date(from_ms),
                        date(to_ms)
                    ));
                } else {
                    out.push_str(&format!(
                        "{{\"$subtract\": [\"${field}\", {{\"$mod\": [{{\"$subtract\": [\"${field}\", {}]}}, {interval_ms}]}}]}}",
                        date(0)
                    ));
                }
                rest = &inner[close + 1..];
            }
            "$__timeFrom" => {
                out.push_str(&date(from_ms));
                rest = tail;
            }
            "$__timeTo" => {
                out.push_str(&date(to_ms));
                rest = tail;
            }
            _ => {
                out.push_str(&interval_ms.to_string());
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::model::Format;

    fn q(pipeline: &str) -> PipelineQuery {
        PipelineQuery {
            collection: "metrics_minutely".into(),
            pipeline: pipeline.into(),
            time_field: None,
            format: Format::Table,
        }
    }

    #[test]
    fn macros_expand_to_the_panel_range() {
        let from = 1_733_752_800_000;
        let to = from + 3_600_000;
        let stages = prepare(&q(r#"[{"$match": $__timeFilter(timestamp)}, {"$group": {"_id": $__timeGroup(timestamp), "n": {"$sum": 1}}}, {"$match": {"x": {"$lt": $__timeTo, "$gte": $__timeFrom}, "i": $__interval_ms}}]"#), &CollectionNames::default(), from, to, 60_000).unwrap();
        let m = stages[0]
            .get_document("$match")
            .unwrap()
            .get_document("timestamp")
            .unwrap();
        assert_eq!(m.get_datetime("$gte").unwrap().timestamp_millis(), from);
        assert_eq!(m.get_datetime("$lt").unwrap().timestamp_millis(), to);
        let g = stages[1]
            .get_document("$group")
            .unwrap()
            .get_document("_id")
            .unwrap();
        assert!(g.contains_key("$subtract"));
        assert_eq!(
            stages[2].get_document("$match").unwrap().get("i"),
            Some(&Bson::Int32(60_000))
        );
    }

    #[test]
    fn another_database_is_refused() {
        // Found by the fuzz target's invariant: a `from` that is a document was let through.
        for p in [
            r#"[{"$lookup": {"from": {"db": "other", "coll": "x"}, "as": "y", "pipeline": []}}]"#,
            r#"[{"$unionWith": {"coll": {"db": "other", "coll": "x"}}}]"#,
            r#"[{"$unionWith": 7}]"#,
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert_eq!(e.path, "pipeline[0]", "{p}");
            assert!(
                e.reason
                    .contains("may read only this data source's collections"),
                "{e}"
            );
        }
        let ours = r#"[{"$lookup": {"from": "metrics_hourly", "as": "y", "pipeline": []}}]"#;
        assert!(prepare(&q(ours), &CollectionNames::default(), 0, 1, 1).is_ok());
    }

    #[test]
    fn an_unknown_macro_is_quoted_whole_characters() {
        // 'ʚ' takes bytes 19 and 20 after "$__": a quote cut at byte 20 panicked.
        let text = "[{\"t\": $__timeGroriter\": \u{0}ʚ;iterId\"}]";
        let e = prepare(&q(text), &CollectionNames::default(), 0, 1, 1).unwrap_err();
        assert_eq!(e.path, "pipeline");
        assert!(
            e.reason
                .contains("unknown macro at '$__timeGroriter\": \u{0}ʚ'"),
            "{e}"
        );
        assert_eq!(first_chars("ééé", 2), "éé");
        assert_eq!(first_chars("ab", 20), "ab");
    }

    #[test]
    fn writes_and_javascript_are_refused() {
        for (p, op) in [
            (r#"[{"$match": {}}, {"$merge": {"into": "x"}}]"#, "$merge"),
            (r#"[{"$out": "x"}]"#, "$out"),
            (r#"[{"$match": {"$where": "1"}}]"#, "$where"),
            (
                r#"[{"$group": {"_id": 1, "x": {"$accumulator": {}}}}]"#,
                "$accumulator",
            ),
            (r#"[{"$project": {"x": {"$function": {}}}}]"#, "$function"),
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert!(
                e.reason.contains(op) && e.reason.contains("read-only"),
                "{e}"
            );
        }
        // Nested in sub-pipelines too.
        for (p, op) in [
            (
                r#"[{"$facet": {"a": [{"$match": {"$where": "sleep(1)"}}]}}]"#,
                "$where",
            ),
            (
                r#"[{"$lookup": {"from": "metrics_hourly", "as": "h", "pipeline": [{"$out": "x"}]}}]"#,
                "$out",
            ),
            (
                r#"[{"$unionWith": {"coll": "events", "pipeline": [{"$project": {"f": {"$function": {"body": "1", "args": [], "lang": "js"}}}}]}}]"#,
                "$function",
            ),
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert!(e.reason.contains(op), "{e}");
        }
        let e = prepare(
            &PipelineQuery {
                collection: "users".into(),
                ..q("[]")
            },
            &CollectionNames::default(),
            0,
            1,
            1,
        )
        .unwrap_err();
        assert_eq!(e.path, "collection");
    }

    #[test]
    fn other_databases_and_collections_are_refused() {
        for p in [
            r#"[{"$lookup": {"from": {"db": "other", "coll": "x"}, "as": "o", "pipeline": []}}]"#,
            r#"[{"$lookup": {"from": "users", "localField": "a", "foreignField": "b", "as": "o"}}]"#,
            r#"[{"$graphLookup": {"from": {"db": "admin", "coll": "system.users"}, "startWith": "$a", "connectFromField": "a", "connectToField": "b", "as": "o"}}]"#,
            r#"[{"$unionWith": "users"}]"#,
            r#"[{"$unionWith": {"coll": "users", "pipeline": []}}]"#,
            r#"[{"$facet": {"a": [{"$unionWith": {"coll": "metrics_daily", "pipeline": [{"$lookup": {"from": "secrets", "as": "s", "pipeline": []}}]}}]}}]"#,
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert!(e.reason.contains("may read only"), "{p}: {e}");
        }
        prepare(
            &q(r#"[{"$lookup": {"from": "metrics_hourly", "as": "h", "pipeline": []}}, {"$unionWith": {"coll": "metrics_daily", "pipeline": []}}]"#),
            &CollectionNames::default(),
            0,
            1,
            1,
        )
        .unwrap();
    }

    #[test]
    fn catastrophic_regexes_are_refused_wherever_they_are() {
        for (p, op) in [
            (
                r#"[{"$match": {"dimensions.country": {"$regex": "(a+)+$"}}}]"#,
                "$regex",
            ),
            (
                r#"[{"$match": {"dimensions.country": {"$regex": "(a*)*b", "$options": "i"}}}]"#,
                "",
            ),
            (
                r#"[{"$match": {"d": {"$regularExpression": {"pattern": "(x+x+)+y", "options": ""}}}}]"#,
                "a regular expression",
            ),
            (
                r#"[{"$project": {"m": {"$regexMatch": {"input": "$dimensions.c", "regex": "(\\w+\\s?)*$"}}}}]"#,
                "$regexMatch",
            ),
            (
                r#"[{"$project": {"m": {"$regexFindAll": {"input": "$x", "regex": "(a)\\1"}}}}]"#,
                "$regexFindAll",
            ),
            (
                r#"[{"$facet": {"f": [{"$project": {"m": {"$regexFind": {"input": "$x", "regex": "([a-z]+)*!"}}}}]}}]"#,
                "$regexFind",
            ),
        ] {
            let e = prepare(&q(p), &CollectionNames::default(), 0, 1, 1).unwrap_err();
            assert!(e.reason.contains(op), "{p}: {e}");
            assert!(
                e.reason.contains("without bound") || e.reason.contains("backreference"),
                "{p}: {e}"
            );
        }
        prepare(
            &q(r#"[{"$match": {"dimensions.country": {"$regex": "^(FR|DE)$"}}}, {"$project": {"m": {"$regexMatch": {"input": "$x", "regex": "a+b"}}}}]"#),
            &CollectionNames::default(),
            0,
            1,
            1,
        )
        .unwrap();
    }
}
