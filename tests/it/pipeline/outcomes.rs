//! One envelope, one outcome: each row of CONTRACT §3 from a single call.

use chat_worker::model::Envelope;
use chat_worker::outcome::{DuplicateOf, Failure, Outcome, RejectionKind};
use serde_json::json;

use super::{Acts, World};
use crate::harness::fingerprint_of;

#[tokio::test]
async fn a_new_message_is_processed_once_and_its_copy_is_a_duplicate() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    match world.process(&message).await {
        Outcome::Processed { fingerprint, replayed: false } => assert_eq!(fingerprint.as_str(), fp),
        other => panic!("expected processed: {other:?}"),
    }
    assert_eq!(world.env.rows(&fp).await, (1, 1));
    assert_eq!(world.state_status(&message).await.as_deref(), Some("completed"));
    assert_eq!(world.redis_get(&world.key("lock", &message)).await, None, "the lock is released");

    assert!(matches!(world.process(&message).await, Outcome::Duplicate { of: DuplicateOf::Completed, .. }));
    let replies = world.env.replies().await;
    assert_eq!(replies.len(), 1, "one reply for the message and its copy");
    assert_eq!(replies[0].1["fingerprint"], json!(fp));
    assert_eq!(replies[0].1["text"], json!("Here it is."));
    assert_eq!(world.env.rows(&fp).await, (1, 1));
    world.env.finish().await;
}

#[tokio::test]
async fn a_committed_message_whose_state_redis_lost_is_replayed_not_answered_again() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: false, .. }));

    world.env.flush_redis().await;
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: true, .. }));
    assert_eq!(world.env.rows(&fp).await, (1, 1), "no second answer is committed");
    let replies = world.env.replies().await;
    assert_eq!(replies.len(), 2, "the stored reply is published again");
    assert_eq!(replies[0].1, replies[1].1, "the very same reply");
    world.env.finish().await;
}

#[tokio::test]
async fn a_message_another_live_worker_holds_is_a_duplicate_or_deferred_if_seen_before() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);
    world.env.hold_lock_elsewhere(&message).await;

    match world.process_as(&message, false).await {
        Outcome::Duplicate { of: DuplicateOf::InProgress { worker_id }, .. } => {
            assert_eq!(worker_id, "w-elsewhere")
        }
        other => panic!("expected a duplicate in progress: {other:?}"),
    }
    match world.process_as(&message, true).await {
        Outcome::Deferred { worker_id, .. } => assert_eq!(worker_id, "w-elsewhere"),
        other => panic!("expected deferred: {other:?}"),
    }
    assert_eq!(world.env.rows(&fp).await, (0, 0));

    world.env.release_lock_elsewhere(&message).await;
    assert!(matches!(world.process_as(&message, true).await, Outcome::Processed { .. }));
    world.env.finish().await;
}

#[tokio::test]
async fn what_can_never_be_processed_is_rejected_with_its_kind_and_writes_nothing() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let good = world.env.message("m-1", "+254700000001", "hello");

    let malformed = world.pipeline.process(&Envelope::first(b"{not json", None)).await;
    assert!(
        matches!(&malformed, Outcome::Rejected(r) if r.kind == RejectionKind::Malformed),
        "{malformed:?}"
    );

    let mut no_text = good.clone();
    no_text["text"] = json!("");
    let invalid = world.process(&no_text).await;
    assert!(matches!(&invalid, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{invalid:?}");

    let mut stranger = good.clone();
    stranger["tenant_id"] = json!(uuid::Uuid::new_v4());
    let unknown = world.process(&stranger).await;
    assert!(
        matches!(&unknown, Outcome::Rejected(r) if r.kind == RejectionKind::UnknownTenant),
        "{unknown:?}"
    );

    let body = good.to_string();
    let elsewhere = format!("sms.{}", world.env.tenant_id);
    let misrouted = world.pipeline.process(&Envelope::first(body.as_bytes(), Some(&elsewhere))).await;
    assert!(matches!(&misrouted, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{misrouted:?}");

    let mut foreign = good.clone();
    foreign["conversation_id"] = json!(uuid::Uuid::new_v4());
    let foreign = world.process(&foreign).await;
    assert!(matches!(&foreign, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{foreign:?}");

    assert_eq!(world.env.total_rows().await, 0);
    assert!(world.env.replies().await.is_empty());
    world.env.finish().await;
}

#[tokio::test]
async fn a_responder_fault_fails_the_attempt_keeps_its_cause_and_frees_the_lock() {
    let mut world = World::new(Acts::Fails, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    match world.process(&message).await {
        Outcome::Failed { fingerprint, error: error @ Failure::Respond(_) } => {
            assert_eq!(fingerprint.map(|f| f.to_string()).as_deref(), Some(fp.as_str()));
            assert_eq!(error.kind(), "responder");
            assert_eq!(error.render(), "responder: agent unreachable");
        }
        other => panic!("expected a responder failure: {other:?}"),
    }
    assert_eq!(world.state_status(&message).await.as_deref(), Some("failed"));
    assert_eq!(world.redis_get(&world.key("lock", &message)).await, None, "the lock is released");
    assert_eq!(world.env.rows(&fp).await, (0, 0));

    world.acting(Acts::Answers);
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: false, .. }));
    world.env.finish().await;
}

#[tokio::test]
async fn a_stored_reference_of_a_kind_no_table_has_is_left_out_not_a_failed_read() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let first = world.env.message("m-1", "+254700000001", "hello");
    assert!(matches!(world.process(&first).await, Outcome::Processed { .. }));
    // Another program writes the shared table (CONTRACT §5) with a kind of its own.
    sqlx::query("UPDATE messages SET reply_references = $1 WHERE fingerprint = $2 AND direction = 'out'")
        .bind(json!([{"kind": "widget", "id": uuid::Uuid::new_v4(), "position": 1},
                 {"kind": "product", "id": uuid::Uuid::new_v4(), "position": 2}]))
        .bind(fingerprint_of(&first))
        .execute(&world.env.pool)
        .await
        .expect("update");

    let second = world.env.message("m-2", "+254700000001", "and the second?");
    let outcome = world.process(&second).await;
    assert!(matches!(outcome, Outcome::Processed { replayed: false, .. }), "{outcome:?}");
    world.env.finish().await;
}
