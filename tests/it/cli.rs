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
    assert_eq!(stderr_lines(&out), ["error: config key `amqp.prefetch`: must be at least 1"]);
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
    let url = format!("{}/{name}", base.rsplit_once('/').map(|(s, _)| s).unwrap_or(&base));
    let run = || {
        worker()
            .arg("migrate")
            .env("DATABASE_URL", &url)
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

    let pool = chat_worker::store::pool(&url, 1).expect("pool");
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
    assert_eq!(applied, 4, "each migration applied once");
    pool.close().await;
    let admin = chat_worker::store::pool(&url.replace(&name, "postgres"), 1).expect("pool");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
}
