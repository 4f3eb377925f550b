use clap::Parser;
use proptest::prelude::*;

use super::*;
use crate::cli::Cli;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

#[test]
fn since_takes_times_and_spans_up_to_a_century() {
    let now = at("2026-11-22T12:00:00Z");
    let back = |text: &str| since(text).ok().and_then(|s| s.resolve(now));
    assert_eq!(back("24h"), Some(now - TimeDelta::hours(24)));
    assert_eq!(back("7d"), Some(now - TimeDelta::days(7)));
    assert_eq!(back("0m"), Some(now));
    assert_eq!(back("36500d"), Some(now - TimeDelta::days(36_500)));
    assert_eq!(back("2026-11-01T00:00:00+02:00"), Some(at("2026-10-31T22:00:00Z")));
    for bad in
        ["yesterday", "5y", "é", "1é", "ém", "", "d", "-5d", "+5d", " 5d", "5 d", "36501d", "100000000d"]
    {
        let err = since(bad).expect_err(bad);
        assert!(err.contains("RFC 3339") && err.contains("36500d"), "{bad}: {err}");
    }
}

#[test]
fn older_than_takes_spans_of_at_least_the_retention_floor() {
    assert_eq!(older_than("90d"), Ok(TimeDelta::days(90)));
    assert_eq!(older_than("7d"), Ok(TimeDelta::days(7)));
    assert_eq!(older_than("168h"), Ok(TimeDelta::hours(168)));
    for short in ["6d", "167h", "0m", "1d"] {
        let err = older_than(short).expect_err(short);
        assert!(
            err.contains("keeps less than 7d") && err.contains("answered a second time"),
            "{short}: {err}"
        );
    }
    for bad in ["90", "2026-11-01T00:00:00Z", "-90d", "36501d", "", "é"] {
        let err = older_than(bad).expect_err(bad);
        assert!(err.contains("must be a span such as 90d"), "{bad}: {err}");
    }
    assert_eq!(prune_batch("100000"), Ok(100_000));
    assert!(prune_batch("0").is_err() && prune_batch("100001").is_err());
}

#[test]
fn numbers_are_digits_within_their_bounds() {
    assert_eq!(page("1"), Ok(1));
    assert_eq!(page("4294967295"), Ok(u32::MAX));
    for bad in ["0", "-1", "+1", "18446744073709551615", "4294967296", "1e3", " 1", "١", ""] {
        assert_eq!(page(bad), Err("must be a whole number from 1 to 4294967295".to_owned()), "{bad}");
    }
    assert_eq!(page_size("1000"), Ok(1000));
    assert!(page_size("0").is_err() && page_size("1001").is_err());
    assert_eq!(concurrency("100000"), Ok(100_000));
    assert!(concurrency("0").is_err() && concurrency("100001").is_err());
    assert!(locks_limit("0").is_err() && dead_limit("99999999999999999999999").is_err());
}

#[test]
fn identities_are_checked() {
    let fp = "86acff0386cd6104da65408b802f29df6ca81af393c03a7d4aff623921414521";
    assert_eq!(fingerprint(fp).map(|f| f.to_string()), Ok(fp.to_owned()));
    for bad in [&fp.to_uppercase(), &fp[1..], &format!("{fp}0"), "é", ""] {
        assert!(fingerprint(bad).is_err(), "{bad}");
    }
    assert!(tenant("0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10").is_ok());
    assert!(tenant("not-a-uuid").unwrap_err().contains("UUID"));
    assert_eq!(channel("web"), Ok("web".to_owned()));
    assert!(channel("fax").unwrap_err().contains("whatsapp, sms"));
    assert!(customer("").is_err() && customer(&"x".repeat(129)).is_err() && customer("é").is_ok());
    assert!(worker_id("w-1").is_ok());
    for bad in ["has space", "nul\0", &"x".repeat(1024), ""] {
        assert!(worker_id(bad).is_err(), "{bad:?}");
    }
}

/// Some strings that look like what the parsers want, and some that do not.
fn near_miss() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-+]?[0-9]{0,30}[mhdy]?",
        "[0-9a-fA-F]{60,68}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
        "[a-zA-Z0-9 ._:@|-]{0,200}",
    ]
}

