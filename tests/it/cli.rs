//! The binary's edge as an operator meets it (CONTRACT §6): one-line errors,
//! non-zero exits, no passwords, and a `migrate` that several hosts may run at once.

use std::process::Output;

use tokio::process::Command;

fn worker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.env_remove("WORKER_CONFIG").env("WORKER__WORKER__STARTUP_TIMEOUT_SECS", "1");
    cmd
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_bad_flag_is_one_line_and_exit_2() {
    let out = worker().args(["run", "--concurency", "3"]).output().await.expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--concurency"), "{lines:?}");
}

#[tokio::test]
async fn every_command_explains_itself_with_help() {
    for args in [vec!["--help"], vec!["run", "--help"], vec!["migrate", "--help"]] {
        let out = worker().args(&args).output().await.expect("runs");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[tokio::test]
async fn an_unreadable_config_or_bad_value_is_one_line_naming_it() {
    let out =
        worker().args(["--config", "/nonexistent/worker.toml", "migrate"]).output().await.expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [
            "error: config file /nonexistent/worker.toml: cannot be read (No such file or directory (os error 2))"
        ]
    );

    let out = worker().args(["run"]).env("WORKER__AMQP__PREFETCH", "0").output().await.expect("runs");
    assert_eq!(
        stderr_lines(&out),
        ["error: config key `amqp.prefetch` (from WORKER__AMQP__PREFETCH): must be at least 1"]
    );

    let out =
        worker().args(["config"]).env("WORKER_ADMIN_ADDR", "localhost 9464").output().await.expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]
            .starts_with("error: config key `admin.addr` (from WORKER_ADMIN_ADDR): `localhost 9464` is not"),
        "{lines:?}"
    );
}

/// Issue 12: every flag value an operator can type is a usage error naming the
/// flag and what it allows (exit 2, one line), never a panic (exit 101).
#[tokio::test]
async fn hostile_flag_values_are_one_line_usage_errors_never_panics() {
    let tenant = "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10";
    let history = |flag: &'static str, value: &'static str| {
        vec!["history", "--tenant", tenant, "--channel", "web", "--customer", "c", flag, value]
    };
    let (long_id, upper, not_hex) = ("w".repeat(1024), "F".repeat(64), "g".repeat(64));
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["stats", "--since", "100000000d"], "--since", "at most 36500d"),
        (vec!["stats", "--since", "é"], "--since", "RFC 3339"),
        (vec!["stats", "--since=-5d"], "--since", "RFC 3339"),
        (vec!["stats", "--tenant", "not-a-uuid"], "--tenant", "UUID"),
        (history("--page", "0"), "--page", "from 1 to 4294967295"),
        (history("--page", "18446744073709551615"), "--page", "from 1 to 4294967295"),
        (history("--page-size", "0"), "--page-size", "from 1 to 1000"),
        (history("--page-size", "99999999999999999999"), "--page-size", "from 1 to 1000"),
        (
            vec!["history", "--tenant", tenant, "--channel", "fax", "--customer", "c"],
            "--channel",
            "one of whatsapp",
        ),
        (vec!["locks", "list", "--limit", "18446744073709551616"], "--limit", "from 1 to 100000"),
        (vec!["dead", "list", "--limit", "0"], "--limit", "from 1 to 1000000"),
        (vec!["dead", "replay", "--limit", "99999999999"], "--limit", "from 1 to 1000000"),
        (vec!["state", "A1B2"], "<FINGERPRINT>", "64 lowercase hex"),
        (vec!["state", &upper], "<FINGERPRINT>", "64 lowercase hex"),
        (vec!["locks", "release", &not_hex], "<FINGERPRINT>", "64 lowercase hex"),
        (vec!["cache", "invalidate", "--tenant", "{}"], "--tenant", "UUID"),
        (vec!["run", "--concurrency", "0"], "--concurrency", "from 1 to 100000"),
        (vec!["run", "--concurrency", "18446744073709551615"], "--concurrency", "from 1 to 100000"),
        (vec!["run", "--worker-id", "has spaces"], "--worker-id", "1 to 128 characters"),
        (vec!["run", "--worker-id", &long_id], "--worker-id", "1 to 128 characters"),
    ];
    for (args, flag, allowed) in cases {
        let out = worker().args(&args).output().await.expect("runs");
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains(flag) && lines[0].contains(allowed), "{args:?}: {lines:?}");
    }
}

/// `worker config` shows what the layers add up to, with every password hidden.
#[tokio::test]
async fn config_prints_the_layers_result_without_passwords() {
    let out = worker()
        .arg("config")
        .env("AMQP_URL", "amqps://u:hunter2@broker:5671/vh")
        .env("REDIS_URL", "rediss://default:hunter3@cache:6380/0")
        .env("WORKER__DATABASE__URL", "postgres://db/w?sslpassword=hunter5&sslmode=require")
        .env("WORKER_ADMIN_ADDR", "0.0.0.0:9464")
        .output()
        .await
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter"), "{text}");
    let config: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(config["amqp"]["url"], "amqps://u:***@broker:5671/vh");
    assert_eq!(config["redis"]["url"], "rediss://default:***@cache:6380/0");
    assert_eq!(config["database"]["url"], "postgres://db/w?sslpassword=***&sslmode=require");
    assert_eq!(config["admin"]["addr"], "0.0.0.0:9464");
    assert_eq!(config["worker"]["startup_timeout_secs"], 1, "WORKER__ variables apply");
}

#[tokio::test]
async fn an_unreachable_service_is_one_line_without_the_password() {
    let out = worker()
        .args(["run"])
        .env("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/worker")
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]
            .starts_with("error: postgresql at postgres://postgres:***@127.0.0.1:1/worker is not reachable"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("hunter2"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_safe_from_two_hosts_at_once_and_again() {
    let base =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/worker".into());
    let name = format!("cw_migrate_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let named = |base: &str| format!("{}/{name}", base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base));
    let url = named(&base);
    // Run through a pooler (DATABASE_LISTEN_URL set), migrate goes direct, and so
    // does this test's look at what it did.
    let listen = std::env::var("DATABASE_LISTEN_URL").ok().filter(|u| !u.is_empty()).map(|u| named(&u));
    let direct = listen.clone().unwrap_or_else(|| url.clone());
    let run = || {
        worker()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("DATABASE_LISTEN_URL", listen.as_deref().unwrap_or(""))
            .env("WORKER__WORKER__STARTUP_TIMEOUT_SECS", "10")
            .output()
    };
    let (a, b) = tokio::join!(run(), run());
    for out in [a.expect("runs"), b.expect("runs")] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let again = run().await.expect("runs");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    let pool = chat_worker::store::pool(&direct, 1).expect("pool");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert_eq!(
        tables,
        [
            "agent_interactions",
            "catalog_versions",
            "conversations",
            "fences",
            "knowledge_entries",
            "messages",
            "products",
            "services",
            "tenants"
        ]
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("migrations");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations/")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql")))
        .count();
    assert_eq!(applied, i64::try_from(files).expect("a count"), "each migration applied once");
    pool.close().await;
    let admin = chat_worker::store::pool(&direct.replace(&name, "postgres"), 1).expect("pool");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
}
