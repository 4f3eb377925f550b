#![allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error

use figment::providers::{Format, Toml};
use figment::{Figment, Jail};

use super::*;

fn load_in(jail: &Jail, file: Option<&str>, flags: &Overrides) -> Result<Config, ConfigError> {
    let path = file.map(|text| {
        jail.create_file("worker.toml", text).map(|_| ()).ok();
        jail.directory().join("worker.toml")
    });
    Config::load(path.as_deref(), flags)
}

#[test]
fn the_repository_worker_toml_is_exactly_the_defaults() {
    let text = include_str!("../../worker.toml");
    let from_file: Config = Figment::from(Toml::string(text)).extract().expect("worker.toml parses");
    assert_eq!(from_file, Config::default());
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    Jail::expect_with(|jail| {
        let file = "[worker]\nconcurrency = 7\nmax_attempts = 9\n[amqp]\nprefetch = 11\n";
        let none = Overrides::default();

        let from_file = load_in(jail, Some(file), &none).expect("loads");
        assert_eq!(from_file.worker.concurrency, 7);
        assert_eq!(from_file.worker.max_attempts, 9);
        assert_eq!(from_file.worker.shutdown_timeout_secs, 30, "untouched keys keep defaults");

        jail.set_env("WORKER__WORKER__CONCURRENCY", "8");
        jail.set_env("WORKER__AMQP__PREFETCH", "12");
        let from_env = load_in(jail, Some(file), &none).expect("loads");
        assert_eq!((from_env.worker.concurrency, from_env.amqp.prefetch), (8, 12));
        assert_eq!(from_env.worker.max_attempts, 9, "file still applies where env is silent");

        let flags = Overrides { concurrency: Some(3), id: Some("w-flag".into()) };
        let from_flag = load_in(jail, Some(file), &flags).expect("loads");
        assert_eq!(from_flag.worker.concurrency, 3);
        assert_eq!(from_flag.worker_id(), "w-flag");
        Ok(())
    });
}

#[test]
fn contract_url_variables_override_the_file_and_nested_ones_win_over_them() {
    Jail::expect_with(|jail| {
        jail.set_env("AMQP_URL", "amqps://u:p@broker:5671/vh");
        jail.set_env("DATABASE_URL", "postgres://db/one");
        jail.set_env("WORKER__DATABASE__URL", "postgres://db/two");
        let config =
            load_in(jail, Some("[amqp]\nurl = \"amqp://file\"\n"), &Overrides::default()).expect("loads");
        assert_eq!(config.amqp.url, "amqps://u:p@broker:5671/vh");
        assert_eq!(config.database.url, "postgres://db/two");
        Ok(())
    });
}

#[test]
fn timeouts_must_fit_inside_one_another() {
    Jail::expect_with(|jail| {
        let err =
            load_in(jail, Some("[redis]\nlock_ttl_secs = 30\nstate_ttl_secs = 600\n"), &Overrides::default())
                .expect_err("deadline 45 s > lock 30 s");
        let file = jail.directory().join("worker.toml");
        assert!(
            err.to_string().starts_with(&format!(
                "config key `redis.lock_ttl_secs` (from {}): is 30s; it must exceed",
                file.display()
            )),
            "{err}"
        );
        let err = load_in(jail, Some("[amqp]\nconsumer_timeout_secs = 60\n"), &Overrides::default())
            .expect_err("lock 60");
        assert!(err.to_string().contains("amqp.consumer_timeout_secs"), "{err}");
        let err = load_in(jail, Some("[worker]\nmax_message_age_secs = 100\n"), &Overrides::default())
            .expect_err("age");
        assert!(err.to_string().contains("5 attempts of up to 45s"), "{err}");
        let err = load_in(jail, Some("[responder]\ntimeout_ms = 50000\n"), &Overrides::default())
            .expect_err("slow");
        assert!(err.to_string().contains("worker.message_deadline_secs"), "{err}");
        Ok(())
    });
}

#[test]
fn grouped_reads_and_writes_leave_connections_to_the_rest() {
    Jail::expect_with(|jail| {
        let err = load_in(
            jail,
            Some("[database]\nmax_connections = 8\ncommits_in_flight = 4\nreads_in_flight = 3\n"),
            &Overrides::default(),
        )
        .expect_err("4 + 3 slots leave 1 of 8");
        assert!(err.to_string().starts_with("config key `database.commits_in_flight`"), "{err}");
        load_in(
            jail,
            Some("[database]\nmax_connections = 8\ncommits_in_flight = 3\nreads_in_flight = 3\n"),
            &Overrides::default(),
        )
        .expect("3 + 3 slots leave 2 of 8");
        Ok(())
    });
}

#[test]
fn the_default_retry_schedule_fits_the_default_age() {
    let schedule = Config::default().retry_schedule_secs();
    assert!(schedule < 3600.0 && schedule > 225.0, "{schedule}");
}

