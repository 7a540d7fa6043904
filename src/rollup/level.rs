//! Rollup levels and UTC bucket arithmetic. Pure functions of epoch milliseconds.

use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::store::CollectionNames;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Minute,
    Hour,
    Day,
    Month,
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

impl Level {
    pub const ALL: [Level; 4] = [Level::Minute, Level::Hour, Level::Day, Level::Month];

    /// The value of the `granularity` field of rollup documents.
    pub fn name(self) -> &'static str {
        match self {
            Level::Minute => "minute",
            Level::Hour => "hour",
            Level::Day => "day",
            Level::Month => "month",
        }
    }

    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The level built from this one, if any.
    pub fn parent(self) -> Option<Level> {
        match self {
            Level::Minute => Some(Level::Hour),
            Level::Hour => Some(Level::Day),
            Level::Day => Some(Level::Month),
            Level::Month => None,
        }
    }

    pub fn child(self) -> Option<Level> {
        match self {
            Level::Minute => None,
            Level::Hour => Some(Level::Minute),
            Level::Day => Some(Level::Hour),
            Level::Month => Some(Level::Day),
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn collection(self, names: &CollectionNames) -> &str {
        names.rollups()[self.index()]
    }

    /// Start (inclusive) of the UTC bucket holding `ms`.
    pub fn bucket_start(self, ms: i64) -> i64 {
        match self {
            Level::Minute => ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            Level::Hour => ms.div_euclid(HOUR_MS) * HOUR_MS,
            Level::Day => ms.div_euclid(DAY_MS) * DAY_MS,
            Level::Month => {
                let d = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
                month_start(d.year(), d.month())
            }
        }
    }

    /// End (exclusive) of the bucket that starts at `start`.
    pub fn bucket_end(self, start: i64) -> i64 {
        match self {
            Level::Minute => start + MINUTE_MS,
            Level::Hour => start + HOUR_MS,
            Level::Day => start + DAY_MS,
            Level::Month => {
                let d = Utc.timestamp_millis_opt(start).single().unwrap_or_default();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                month_start(y, m)
            }
        }
    }

    /// Nominal bucket length in milliseconds (months count as 30 days).
    pub fn nominal_ms(self) -> i64 {
        match self {
            Level::Minute => MINUTE_MS,
            Level::Hour => HOUR_MS,
            Level::Day => DAY_MS,
            Level::Month => 30 * DAY_MS,
        }
    }
}

fn month_start(year: i32, month: u32) -> i64 {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp_millis())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn buckets_are_utc_and_nest() {
        let t = ms("2024-12-31T23:59:59.999Z");
        assert_eq!(Level::Minute.bucket_start(t), ms("2024-12-31T23:59:00Z"));
        assert_eq!(Level::Hour.bucket_start(t), ms("2024-12-31T23:00:00Z"));
        assert_eq!(Level::Day.bucket_start(t), ms("2024-12-31T00:00:00Z"));
        assert_eq!(Level::Month.bucket_start(t), ms("2024-12-01T00:00:00Z"));
        assert_eq!(
            Level::Month.bucket_end(ms("2024-12-01T00:00:00Z")),
            ms("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            Level::Month.bucket_end(ms("2024-02-01T00:00:00Z")),
            ms("2024-03-01T00:00:00Z")
        );
        assert_eq!(
            Level::Minute.bucket_end(ms("2024-12-31T23:59:00Z")),
            ms("2025-01-01T00:00:00Z")
        );
        // Before 1970 still floors downwards.
        assert_eq!(Level::Minute.bucket_start(-1), -60_000);
    }

    #[test]
    fn parents_and_children() {
        assert_eq!(Level::Minute.parent(), Some(Level::Hour));
        assert_eq!(Level::Month.parent(), None);
        assert_eq!(Level::Day.child(), Some(Level::Hour));
        assert_eq!(Level::from_name("day"), Some(Level::Day));
    }
}
