use std::time::Duration;

use chrono::{TimeZone, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::*;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 30).single().unwrap_or_default()
}

fn with_retry_after(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header value"));
    headers
}

fn verdict(status: u16, headers: &HeaderMap) -> Verdict {
    judge(StatusCode::from_u16(status).expect("status"), headers, now())
}

#[test]
fn statuses_are_judged_as_the_contract_says() {
    let none = HeaderMap::new();
    assert_eq!(verdict(200, &none), Verdict::Answer);
    assert_eq!(verdict(204, &none), Verdict::Answer, "a 2xx is read; an empty body then fails as unreadable");
    for redirect in [301, 302, 303, 307, 308] {
        assert_eq!(verdict(redirect, &none), Verdict::Redirect, "{redirect}");
    }
    assert_eq!(verdict(429, &none), Verdict::SlowDown(None), "429 slows down, Retry-After or not");
    assert_eq!(verdict(429, &with_retry_after("7")), Verdict::SlowDown(Some(Duration::from_secs(7))));
    assert_eq!(verdict(503, &with_retry_after("30")), Verdict::SlowDown(Some(Duration::from_secs(30))));
    assert_eq!(verdict(503, &none), Verdict::Transient, "503 without Retry-After is any other 5xx");
    for transient in [500, 502, 504] {
        assert_eq!(verdict(transient, &with_retry_after("5")), Verdict::Transient, "{transient}");
    }
    for refused in [400, 401, 403, 404, 413, 422] {
        assert_eq!(verdict(refused, &none), Verdict::Refused, "{refused}");
    }
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    assert_eq!(delay(" 120 ", now()), Some(Duration::from_secs(120)));
    assert_eq!(delay("Sat, 21 Nov 2026 10:16:00 GMT", now()), Some(Duration::from_secs(30)));
    assert_eq!(delay("Sat, 21 Nov 2026 10:00:00 GMT", now()), Some(Duration::ZERO), "a past date: no wait");
    assert_eq!(delay("soon", now()), None);
    assert_eq!(delay("-5", now()), None);
    // Unreadable, but a 503 that sent it still asked to slow down.
    assert_eq!(verdict(503, &with_retry_after("soon")), Verdict::SlowDown(None));
}

#[test]
fn a_secret_never_shows_in_debug() {
    let secret = Secret("sk-live-123".into());
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    assert_eq!(format!("{:?}", Some(secret.clone())), "Some(Secret(***))");
    assert_eq!(secret.expose(), "sk-live-123");
    assert!(Secret::from_env("").is_none(), "nothing configured: no credential");
}
