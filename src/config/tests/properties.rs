//! Any string in any numeric variable: a config or a one-line error, never a panic.

use super::*;

/// Every numeric key, as its `WORKER__` variable.
const NUMERIC_VARS: &[&str] = &[
    "WORKER__WORKER__CONCURRENCY",
    "WORKER__WORKER__STARTUP_TIMEOUT_SECS",
    "WORKER__WORKER__SHUTDOWN_TIMEOUT_SECS",
    "WORKER__WORKER__MAX_ATTEMPTS",
    "WORKER__WORKER__RETRY_BASE_DELAY_MS",
    "WORKER__WORKER__RETRY_MAX_DELAY_MS",
    "WORKER__WORKER__MESSAGE_DEADLINE_SECS",
    "WORKER__WORKER__MAX_MESSAGE_AGE_SECS",
    "WORKER__AMQP__PREFETCH",
    "WORKER__AMQP__DELIVERY_LIMIT",
    "WORKER__AMQP__CONSUMER_TIMEOUT_SECS",
    "WORKER__REDIS__LOCK_TTL_SECS",
    "WORKER__REDIS__STATE_TTL_SECS",
    "WORKER__REDIS__LIVENESS_TTL_SECS",
    "WORKER__DATABASE__MAX_CONNECTIONS",
    "WORKER__DATABASE__COMMIT_BATCH_MAX",
    "WORKER__DATABASE__COMMITS_IN_FLIGHT",
    "WORKER__DATABASE__READS_IN_FLIGHT",
    "WORKER__CACHE__CATALOG_TTL_SECS",
    "WORKER__CACHE__SETTINGS_TTL_SECS",
    "WORKER__CACHE__KNOWLEDGE_TTL_SECS",
    "WORKER__CACHE__LOCAL_MAX_BYTES",
    "WORKER__CONTEXT__HISTORY_LIMIT",
    "WORKER__CONTEXT__REFERENCE_TTL_SECS",
    "WORKER__RESPONDER__TIMEOUT_MS",
    "WORKER__RESPONDER__HANDOFF_THRESHOLD",
    "WORKER__RESPONDER__PROMPT_COST_PER_1K",
    "WORKER__RESPONDER__COMPLETION_COST_PER_1K",
    "WORKER__ADMIN__QUEUE_POLL_SECS",
    "WORKER__ADMIN__MAX_CONNECTIONS",
    "WORKER__ADMIN__HEADER_READ_TIMEOUT_SECS",
    "WORKER_ADMIN_ADDR",
];

fn env_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "-?[0-9]{1,25}",
        "[0-9]{1,4}(\\.[0-9]{1,4})?(e-?[0-9]{1,3})?",
        proptest::sample::select(vec![
            "0",
            "-0",
            "1",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "true",
            "[1, 2]",
            "{a = 1}",
            "",
            " ",
            "0x10",
            "1_000",
        ])
        .prop_map(str::to_owned),
        any::<String>().prop_filter("no NUL in an environment value", |s| !s.contains('\0')),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Any string in the numeric variables: a config or a clear error, never a
    /// panic, and an accepted config's derived deadlines compute.
    #[test]
    fn config_from_any_numeric_environment_never_panics(
        vars in proptest::collection::vec((proptest::sample::select(NUMERIC_VARS), env_value()), 1..5),
    ) {
        Jail::expect_with(|jail| {
            for (var, value) in &vars {
                jail.set_env(var, value);
            }
            match Config::load(None, &Overrides::default()) {
                Ok(config) => {
                    assert!((1..=MAX_CONCURRENCY).contains(&config.worker.concurrency));
                    assert!(config.retry_schedule_secs().is_finite());
                    let _deadline = std::time::Instant::now() + config.startup_timeout();
                    let _bound = crate::worker::shutdown_bound(&config);
                    let _ = format!("{config:?}");
                }
                Err(e) => assert!(!e.to_string().contains('\n'), "one line: {e}"),
            }
            Ok(())
        });
    }
}
