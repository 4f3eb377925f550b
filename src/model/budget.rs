//! A tenant's token budget, as its `settings` say (the admin app writes them):
//!
//! ```json
//! { "token_budget": 200000, "token_budget_period": "day", "over_budget": "handoff" }
//! ```
//!
//! `token_budget` is the tokens its messages may spend on a paid responder per
//! period (absent or null: no budget; 0: none at all); `token_budget_period` is
//! `hour`, `day` (the default) or `month`, calendar periods in UTC;
//! `over_budget` says what a message gets once the period's tokens are spent:
//! `handoff` (the default: the holding reply, and the conversation handed to
//! a human) or `wait` (parked until the period ends, when it ends within
//! half of `worker.max_message_age_secs`; the holding reply otherwise, since
//! no message waits longer than that). A setting that cannot be
//! read is no budget, and is said so in the log: the admin app's typo must
//! not stop a tenant's customers being answered.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    Handoff,
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    pub tokens: u64,
    pub period: Period,
    pub over: OverBudget,
}

/// The period a moment falls in: its name (part of a Redis key) and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub ends: DateTime<Utc>,
}

impl TokenBudget {
    /// The tenant's budget, if its settings name one; `Err` says what is wrong
    /// with a setting that cannot be read.
    pub fn of(settings: &Value) -> Result<Option<Self>, String> {
        let tokens = match settings.get("token_budget") {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => {
                v.as_u64().ok_or_else(|| format!("token_budget is {v}, not a whole number of tokens"))?
            }
        };
        let word = |name: &str| match settings.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(word)) => Ok(Some(word.as_str())),
            Some(other) => Err(format!("{name} is {other}, not a word")),
        };
        let period = match word("token_budget_period")? {
            None | Some("day") => Period::Day,
            Some("hour") => Period::Hour,
            Some("month") => Period::Month,
            Some(other) => return Err(format!("token_budget_period is {other:?}, not hour, day or month")),
        };
        let over = match word("over_budget")? {
            None | Some("handoff") => OverBudget::Handoff,
            Some("wait") => OverBudget::Wait,
            Some(other) => return Err(format!("over_budget is {other:?}, not handoff or wait")),
        };
        Ok(Some(Self { tokens, period, over }))
    }
}

impl Period {
    /// The period `now` falls in.
    pub fn window(self, now: DateTime<Utc>) -> Window {
        let hour = now.date_naive().and_hms_opt(now.hour(), 0, 0).map(|t| Utc.from_utc_datetime(&t));
        let hour = hour.unwrap_or(now);
        match self {
            Period::Hour => {
                Window { name: hour.format("h%Y%m%d%H").to_string(), ends: hour + Duration::hours(1) }
            }
            Period::Day => {
                let day = hour - Duration::hours(i64::from(now.hour()));
                Window { name: day.format("d%Y%m%d").to_string(), ends: day + Duration::days(1) }
            }
            Period::Month => {
                let (year, month) = (now.year(), now.month());
                let next = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                let ends = Utc.with_ymd_and_hms(next.0, next.1, 1, 0, 0, 0).single().unwrap_or(now);
                Window { name: now.format("m%Y%m").to_string(), ends }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_budget_is_read_from_settings_with_its_defaults() {
        assert_eq!(TokenBudget::of(&json!({})), Ok(None));
        assert_eq!(TokenBudget::of(&json!({"token_budget": null})), Ok(None));
        assert_eq!(
            TokenBudget::of(&json!({"token_budget": 0})),
            Ok(Some(TokenBudget { tokens: 0, period: Period::Day, over: OverBudget::Handoff }))
        );
        assert_eq!(
            TokenBudget::of(
                &json!({"token_budget": 5000, "token_budget_period": "hour", "over_budget": "wait"})
            ),
            Ok(Some(TokenBudget { tokens: 5000, period: Period::Hour, over: OverBudget::Wait }))
        );
        for bad in [
            json!({"token_budget": -1}),
            json!({"token_budget": "lots"}),
            json!({"token_budget": 1.5}),
            json!({"token_budget": 10, "token_budget_period": "week"}),
            json!({"token_budget": 10, "over_budget": "drop"}),
            json!({"token_budget": 10, "token_budget_period": 1}),
            json!({"token_budget": 10, "over_budget": true}),
        ] {
            assert!(TokenBudget::of(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_are_calendar_ones_in_utc() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).single().expect("a time");
        assert_eq!(
            Period::Hour.window(at),
            Window { name: "h2026123123".into(), ends: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() }
        );
        assert_eq!(
            Period::Day.window(at),
            Window { name: "d20261231".into(), ends: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() }
        );
        assert_eq!(
            Period::Month.window(at),
            Window { name: "m202612".into(), ends: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() }
        );
        let mid = Utc.with_ymd_and_hms(2026, 2, 10, 8, 30, 0).single().expect("a time");
        assert_eq!(Period::Month.window(mid).ends, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        assert_eq!(Period::Day.window(mid).ends, Utc.with_ymd_and_hms(2026, 2, 11, 0, 0, 0).unwrap());
    }
}
