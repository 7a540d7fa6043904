//! Golden tests of alert conditions and the instance state machine:
//! `tests/alerting/*.json` give observations minute by minute and the
//! transitions expected, worked out by hand.

use mongopulse::alerting::condition::{evaluate, Observation};
use mongopulse::alerting::rules::Condition;
use mongopulse::alerting::state::{step, Phase, Transition};
use mongopulse::query::model::parse_shift;
use serde_json::Value;

fn name(t: Transition) -> &'static str {
    match t {
        Transition::Stay => "stay",
        Transition::Pend => "pend",
        Transition::Clear => "clear",
        Transition::Fire => "fire",
        Transition::Repeat => "repeat",
        Transition::Resolve => "resolve",
    }
}

fn duration_ms(v: &Value) -> i64 {
    match v.as_str() {
        None | Some("0m") => 0,
        Some(s) => parse_shift(s).unwrap(),
    }
}

#[test]
fn conditions_and_transitions_match_the_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alerting");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 7);
    for f in files {
        let g: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let condition: Condition = serde_json::from_value(g["condition"].clone()).unwrap();
        let for_ms = duration_ms(&g["for"]);
        let repeat = match duration_ms(&g["repeatInterval"]) {
            0 => None,
            r => Some(r),
        };
        let observations: Vec<(i64, Observation)> = if let Some(series) = g["series"].as_array() {
            let series: Vec<f64> = series.iter().map(|v| v.as_f64().unwrap()).collect();
            let n = g["baselineSize"].as_u64().unwrap() as usize;
            (n..series.len())
                .map(|i| {
                    (
                        i as i64,
                        Observation {
                            value: Some(series[i]),
                            previous: None,
                            baseline: series[i - n..i].to_vec(),
                        },
                    )
                })
                .collect()
        } else {
            g["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["minute"].as_i64().unwrap(),
                        Observation {
                            value: s["value"].as_f64(),
                            previous: s["previous"].as_f64(),
                            baseline: Vec::new(),
                        },
                    )
                })
                .collect()
        };
        let mut phase = Phase::Normal;
        let got: Vec<&str> = observations
            .iter()
            .map(|(minute, o)| {
                name(step(
                    &mut phase,
                    evaluate(&condition, o).holds,
                    minute * 60_000,
                    for_ms,
                    repeat,
                ))
            })
            .collect();
        let want: Vec<&str> = g["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{}: {}", f.display(), g["description"]);
    }
}
