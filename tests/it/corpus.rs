//! A corpus of bad input (more than 40 kinds) interleaved with valid oddities:
//! every bad one is dead-lettered byte-identical with the right kind, every good
//! one is processed, nothing else happens.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::harness::{TestEnv, eventually, fingerprint_of, header_str};

fn set(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
    v
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().map(|o| o.remove(field));
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_kinds_of_bad_input_are_dead_lettered_and_valid_oddities_processed() {
    let env = TestEnv::new().await;
    let inactive = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name, is_active) VALUES ($1, 'Closed', false)")
        .bind(inactive)
        .execute(&env.pool)
        .await
        .expect("tenant");
    let base = |id: &str| env.message(id, "corpus-customer", "hello");
    let deep =
        format!("{{\"message_id\":\"deep\",\"metadata\":{}{}}}", "{\"a\":".repeat(5000), "}".repeat(5001));

    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("plain text", b"hello there".to_vec(), "malformed"),
        ("truncated", bytes(&base("t"))[..40].to_vec(), "malformed"),
        ("array", b"[1,2,3]".to_vec(), "malformed"),
        ("string", b"\"a string\"".to_vec(), "malformed"),
        ("number", b"42".to_vec(), "malformed"),
        ("null", b"null".to_vec(), "malformed"),
        ("boolean", b"true".to_vec(), "malformed"),
        ("invalid utf-8", [b"{\"text\":\"".as_slice(), &[0xc3, 0x28], b"\"}"].concat(), "malformed"),
        ("byte order mark", [&[0xef, 0xbb, 0xbf][..], &bytes(&base("bom"))].concat(), "malformed"),
        (
            "oversized",
            bytes(&set(base("big"), &["metadata"], json!({"x": "y".repeat(270_000)}))),
            "malformed",
        ),
        ("empty body", Vec::new(), "malformed"),
        ("deep nesting", deep.into_bytes(), "malformed"),
        ("two objects", [bytes(&base("a")), bytes(&base("b"))].concat(), "malformed"),
        ("missing message_id", bytes(&without(base("x"), "message_id")), "invalid"),
        ("missing tenant_id", bytes(&without(base("x"), "tenant_id")), "invalid"),
        ("missing channel", bytes(&without(base("x"), "channel")), "invalid"),
        ("missing customer", bytes(&without(base("x"), "customer")), "invalid"),
        ("missing text", bytes(&without(base("x"), "text")), "invalid"),
        ("missing received_at", bytes(&without(base("x"), "received_at")), "invalid"),
        ("missing external_id", bytes(&set(base("x"), &["customer"], json!({"name": "A"}))), "invalid"),
        ("message_id number", bytes(&set(base("x"), &["message_id"], json!(7))), "invalid"),
        ("tenant_id number", bytes(&set(base("x"), &["tenant_id"], json!(7))), "invalid"),
        ("channel number", bytes(&set(base("x"), &["channel"], json!(7))), "invalid"),
        ("customer string", bytes(&set(base("x"), &["customer"], json!("+2547"))), "invalid"),
        ("customer array", bytes(&set(base("x"), &["customer"], json!(["+2547"]))), "invalid"),
        ("customer null", bytes(&set(base("x"), &["customer"], json!(null))), "invalid"),
        ("external_id number", bytes(&set(base("x"), &["customer", "external_id"], json!(254))), "invalid"),
        ("customer name number", bytes(&set(base("x"), &["customer", "name"], json!(1))), "invalid"),
        ("text number", bytes(&set(base("x"), &["text"], json!(1))), "invalid"),
        ("text array", bytes(&set(base("x"), &["text"], json!(["hi"]))), "invalid"),
        ("text null", bytes(&set(base("x"), &["text"], json!(null))), "invalid"),
        ("received_at number", bytes(&set(base("x"), &["received_at"], json!(1700000000))), "invalid"),
        ("conversation_id number", bytes(&set(base("x"), &["conversation_id"], json!(5))), "invalid"),
        ("attachments object", bytes(&set(base("x"), &["attachments"], json!({}))), "invalid"),
        ("metadata array", bytes(&set(base("x"), &["metadata"], json!([]))), "invalid"),
        ("empty message_id", bytes(&set(base("x"), &["message_id"], json!(""))), "invalid"),
        ("empty tenant_id", bytes(&set(base("x"), &["tenant_id"], json!(""))), "invalid"),
        ("empty channel", bytes(&set(base("x"), &["channel"], json!(""))), "invalid"),
        ("empty external_id", bytes(&set(base("x"), &["customer", "external_id"], json!(""))), "invalid"),
        ("empty text", bytes(&set(base("x"), &["text"], json!(""))), "invalid"),
        ("empty received_at", bytes(&set(base("x"), &["received_at"], json!(""))), "invalid"),
        ("message_id 256 bytes", bytes(&set(base("x"), &["message_id"], json!("m".repeat(256)))), "invalid"),
        (
            "external_id 129 chars",
            bytes(&set(base("x"), &["customer", "external_id"], json!("c".repeat(129)))),
            "invalid",
        ),
        ("text 4097 chars", bytes(&set(base("x"), &["text"], json!("t".repeat(4097)))), "invalid"),
        ("text with NUL", bytes(&set(base("x"), &["text"], json!("a\u{0}b"))), "invalid"),
        ("bad tenant uuid", bytes(&set(base("x"), &["tenant_id"], json!("0b6f1c7e-zzzz"))), "invalid"),
        (
            "bad conversation uuid",
            bytes(&set(base("x"), &["conversation_id"], json!("not-a-uuid"))),
            "invalid",
        ),
        ("bad timestamp", bytes(&set(base("x"), &["received_at"], json!("2026-13-45T99:00:00Z"))), "invalid"),
        ("timestamp in words", bytes(&set(base("x"), &["received_at"], json!("yesterday"))), "invalid"),
        (
            "timestamp without zone",
            bytes(&set(base("x"), &["received_at"], json!("2026-11-21T10:15:30"))),
            "invalid",
        ),
        ("unknown channel", bytes(&set(base("x"), &["channel"], json!("fax"))), "invalid"),
        ("channel in capitals", bytes(&set(base("x"), &["channel"], json!("WhatsApp"))), "invalid"),
        (
            "unknown tenant",
            bytes(&set(base("x"), &["tenant_id"], json!(uuid::Uuid::new_v4()))),
            "unknown_tenant",
        ),
        ("inactive tenant", bytes(&set(base("x"), &["tenant_id"], json!(inactive))), "unknown_tenant"),
    ];
    assert!(bad.len() >= 40);

    let good: Vec<Value> = vec![
        set(base("emoji"), &["text"], json!("Do you have 👟 in size 42? 😀👍🏽")),
        set(base("rtl"), &["text"], json!("مرحبا، هل لديكم أحذية جري؟")),
        set(base("sql"), &["text"], json!("'; DROP TABLE messages; -- and 1=1")),
        set(base("controls"), &["text"], json!("tab\there\u{1}\u{1f} bell\u{7} newline\nend")),
        set(
            set(base("unknown-fields"), &["extra"], json!({"nested": [1, 2]})),
            &["customer", "vip"],
            json!(true),
        ),
        set(set(base("nulls"), &["customer", "name"], json!(null)), &["attachments"], json!(null)),
        set(base("offset"), &["received_at"], json!("2026-11-21T13:15:30+03:00")),
        set(base("longest text"), &["text"], json!("é".repeat(4096))),
        set(base(&"m".repeat(255)), &["text"], json!("the longest message id")),
        set(base("long customer"), &["customer", "external_id"], json!("ü".repeat(128))),
        set(
            base("attachments"),
            &["attachments"],
            json!([{"type": "image", "url": "https://example.invalid/x.jpg"}]),
        ),
    ];

    let worker = env.spawn_worker("corpus");
    for (i, (_, body, _)) in bad.iter().enumerate() {
        env.publish(body).await;
        if let Some(g) = good.get(i / 5)
            && i % 5 == 4
        {
            env.publish_json(g).await;
        }
    }
    for g in good.iter().skip(bad.len() / 5) {
        env.publish_json(g).await;
    }
    let expected = (bad.len() + good.len()) as u64;
    eventually("every message settled", || async { worker.tally.total() >= expected }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");
    assert_eq!(tally.rejected.load(Ordering::Relaxed), bad.len() as u64);
    assert_eq!(tally.processed.load(Ordering::Relaxed), good.len() as u64);
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);

    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), bad.len());
    for (name, body, kind) in &bad {
        let letter = dead
            .iter()
            .find(|d| &d.data == body)
            .unwrap_or_else(|| panic!("{name}: not dead-lettered byte-identical"));
        assert_eq!(
            header_str(letter, "x-error-kind").as_deref(),
            Some(*kind),
            "{name}: {:?}",
            header_str(letter, "x-error")
        );
        let error = header_str(letter, "x-error").unwrap_or_default();
        assert!(!error.is_empty() && !error.contains('\n'), "{name}: {error:?}");
    }
    for g in &good {
        assert_eq!(env.rows(&fingerprint_of(g)).await, (1, 1), "{g}");
    }
    assert_eq!(env.total_rows().await as usize, 2 * good.len(), "rejected input wrote nothing");
    let stored: String = sqlx::query_scalar(
        "SELECT text FROM messages WHERE provider_message_id = 'sql' AND direction = 'in'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("stored as given");
    assert_eq!(stored, "'; DROP TABLE messages; -- and 1=1");
    env.finish().await;
}