#[test]
fn bad_values_name_their_key() {
    Jail::expect_with(|jail| {
        jail.set_env("WORKER__WORKER__CONCURRENCY", "lots");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(err.to_lowercase().contains("worker.concurrency"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        let err = load_in(jail, Some("[amqp]\nprefetch = 0\n"), &Overrides::default()).expect_err("rejected");
        let file = jail.directory().join("worker.toml");
        assert_eq!(
            err.to_string(),
            format!("config key `amqp.prefetch` (from {}): must be at least 1", file.display())
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        let err = load_in(jail, Some("[redis]\nurl = \"http://user:secret@x\"\n"), &Overrides::default())
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("redis.url") && err.contains("http"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        let err = load_in(jail, Some("[worker]\nconcurency = 3\n"), &Overrides::default()).expect_err("typo");
        assert!(err.to_string().contains("concurency"), "{err}");
        Ok(())
    });
}

#[test]
fn worker_admin_addr_sits_between_the_file_and_the_nested_variable() {
    Jail::expect_with(|jail| {
        let none = Overrides::default();
        assert_eq!(load_in(jail, None, &none).expect("loads").admin.addr, "127.0.0.1:9464", "default");
        let file = Some("[admin]\naddr = \"127.0.0.1:1111\"\n");
        assert_eq!(load_in(jail, file, &none).expect("loads").admin.addr, "127.0.0.1:1111");

        jail.set_env("WORKER_ADMIN_ADDR", "0.0.0.0:9464");
        assert_eq!(load_in(jail, file, &none).expect("loads").admin.addr, "0.0.0.0:9464", "env beats file");

        jail.set_env("WORKER__ADMIN__ADDR", "[::1]:9999");
        assert_eq!(load_in(jail, file, &none).expect("loads").admin.addr, "[::1]:9999", "nested wins");
        Ok(())
    });
}

#[test]
fn a_bad_admin_address_names_the_variable_that_set_it() {
    Jail::expect_with(|jail| {
        jail.set_env("WORKER_ADMIN_ADDR", "localhost");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(
            err.starts_with("config key `admin.addr` (from WORKER_ADMIN_ADDR): `localhost` is not"),
            "{err}"
        );

        jail.set_env("WORKER__ADMIN__ADDR", "1.2.3.4:99999");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(
            err.starts_with("config key `admin.addr` (from WORKER__ADMIN__ADDR): `1.2.3.4:99999`"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn flags_and_variables_are_named_when_their_value_is_rejected() {
    Jail::expect_with(|jail| {
        let flags = Overrides { concurrency: Some(0), id: None };
        let err = load_in(jail, None, &flags).expect_err("rejected").to_string();
        assert_eq!(err, "config key `worker.concurrency` (from --concurrency): must be at least 1");
        jail.set_env("DATABASE_URL", "mysql://db/worker");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(err.starts_with("config key `database.url` (from DATABASE_URL): scheme `mysql`"), "{err}");
        Ok(())
    });
}

#[test]
fn worker_ids_with_spaces_nul_or_a_kilobyte_are_rejected_wherever_they_come_from() {
    for bad in ["has space", "nul\0byte", "pipe|sep", &"x".repeat(1024)] {
        Jail::expect_with(|jail| {
            let toml = format!("[worker]\nid = \"{}\"\n", bad.replace('\0', "\\u0000"));
            let err = load_in(jail, Some(&toml), &Overrides::default()).expect_err(bad).to_string();
            assert!(err.contains("`worker.id`") && err.contains("1 to 128 characters"), "{err}");
            Ok(())
        });
    }
    assert!(check_worker_id("worker-1.eu_west:2@host").is_ok());
}

#[test]
fn values_that_would_overflow_later_are_rejected_with_their_key() {
    Jail::expect_with(|jail| {
        jail.set_env("WORKER__WORKER__STARTUP_TIMEOUT_SECS", u64::MAX.to_string());
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert_eq!(
            err,
            format!(
                "config key `worker.startup_timeout_secs` (from WORKER__WORKER__STARTUP_TIMEOUT_SECS): \
                 is {}; it must be at most 31536000",
                u64::MAX
            )
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        let flags = Overrides { concurrency: Some(usize::MAX), id: None };
        let err = load_in(jail, None, &flags).expect_err("rejected").to_string();
        assert!(err.contains("`worker.concurrency` (from --concurrency)"), "{err}");
        jail.set_env("WORKER__DATABASE__COMMITS_IN_FLIGHT", usize::MAX.to_string());
        jail.set_env("WORKER__DATABASE__READS_IN_FLIGHT", usize::MAX.to_string());
        assert!(load_in(jail, None, &Overrides::default()).is_err(), "no overflow adding them up");
        Ok(())
    });
}

#[test]
fn debug_of_a_config_prints_no_secret() {
    let mut config = Config::default();
    config.amqp.url = "amqps://u:secret-1@rabbit:5671/vh".into();
    config.redis.url = "redis://:secret-2@a:1,redis://:secret-3@b:2".into();
    config.database.url = "host=db user=worker password='secret 4' dbname=worker".into();
    config.responder.url = "https://bot:secret-5@agent/v1?api_key=secret-6".into();
    let printed = format!("{config:?} {:#?}", config.responder);
    for n in 1..=6 {
        assert!(!printed.contains(&format!("secret-{n}")) && !printed.contains("secret 4"), "{printed}");
    }
    for kept in ["rabbit:5671", "@a:1", "@b:2", "host=db", "@agent/v1", "api_key_env", "OPENAI_API_KEY"] {
        assert!(printed.contains(kept), "{kept} in {printed}");
    }
    assert!(printed.contains("AmqpConfig { ") && printed.contains("prefetch: 1024"), "{printed}");
    let json = config.redacted().to_string();
    assert!(!json.contains("secret"), "{json}");
    assert_eq!(config.clone(), config, "PartialEq is untouched");
}

#[test]
fn a_quoted_variable_with_unicode_and_a_backslash_is_an_error_not_a_panic() {
    Jail::expect_with(|jail| {
        // figment's own parser panics on this one (a char index used as a byte index).
        jail.set_env("WORKER__WORKER__ID", "\"é\\n\"");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(err.starts_with("config key `worker.id` (from WORKER__WORKER__ID): must be"), "{err}");
        Ok(())
    });
}

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