proptest! {
    #[test]
    fn every_parser_answers_any_string_within_its_bounds(text in near_miss()) {
        let now = Utc::now();
        if let Ok(n) = page(&text) { prop_assert!(n >= 1); }
        if let Ok(n) = page_size(&text) { prop_assert!((1..=MAX_PAGE_SIZE).contains(&n)); }
        if let Ok(n) = concurrency(&text) { prop_assert!((1..=MAX_CONCURRENCY).contains(&n)); }
        if let Ok(n) = locks_limit(&text) { prop_assert!((1..=MAX_LOCKS_LISTED).contains(&n)); }
        if let Ok(n) = dead_limit(&text) { prop_assert!((1..=MAX_DEAD_LETTERS).contains(&n)); }
        if let Ok(id) = worker_id(&text) { prop_assert!(check_worker_id(&id).is_ok()); }
        if let Ok(fp) = fingerprint(&text) { prop_assert_eq!(fp.as_str(), text.as_str()); }
        let _ = tenant(&text);
        if let Ok(c) = channel(&text) { prop_assert!(CHANNELS.contains(&c.as_str())); }
        if let Ok(c) = customer(&text) { prop_assert!((1..=128).contains(&c.chars().count())); }
        if let Ok(n) = prune_batch(&text) { prop_assert!((1..=MAX_PRUNE_BATCH).contains(&n)); }
        if let Ok(span) = older_than(&text) {
            prop_assert!(span >= TimeDelta::days(MIN_RETENTION_DAYS as i64));
            prop_assert!(span <= TimeDelta::days(MAX_SINCE_DAYS as i64));
        }
        match since(&text) {
            Ok(Since::Ago(span)) => {
                prop_assert!(span >= TimeDelta::zero() && span <= TimeDelta::days(MAX_SINCE_DAYS as i64));
                prop_assert!(Since::Ago(span).resolve(now).is_some());
            }
            Ok(Since::At(_)) | Err(_) => {}
        }
    }

    /// Through clap itself: any value of any flag parses or is a usage error
    /// naming that flag, never a panic.
    #[test]
    fn any_flag_value_is_parsed_or_a_usage_error_naming_the_flag(value in near_miss()) {
        let tenant = "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10";
        let history = ["worker", "history", "--tenant", tenant, "--channel", "web", "--customer", "c"];
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["worker", "stats", "--since"], "--since"),
            (vec!["worker", "stats", "--tenant"], "--tenant"),
            ([&history[..], &["--page"]].concat(), "--page"),
            ([&history[..], &["--page-size"]].concat(), "--page-size"),
            (vec!["worker", "history", "--channel", "web", "--customer", "c", "--tenant"], "--tenant"),
            (vec!["worker", "history", "--tenant", tenant, "--customer", "c", "--channel"], "--channel"),
            (vec!["worker", "history", "--tenant", tenant, "--channel", "web", "--customer"], "--customer"),
            (vec!["worker", "locks", "list", "--limit"], "--limit"),
            (vec!["worker", "locks", "release"], "<FINGERPRINT>"),
            (vec!["worker", "state"], "<FINGERPRINT>"),
            (vec!["worker", "dead", "list", "--limit"], "--limit"),
            (vec!["worker", "dead", "replay", "--limit"], "--limit"),
            (vec!["worker", "cache", "warm", "--tenant"], "--tenant"),
            (vec!["worker", "cache", "invalidate", "--tenant"], "--tenant"),
            (vec!["worker", "run", "--concurrency"], "--concurrency"),
            (vec!["worker", "run", "--worker-id"], "--worker-id"),
            (vec!["worker", "prune", "--older-than"], "--older-than"),
            (vec!["worker", "prune", "--older-than", "90d", "--batch-size"], "--batch-size"),
        ];
        for (args, flag) in cases {
            let mut argv = args.clone();
            argv.push(&value);
            if let Err(e) = Cli::try_parse_from(&argv) {
                let first = e.render().to_string();
                let first = first.lines().next().unwrap_or_default().to_owned();
                // A value starting with `-` may be taken for a flag; any other
                // rejection names the flag whose value it is.
                prop_assert!(first.contains(flag) || value.starts_with('-'), "{argv:?}: {first}");
            }
        }
    }
}
