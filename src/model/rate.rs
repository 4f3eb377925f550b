//! A tenant's message rate limit, as its `settings` say:
//!
//! ```json
//! { "rate_limit_per_sec": 5, "rate_limit_burst": 10 }
//! ```
//!
//! `rate_limit_per_sec` is how many of its messages may be answered per
//! second, fleet-wide (absent or null: no limit); `rate_limit_burst` how many
//! may go at once after a quiet spell (default: the rate, at least 1). A
//! setting that cannot be read is no limit, and is said so in the log.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

/// Slower than one message a day is not a rate anyone means.
const SLOWEST: f64 = 1.0 / 86_400.0;

impl RateLimit {
    pub fn of(settings: &Value) -> Result<Option<Self>, String> {
        let per_sec = match settings.get("rate_limit_per_sec") {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|r| r.is_finite() && *r >= SLOWEST)
                .ok_or_else(|| format!("rate_limit_per_sec is {v}, not a positive number"))?,
        };
        let burst = match settings.get("rate_limit_burst") {
            None | Some(Value::Null) => per_sec.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
            Some(v) => v
                .as_u64()
                .filter(|b| *b >= 1)
                .map(|b| u32::try_from(b).unwrap_or(u32::MAX))
                .ok_or_else(|| format!("rate_limit_burst is {v}, not a whole number of at least 1"))?,
        };
        Ok(Some(Self { per_sec, burst }))
    }

    /// The time between two messages at the rate (the GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.per_sec).min(86_400.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rate_limit_is_read_from_settings() {
        assert_eq!(RateLimit::of(&json!({})), Ok(None));
        assert_eq!(
            RateLimit::of(&json!({"rate_limit_per_sec": 5})),
            Ok(Some(RateLimit { per_sec: 5.0, burst: 5 }))
        );
        assert_eq!(
            RateLimit::of(&json!({"rate_limit_per_sec": 0.5, "rate_limit_burst": 3})),
            Ok(Some(RateLimit { per_sec: 0.5, burst: 3 }))
        );
        assert_eq!(
            RateLimit::of(&json!({"rate_limit_per_sec": 0.5})).map(|r| r.map(|r| r.burst)),
            Ok(Some(1))
        );
        for bad in [
            json!({"rate_limit_per_sec": 0}),
            json!({"rate_limit_per_sec": -3}),
            json!({"rate_limit_per_sec": "fast"}),
            json!({"rate_limit_per_sec": 1, "rate_limit_burst": 0}),
            json!({"rate_limit_per_sec": 1, "rate_limit_burst": 1.5}),
        ] {
            assert!(RateLimit::of(&bad).is_err(), "{bad}");
        }
        assert_eq!(RateLimit { per_sec: 4.0, burst: 1 }.interval(), Duration::from_millis(250));
    }
}
