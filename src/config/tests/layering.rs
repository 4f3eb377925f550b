//! Which layer wins: flag > environment > `--config` file > default.

use super::*;

#[test]
fn flag_beats_env_beats_file_beats_default() {
    Jail::expect_with(|jail| {
        let file = "[worker]\nconcurrency = 7\nmax_attempts = 9\n[amqp]\nprefetch = 11\n";
        let none = Overrides::default();

        let from_file = load_in(jail, Some(file), &none).expect("loads");
        assert_eq!(from_file.worker.concurrency, 7);
        assert_eq!(from_file.worker.max_attempts, 9);
        assert_eq!(from_file.worker.shutdown_timeout_secs, 50, "untouched keys keep defaults");

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
fn database_listen_url_says_that_the_database_url_is_a_transaction_pooler() {
    Jail::expect_with(|jail| {
        let none = Overrides::default();
        let direct = load_in(jail, None, &none).expect("loads");
        assert!(!direct.database.through_pooler(), "no listen URL: the URL is direct");
        assert_eq!(direct.database.session_url(), direct.database.url);
        assert!(direct.database.named_statements(), "named statements by default, when direct");

        jail.set_env("DATABASE_URL", "postgres://pgbouncer:6432/worker");
        jail.set_env("DATABASE_LISTEN_URL", "postgres://db:5432/worker");
        let pooled = load_in(jail, None, &none).expect("loads");
        assert!(!pooled.database.named_statements(), "behind a pooler, unnamed unless asked for");
        jail.set_env("WORKER__DATABASE__PREPARED_STATEMENTS", "true");
        let asked = load_in(jail, None, &none).expect("loads");
        assert!(asked.database.named_statements(), "PgBouncer >= 1.21: named, as asked");
        jail.set_env("WORKER__DATABASE__PREPARED_STATEMENTS", "false");
        let pooled = load_in(jail, None, &none).expect("loads");
        assert!(pooled.database.through_pooler());
        assert_eq!(pooled.database.session_url(), "postgres://db:5432/worker");
        assert_eq!(pooled.database.url, "postgres://pgbouncer:6432/worker");
        assert!(!pooled.database.named_statements());

        jail.set_env("WORKER__DATABASE__LISTEN_URL", "postgres://other:5432/worker");
        let nested = load_in(jail, None, &none).expect("loads");
        assert_eq!(nested.database.listen_url, "postgres://other:5432/worker", "the nested variable wins");
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
fn a_quoted_variable_with_unicode_and_a_backslash_is_an_error_not_a_panic() {
    Jail::expect_with(|jail| {
        // figment's own parser panics on this one (a char index used as a byte index).
        jail.set_env("WORKER__WORKER__ID", "\"é\\n\"");
        let err = load_in(jail, None, &Overrides::default()).expect_err("rejected").to_string();
        assert!(err.starts_with("config key `worker.id` (from WORKER__WORKER__ID): must be"), "{err}");
        Ok(())
    });
}
