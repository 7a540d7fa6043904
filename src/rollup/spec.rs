//! Rollup specs: what to group by and what to summarise. Read from the
//! daemon's config (`[[rollups.specs]]`), checked once at start.

use serde::{Deserialize, Serialize};

use super::error::RollupConfigError;

/// One rollup spec as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecConfig {
    /// Stored in every rollup document (`spec`) and named by queries.
    pub name: String,
    /// Event types this spec covers; empty means all.
    pub event_types: Vec<String>,
    /// The dimension tuple to group by. `eventType` is `metadata.eventType`;
    /// other names are keys of `metadata.dimensions`.
    pub dimensions: Vec<String>,
    /// Metrics summarised as sum/min/max/count; empty means every metric present.
    pub metrics: Vec<String>,
    /// Dimensions whose distinct values are counted (HyperLogLog).
    pub distinct: Vec<String>,
    /// Metrics with a quantile sketch (DDSketch).
    pub quantiles: Vec<String>,
    /// Relative error of quantiles, e.g. 0.01 for 1 %.
    pub quantile_relative_error: f64,
    /// Attributes whose most frequent values are kept.
    pub top_k: Vec<TopKConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKConfig {
    pub attribute: String,
    pub k: usize,
}

impl Default for SpecConfig {
    fn default() -> Self {
        SpecConfig {
            name: "default".into(),
            event_types: Vec::new(),
            dimensions: vec![
                "eventType".into(),
                "country".into(),
                "deviceType".into(),
                "browser".into(),
            ],
            metrics: Vec::new(),
            distinct: vec!["userId".into(), "sessionId".into()],
            quantiles: vec!["pageLoadTime".into(), "timeOnPage".into()],
            quantile_relative_error: 0.01,
            top_k: vec![TopKConfig {
                attribute: "landingPage".into(),
                k: 10,
            }],
        }
    }
}

/// A checked spec: a [`SpecConfig`] that passed [`Spec::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct Spec(SpecConfig);

impl std::ops::Deref for Spec {
    type Target = SpecConfig;

    fn deref(&self) -> &SpecConfig {
        &self.0
    }
}

impl Spec {
    pub fn new(c: &SpecConfig) -> Result<Spec, RollupConfigError> {
        let name = &c.name;
        let field_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('$')
                && !s.contains('.')
                && !s.contains('\0')
                && s.len() <= 64
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            return Err(RollupConfigError::BadSpecName(name.clone()));
        }
        let top_k_attributes: Vec<String> = c.top_k.iter().map(|t| t.attribute.clone()).collect();
        for (list, what) in [
            (&c.dimensions, "dimensions"),
            (&c.metrics, "metrics"),
            (&c.distinct, "distinct"),
            (&c.quantiles, "quantiles"),
            (&top_k_attributes, "top_k"),
        ] {
            if let Some(bad) = list.iter().find(|s| !field_ok(s)) {
                return Err(RollupConfigError::BadFieldName {
                    spec: name.clone(),
                    list: what,
                    entry: bad.clone(),
                });
            }
            let mut sorted = list.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != list.len() {
                return Err(RollupConfigError::NamedTwice {
                    spec: name.clone(),
                    list: what,
                });
            }
        }
        if c.dimensions.len() > super::aggregate::MAX_DIMENSIONS {
            return Err(RollupConfigError::TooManyDimensions { spec: name.clone() });
        }
        let e = c.quantile_relative_error;
        if !(e.is_finite() && e > 0.0 && e < 0.5) {
            return Err(RollupConfigError::BadRelativeError {
                spec: name.clone(),
                got: e,
            });
        }
        for t in &c.top_k {
            if !field_ok(&t.attribute) || t.k == 0 || t.k > 100 {
                return Err(RollupConfigError::BadTopK {
                    spec: name.clone(),
                    attribute: t.attribute.clone(),
                    k: t.k,
                });
            }
        }
        Ok(Spec(c.clone()))
    }

    pub fn covers(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Checks a list of specs: each valid, names unique, at least one.
pub fn check_specs(configs: &[SpecConfig]) -> Result<Vec<Spec>, RollupConfigError> {
    if configs.is_empty() {
        return Err(RollupConfigError::NoSpecs);
    }
    let specs = configs
        .iter()
        .map(Spec::new)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(RollupConfigError::SpecNamedTwice(s.name.clone()));
        }
    }
    Ok(specs)
}
