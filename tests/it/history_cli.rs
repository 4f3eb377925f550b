//! `worker history` on a 10,000-message conversation (CONTRACT §6).

use serde_json::Value;

use crate::harness::TestEnv;

async fn history(env: &TestEnv, args: &[&str]) -> (Option<i32>, String, String) {
    let out = env
        .worker_binary()
        .args([
            "history",
            "--tenant",
            &env.tenant_id.to_string(),
            "--channel",
            "web",
            "--customer",
            "long-talker",
        ])
        .args(args)
        .output()
        .await
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_a_ten_thousand_message_conversation() {
    let env = TestEnv::new().await;
    sqlx::raw_sql(&format!(
        "WITH c AS (INSERT INTO conversations (tenant_id, channel, customer_external_id) VALUES ('{t}', 'web', 'long-talker') RETURNING id)
         INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at)
         SELECT c.id, CASE WHEN n % 2 = 1 THEN 'in' ELSE 'out' END, 'p-' || n, 'fp-' || n, 'message ' || n,
                timestamptz '2026-11-01 00:00:00+00' + n * interval '1 second'
           FROM c, generate_series(1, 10000) AS n",
        t = env.tenant_id
    ))
    .execute(&env.pool)
    .await
    .expect("seed 10,000 messages");

    let page = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["text"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (code, out, err) = history(&env, &["--page-size", "50", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let first: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(
        (
            first["page"].as_u64(),
            first["page_size"].as_u64(),
            first["total"].as_u64(),
            first["pages"].as_u64()
        ),
        (Some(1), Some(50), Some(10_000), Some(200))
    );
    assert_eq!((first["has_next"].as_bool(), first["has_previous"].as_bool()), (Some(true), Some(false)));
    let texts = page(&first);
    assert_eq!(texts.len(), 50);
    assert_eq!((texts[0].as_str(), texts[49].as_str()), ("message 1", "message 50"), "oldest first");
    let m = &first["messages"][0];
    for field in ["id", "direction", "text", "provider_message_id", "fingerprint", "created_at"] {
        assert!(!m[field].is_null(), "message field {field}");
    }

    let (_, out, _) = history(&env, &["--page-size", "50", "--page", "137", "--json"]).await;
    let middle: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(page(&middle).first().map(String::as_str), Some("message 6801"));
    assert_eq!((middle["has_next"].as_bool(), middle["has_previous"].as_bool()), (Some(true), Some(true)));

    let (_, out, _) = history(&env, &["--page-size", "50", "--page", "200", "--json"]).await;
    let last: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(page(&last).last().map(String::as_str), Some("message 10000"));
    assert_eq!((last["has_next"].as_bool(), last["has_previous"].as_bool()), (Some(false), Some(true)));

    let (_, out, _) = history(&env, &["--page-size", "50", "--page", "201", "--json"]).await;
    let beyond: Value = serde_json::from_str(&out).expect("json");
    assert!(page(&beyond).is_empty());

    let (code, out, _) = history(&env, &["--page-size", "3"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("conversation ") && out.contains("page 1 of 3334 (10000 messages, 3 per page)"),
        "{out}"
    );
    assert!(out.contains("message 1\n") && out.contains("(--page 2 for the next page)"), "{out}");

    let (code, _, err) = history(&env, &["--page", "0"]).await;
    assert_eq!(code, Some(2), "{err}");

    // The last page a u32 holds, at the largest page size: its OFFSET would not
    // fit PostgreSQL's bigint, and it is simply past the end.
    let (code, out, err) = history(&env, &["--page", "4294967295", "--page-size", "1000", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let far: Value = serde_json::from_str(&out).expect("json");
    assert!(page(&far).is_empty());
    assert_eq!((far["has_next"].as_bool(), far["has_previous"].as_bool()), (Some(false), Some(true)));
    let (code, out, _) = history(&env, &["--page", "4294967295", "--page-size", "1"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("(--page 4294967294 for the previous page)"), "{out}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_customer_is_a_one_line_error() {
    let env = TestEnv::new().await;
    let (code, out, err) = history(&env, &["--json"]).await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("long-talker has no conversation on web"), "{err}");
    env.finish().await;
}
