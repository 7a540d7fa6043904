//! Whether a condition holds for one observation. Pure.
//!
//! Percent change from a zero baseline: 0 → 0 is no change (0 %); 0 → anything
//! above is an infinite rise (fires any "rise" rule, never a "drop" rule).
//! Anomaly: the z-score of the current value against the mean and standard
//! deviation of the baseline minutes; a flat baseline (σ = 0) makes any
//! departure from it an anomaly; fewer than 5 baseline points never fire.

use super::rules::{Condition, Direction};

/// What was measured for one instance at one evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// The measure over the rule's window (`None`: no data).
    pub value: Option<f64>,
    /// The measure over the window before (for `change`).
    pub previous: Option<f64>,
    /// One value per minute before the window (for `anomaly`).
    pub baseline: Vec<f64>,
}

/// The verdict, and the number to show (the value, the percent change or the z-score).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub holds: bool,
    pub shown: Option<f64>,
}

pub fn evaluate(c: &Condition, o: &Observation) -> Verdict {
    let v = o.value;
    match c {
        Condition::Above { threshold } => Verdict {
            holds: v.is_some_and(|v| v > *threshold),
            shown: v,
        },
        Condition::Below { threshold } => Verdict {
            holds: v.is_some_and(|v| v < *threshold),
            shown: v,
        },
        Condition::Equal { value, tolerance } => Verdict {
            holds: v.is_some_and(|v| (v - value).abs() <= *tolerance),
            shown: v,
        },
        Condition::Change { percent } => {
            let now = v.unwrap_or(0.0);
            let before = o.previous.unwrap_or(0.0);
            let change = if before == 0.0 {
                if now == 0.0 {
                    0.0
                } else {
                    f64::INFINITY * now.signum()
                }
            } else {
                (now - before) / before.abs() * 100.0
            };
            let holds = if *percent < 0.0 {
                change <= *percent
            } else {
                change >= *percent
            };
            Verdict {
                holds,
                shown: Some(change),
            }
        }
        Condition::Absent { .. } => Verdict {
            holds: v.unwrap_or(0.0) == 0.0,
            shown: Some(v.unwrap_or(0.0)),
        },
        Condition::Anomaly {
            sigmas, direction, ..
        } => {
            let (Some(now), true) = (v, o.baseline.len() >= 5) else {
                return Verdict {
                    holds: false,
                    shown: None,
                };
            };
            let n = o.baseline.len() as f64;
            let mean = o.baseline.iter().sum::<f64>() / n;
            let var = o.baseline.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            let sd = var.sqrt().max(1e-9 * mean.abs().max(1.0));
            let z = (now - mean) / sd;
            let holds = match direction {
                Direction::Both => z.abs() > *sigmas,
                Direction::Above => z > *sigmas,
                Direction::Below => z < -*sigmas,
            };
            Verdict {
                holds,
                shown: Some(z),
            }
        }
    }
}
