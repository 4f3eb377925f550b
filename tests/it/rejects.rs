use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::{TestEnv, eventually, fingerprint_of, header_str};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_rejected_input_is_dead_lettered_unchanged_with_its_reason_and_writes_nothing() {
    let env = TestEnv::new().await;
    let inactive = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name, is_active) VALUES ($1, 'Closed Shop', false)")
        .bind(inactive)
        .execute(&env.pool)
        .await
        .expect("seed inactive tenant");

    let mut missing_text = env.message("m-missing", "c1", "x");
    missing_text.as_object_mut().map(|o| o.remove("text"));
    let mut unknown_tenant = env.message("m-unknown", "c1", "hello");
    unknown_tenant["tenant_id"] = json!(uuid::Uuid::new_v4());
    let mut inactive_tenant = env.message("m-inactive", "c1", "hello");
    inactive_tenant["tenant_id"] = json!(inactive);
    let mut foreign_conversation = env.message("m-conv", "c1", "hello");
    foreign_conversation["conversation_id"] = json!(uuid::Uuid::new_v4());
    let oversized = {
        let mut v = env.message("m-big", "c1", "x");
        v["metadata"] = json!({ "blob": "a".repeat(300 * 1024) });
        v.to_string().into_bytes()
    };

    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"\xff\xfe\x00garbage".to_vec(), "malformed", "not UTF-8"),
        (b"{\"message_id\": ".to_vec(), "malformed", "not JSON"),
        (b"[\"an\", \"array\"]".to_vec(), "malformed", "object"),
        (oversized, "malformed", "over the limit"),
        (missing_text.to_string().into_bytes(), "invalid", "text is required"),
        (
            env.message("m-fax", "c1", "hi").to_string().replace("whatsapp", "fax").into_bytes(),
            "invalid",
            "channel",
        ),
        (unknown_tenant.to_string().into_bytes(), "unknown_tenant", "does not exist"),
        (inactive_tenant.to_string().into_bytes(), "unknown_tenant", "is not active"),
        (foreign_conversation.to_string().into_bytes(), "invalid", "conversation_id"),
    ];
    let good = env.message("m-good", "c2", "a good message among bad ones");

    let worker = env.spawn_worker("w1");
    for (body, _, _) in &cases {
        env.publish(body).await;
    }
    env.publish_json(&good).await;
    let expected = cases.len() as u64 + 1;
    eventually("every message settled", || async { worker.tally.total() == expected }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");
    assert_eq!(tally.rejected.load(Ordering::Relaxed), cases.len() as u64);
    assert_eq!(tally.processed.load(Ordering::Relaxed), 1);

    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), cases.len());
    for (body, kind, reason) in &cases {
        let letter = dead
            .iter()
            .find(|d| &d.data == body)
            .unwrap_or_else(|| panic!("{kind}/{reason}: not dead-lettered byte-identical"));
        assert_eq!(header_str(letter, "x-error-kind").as_deref(), Some(*kind), "{reason}");
        let error = header_str(letter, "x-error").unwrap_or_default();
        assert!(error.contains(reason), "x-error `{error}` should mention `{reason}`");
        assert!(!error.contains('\n'), "x-error is one line");
    }
    assert_eq!(env.total_rows().await, 2, "only the good message wrote rows");
    assert_eq!(env.rows(&fingerprint_of(&good)).await, (1, 1));
    env.finish().await;
}
