//! Values the worker cannot run with: each is rejected with its key and, when
//! not a default, the variable, flag or file that set it.

use super::*;

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
        .expect("3 + 3 slots leave 2 of 8 (and no connection for the writer's light lane)");
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
        jail.set_env("DATABASE_URL", "postgres://pgbouncer:6432/worker");
        jail.set_env("DATABASE_LISTEN_URL", "http://u:hidden@db/worker");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(
            err.starts_with("config key `database.listen_url` (from DATABASE_LISTEN_URL): scheme `http`"),
            "{err}"
        );
        assert!(!err.contains("hidden"), "{err}");
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
fn a_seed_list_needs_cluster_mode_and_a_prefix_may_not_move_the_hash_tag() {
    Jail::expect_with(|jail| {
        jail.set_env("REDIS_URL", "redis://127.0.0.1:7001,redis://127.0.0.1:7002");
        let err = load_in(jail, None, &Overrides::default()).expect_err("two nodes, standalone");
        assert!(err.to_string().contains("WORKER__REDIS__MODE=cluster"), "{err}");
        jail.set_env("WORKER__REDIS__MODE", "cluster");
        let config = load_in(jail, None, &Overrides::default()).expect("a cluster's seeds");
        assert_eq!(
            config.redis.seeds().collect::<Vec<_>>(),
            ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
        );
        jail.set_env("REDIS_URL", "redis://127.0.0.1:7001,http://x");
        let err = load_in(jail, None, &Overrides::default()).expect_err("a seed of another scheme");
        assert!(err.to_string().contains("redis.url"), "{err}");
        jail.set_env("REDIS_URL", "redis://127.0.0.1:7001");
        jail.set_env("WORKER__REDIS__KEY_PREFIX", "cw{1}:");
        let err = load_in(jail, None, &Overrides::default()).expect_err("braces");
        assert!(err.to_string().contains("redis.key_prefix"), "{err}");
        Ok(())
    });
}

#[test]
fn the_heartbeat_is_bounded_and_one_named_in_the_url_must_be_a_number() {
    Jail::expect_with(|jail| {
        for bad in ["0", "601"] {
            jail.set_env("WORKER__AMQP__HEARTBEAT_SECS", bad);
            let err = load_in(jail, None, &Overrides::default()).expect_err(bad).to_string();
            assert!(
                err.starts_with("config key `amqp.heartbeat_secs` (from WORKER__AMQP__HEARTBEAT_SECS)"),
                "{err}"
            );
        }
        jail.set_env("WORKER__AMQP__HEARTBEAT_SECS", "70000");
        let err = load_in(jail, None, &Overrides::default()).expect_err("not a u16").to_string();
        assert!(err.to_lowercase().contains("amqp.heartbeat_secs"), "{err}");
        jail.set_env("WORKER__AMQP__HEARTBEAT_SECS", "5");
        jail.set_env("AMQP_URL", "amqp://worker:hunter2@rabbit:5672/%2f?heartbeat=soon");
        let err = load_in(jail, None, &Overrides::default()).expect_err("not a number").to_string();
        assert!(
            err.starts_with("config key `amqp.url` (from AMQP_URL): its heartbeat `soon` is not a number"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        jail.set_env("AMQP_URL", "amqp://worker:hunter2@rabbit:5672/%2f?heartbeat=30");
        let config = load_in(jail, None, &Overrides::default()).expect("a URL's heartbeat of 30 s");
        assert_eq!(config.amqp.heartbeat_secs, 5, "kept; the URL's wins when connecting");
        Ok(())
    });
}

#[test]
fn a_paused_holders_deliveries_must_come_back_before_its_turn_is_skipped() {
    Jail::expect_with(|jail| {
        jail.set_env("WORKER__AMQP__HEARTBEAT_SECS", "100");
        let err =
            load_in(jail, None, &Overrides::default()).expect_err("3 x 100 s is not below 300 s").to_string();
        assert!(
            err.starts_with("config key `turns.stale_secs`: is 300s; it must exceed 3 heartbeats (300s"),
            "{err}"
        );
        jail.set_env("WORKER__TURNS__STALE_SECS", "301");
        load_in(jail, None, &Overrides::default()).expect("3 x 100 s is below 301 s");
        jail.set_env("WORKER__AMQP__HEARTBEAT_SECS", "10");
        jail.set_env("AMQP_URL", "amqp://guest:guest@rabbit:5672/%2f?heartbeat=120");
        let err =
            load_in(jail, None, &Overrides::default()).expect_err("the URL's heartbeat counts").to_string();
        assert!(err.contains("(360s at amqp's 120s)"), "{err}");
        jail.set_env("AMQP_URL", "amqp://guest:guest@rabbit:5672/%2f?heartbeat=0");
        load_in(jail, None, &Overrides::default()).expect("0 leaves it to the broker");
        Ok(())
    });
}
