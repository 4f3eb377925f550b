//! The lease guard on a paused clock: the deadline, a lease another worker
//! took, and renewals that keep failing.

use std::time::Duration;

use chat_worker::dedup::Cut;
use chat_worker::outcome::{Failure, Outcome};

use super::{Acts, World, on_paused_clock, warmed_up};
use crate::harness::fingerprint_of;

#[tokio::test]
async fn work_past_the_deadline_is_cut_commits_nothing_and_frees_the_lock() {
    let mut world = World::new(Acts::Answers, |c| c.worker.message_deadline_secs = 1).await;
    warmed_up(&world).await;
    world.acting(Acts::Hangs);
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    match outcome {
        Outcome::Failed { error: Failure::Cut(Cut::Deadline(d)), .. } => {
            assert_eq!(d, Duration::from_secs(1))
        }
        other => panic!("expected the deadline: {other:?}"),
    }
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(2), "cut at the deadline: {took:?}");
    assert_eq!(world.env.rows(&fp).await, (0, 0));
    assert_eq!(world.state_status(&message).await.as_deref(), Some("failed"));
    assert_eq!(world.redis_get(&world.key("lock", &message)).await, None);
    world.env.finish().await;
}

#[tokio::test]
async fn a_lease_another_worker_took_ends_the_work_and_leaves_its_lock_alone() {
    let world = World::new(Acts::Answers, |c| c.redis.lock_ttl_secs = 3).await;
    warmed_up(&world).await;
    let mut world = world;
    world.acting(Acts::LosesTheLockAndHangs);
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    assert!(matches!(outcome, Outcome::Failed { error: Failure::Cut(Cut::LeaseLost), .. }), "{outcome:?}");
    // Renewed every second (a third of the 3 s TTL): the first renewal after
    // the takeover finds it, long before the 45 s deadline.
    assert!(took <= Duration::from_secs(2), "found at the next renewal: {took:?}");
    assert_eq!(
        world.redis_get(&world.key("lock", &message)).await.as_deref(),
        Some("token|elsewhere|w-elsewhere"),
        "the new holder's lock is not released by the one that lost it"
    );
    assert_eq!(world.env.rows(&fp).await, (0, 0));
    world.env.finish().await;
}

#[tokio::test]
async fn renewals_that_keep_failing_end_the_work_before_the_lease_lapses() {
    let mut world = World::new(Acts::Answers, |c| c.redis.lock_ttl_secs = 3).await;
    warmed_up(&world).await;
    world.acting(Acts::BreaksTheLockAndHangs);
    let message = world.env.message("m-1", "+254700000001", "hello");

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    match &outcome {
        Outcome::Failed { error: error @ Failure::Cut(Cut::Lapsing(_)), .. } => {
            assert_eq!(error.kind(), "lease_lapsing");
            assert!(error.render().contains("WRONGTYPE"), "the cause is kept: {}", error.render());
        }
        other => panic!("expected the lease to lapse: {other:?}"),
    }
    // Renewals every second (a third of the 3 s TTL): the first failure is
    // ridden out, the one that leaves less than an interval ends the work.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "before the lease lapsed: {took:?}"
    );
    world.env.finish().await;
}
