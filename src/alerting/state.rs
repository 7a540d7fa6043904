//! The state machine of one alert instance: normal → pending → firing →
//! resolved (→ normal). Pure: the caller passes the evaluation time.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub enum Phase {
    Normal,
    Pending { since: i64 },
    Firing { since: i64, notified: i64 },
}

/// What happened at one evaluation; every variant but `Stay` is stored, and
/// `Fire`, `Repeat` and `Resolve` are notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Stay,
    /// The condition started to hold; waiting for `for`.
    Pend,
    /// Pending, but the condition stopped holding before `for` elapsed.
    Clear,
    /// Firing: a new episode.
    Fire,
    /// Still firing, and the repeat interval elapsed since the last notification.
    Repeat,
    /// The episode is over.
    Resolve,
}

impl Transition {
    /// The state name stored in `alerts`.
    pub fn state(self) -> &'static str {
        match self {
            Transition::Stay => "unchanged",
            Transition::Pend => "pending",
            Transition::Clear => "normal",
            Transition::Fire | Transition::Repeat => "firing",
            Transition::Resolve => "resolved",
        }
    }
}

/// Advances `phase` for an evaluation at `t` (ms).
pub fn step(
    phase: &mut Phase,
    holds: bool,
    t: i64,
    for_ms: i64,
    repeat_ms: Option<i64>,
) -> Transition {
    match (*phase, holds) {
        (Phase::Normal, false) => Transition::Stay,
        (Phase::Normal, true) if for_ms == 0 => {
            *phase = Phase::Firing {
                since: t,
                notified: t,
            };
            Transition::Fire
        }
        (Phase::Normal, true) => {
            *phase = Phase::Pending { since: t };
            Transition::Pend
        }
        (Phase::Pending { .. }, false) => {
            *phase = Phase::Normal;
            Transition::Clear
        }
        (Phase::Pending { since }, true) => {
            if t - since >= for_ms {
                *phase = Phase::Firing {
                    since: t,
                    notified: t,
                };
                Transition::Fire
            } else {
                Transition::Stay
            }
        }
        (Phase::Firing { since, notified }, true) => match repeat_ms {
            Some(r) if t - notified >= r => {
                *phase = Phase::Firing { since, notified: t };
                Transition::Repeat
            }
            _ => Transition::Stay,
        },
        (Phase::Firing { .. }, false) => {
            *phase = Phase::Normal;
            Transition::Resolve
        }
    }
}
