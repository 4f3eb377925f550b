//! One message never harms another (CONTRACT §2–§3): hostile and odd input from
//! a gateway, one case of each class, interleaved with good messages and
//! published as one burst to one running worker, by a gateway user of its own
//! (so that a copied `user_id` would make the broker refuse our publishes).
//!
//! For each case: exactly one outcome, the right one, without a failed attempt;
//! for each good neighbour: exactly one reply; nothing copied to a queue a
//! header named; and the worker still settles messages afterwards.

use std::collections::HashMap;
use std::time::Instant;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{PATIENCE, TestEnv, eventually, rabbitmqctl};

mod cases;
mod check;

use cases::{Case, Cases, Expect, PARENT, headers, long};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_ends_in_one_outcome_each_and_never_harms_its_neighbours() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker("w-hostile");
    env.ready(&mut worker).await;

    // A conversation of another customer, on WhatsApp, to point hostile messages at.
    let first = env.converse("c-owner", "hello").await;
    let owners = first["conversation_id"].as_str().expect("conversation id").to_owned();

    // A gateway user of its own, allowed everything on the vhost.
    let gateway_user = format!("gw-{}", env.id());
    rabbitmqctl(&["add_user", &gateway_user, "gw-password"]);
    rabbitmqctl(&["set_permissions", "-p", "/", &gateway_user, ".*", ".*", ".*"]);
    let mut url = url::Url::parse(&env.config.amqp.url).expect("amqp url");
    url.set_username(&gateway_user).expect("user");
    url.set_password(Some("gw-password")).expect("password");
    let gateway =
        Connection::connect(url.as_str(), ConnectionProperties::default()).await.expect("gateway connects");
    let channel = gateway.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");

    // A queue only a header names: nothing may ever arrive there.
    let decoy = format!("t.{}.decoy", env.id());
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    env.channel.queue_declare(decoy.as_str().into(), durable, FieldTable::default()).await.expect("decoy");
    let inbound = env.config.amqp.inbound_queue.clone();
    let named_queues = || AMQPValue::FieldArray(FieldArray::from(vec![long(&inbound), long(&decoy)]));

    let plain = BasicProperties::default().with_content_type("application/json".into());
    let mut cases = Cases { env: &env, list: Vec::new() };
    let invalid = |field| Expect::Dead("invalid", field);

    // Producer data is data: AMQP properties and headers steer nothing.
    let stamped = plain.clone().with_user_id(gateway_user.as_str().into());
    cases.message("user-id-valid", |_| {}, stamped.clone(), Expect::Reply);
    cases.message("user-id-invalid", |m| m["text"] = json!(""), stamped.clone(), invalid("text"));
    let steering = plain
        .clone()
        .with_user_id(gateway_user.as_str().into())
        .with_reply_to(decoy.as_str().into())
        .with_expiration("60000".into())
        .with_priority(9)
        .with_headers(headers(vec![("CC", named_queues()), ("BCC", named_queues())]));
    cases.message("cc-bcc-invalid", |m| m["text"] = json!(""), steering.clone(), invalid("text"));
    cases.message("cc-bcc-valid", |_| {}, steering, Expect::Reply);
    let odd_headers: Vec<(&str, FieldTable)> = vec![
        ("attempts-string", headers(vec![("x-attempts", long("3"))])),
        ("attempts-negative", headers(vec![("x-attempts", AMQPValue::LongLongInt(-1))])),
        ("attempts-huge", headers(vec![("x-attempts", AMQPValue::LongLongInt(1 << 40))])),
        ("attempts-float", headers(vec![("x-attempts", AMQPValue::Double(4.5))])),
        ("delivery-count-string", headers(vec![("x-delivery-count", long("many"))])),
        ("seen-string", headers(vec![("x-worker-seen", long("yes"))])),
        ("traceparent-60kb", headers(vec![("traceparent", long(&"0".repeat(60_000)))])),
        (
            "tracestate-60kb",
            headers(vec![("traceparent", long(PARENT)), ("tracestate", long(&"a=b,".repeat(15_000)))]),
        ),
        ("traceparent-number", headers(vec![("traceparent", AMQPValue::LongLongInt(7))])),
        ("routing-header-forged", headers(vec![("x-routing-key", long("sms.nobody"))])),
        (
            "error-headers-forged",
            headers(vec![("x-error-kind", long("failed")), ("x-error", long("forged"))]),
        ),
    ];
    for (name, table) in odd_headers {
        // On a good message: answered as if the header were absent. On a bad
        // one: its dead letter carries only what a moved message keeps.
        cases.message(name, |_| {}, plain.clone().with_headers(table.clone()), Expect::Reply);
        let bad = format!("{name}-on-invalid");
        cases.message(&bad, |m| m["text"] = json!(""), plain.clone().with_headers(table), invalid("text"));
    }

    // Field rules of §2, each naming its field.
    for (name, field, change) in [
        (
            "nul-external-id",
            "customer.external_id",
            Box::new(|m: &mut Value| m["customer"]["external_id"] = json!("c\u{0}x"))
                as Box<dyn FnOnce(&mut Value)>,
        ),
        ("nul-message-id", "message_id", Box::new(|m: &mut Value| m["message_id"] = json!("h-nul\u{0}id"))),
        ("nul-name", "customer.name", Box::new(|m: &mut Value| m["customer"]["name"] = json!("Am\u{0}ina"))),
        ("nul-metadata-key", "metadata", Box::new(|m: &mut Value| m["metadata"] = json!({"k\u{0}": "v"}))),
        (
            "nul-metadata-value",
            "metadata.k",
            Box::new(|m: &mut Value| m["metadata"] = json!({"k": ["ok", "v\u{0}"]})),
        ),
        (
            "nul-attachment",
            "attachments[0]",
            Box::new(|m: &mut Value| m["attachments"] = json!([{"url": "x\u{0}"}])),
        ),
        ("nul-text", "text", Box::new(|m: &mut Value| m["text"] = json!("hi\u{0}"))),
        ("nul-unknown-field", "extra", Box::new(|m: &mut Value| m["extra"] = json!("\u{0}"))),
        (
            "name-too-long",
            "customer.name",
            Box::new(|m: &mut Value| m["customer"]["name"] = json!("n".repeat(300))),
        ),
        ("foreign-conversation", "conversation_id", {
            let owners = owners.clone();
            Box::new(move |m: &mut Value| m["conversation_id"] = json!(owners))
        }),
        (
            "unknown-conversation",
            "conversation_id",
            Box::new(|m: &mut Value| m["conversation_id"] = json!(Uuid::new_v4())),
        ),
    ] {
        cases.message(name, change, plain.clone(), invalid(field));
    }
    // The owner's own conversation, but named from another channel.
    let mut other_channel = env.message("h-other-channel", "c-owner", "hi");
    other_channel["channel"] = json!("sms");
    other_channel["conversation_id"] = json!(owners);
    cases.raw(
        "other-channel",
        other_channel.to_string().into_bytes(),
        None,
        plain.clone(),
        invalid("conversation_id"),
    );
    let body = env.message("h-key-channel", "c-key-channel", "hi").to_string().into_bytes();
    let key = format!("sms.{}", env.tenant_id);
    cases.raw("key-channel", body, Some(key), plain.clone(), invalid("routing key"));
    let body = env.message("h-key-tenant", "c-key-tenant", "hi").to_string().into_bytes();
    let key = format!("whatsapp.{}", Uuid::new_v4());
    cases.raw("key-tenant", body, Some(key), plain.clone(), invalid("routing key"));

    // Bodies that are no message at all, and a tenant that does not exist.
    let malformed = Expect::Dead("malformed", "body");
    cases.raw("not-json", b"{nope".to_vec(), None, plain.clone(), malformed);
    cases.raw("array", b"[1,2]".to_vec(), None, plain.clone(), malformed);
    cases.raw("not-utf8", vec![0xff, 0xfe, b'{'], None, plain.clone(), malformed);
    cases.raw("too-big", vec![b' '; 300 * 1024], None, plain.clone(), malformed);
    cases.message(
        "unknown-tenant",
        |m| m["tenant_id"] = json!(Uuid::new_v4()),
        plain.clone(),
        Expect::Dead("unknown_tenant", "tenant"),
    );

    let hostile = std::mem::take(&mut cases.list);
    // Good neighbours, interleaved: one before and one after each hostile case.
    let mut burst: Vec<Case> = Vec::new();
    let mut good = Vec::new();
    let neighbour = |name: String| {
        let body = env.message(&name, &format!("c-{name}"), "Do you have shoes?").to_string().into_bytes();
        let properties = plain.clone().with_message_id(name.as_str().into()).with_delivery_mode(2);
        Case { routing_key: env.routing_key_of(&body), id: name, body, properties, expect: Expect::Reply }
    };
    for (i, case) in hostile.into_iter().enumerate() {
        let (before, after) = (neighbour(format!("good-{i}-a")), neighbour(format!("good-{i}-b")));
        good.extend([before.id.clone(), after.id.clone()]);
        burst.extend([before, case, after]);
    }
    let expected: HashMap<String, Expect> = burst.iter().map(|c| (c.id.clone(), c.expect)).collect();

    // One burst: every publish first, then every confirm.
    let settled_before = worker.tally.total();
    let started = Instant::now();
    let mut confirms = Vec::new();
    for case in &burst {
        let publish = channel
            .basic_publish(
                env.config.amqp.inbound_exchange.as_str().into(),
                case.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &case.body,
                case.properties.clone(),
            )
            .await
            .expect("publish");
        confirms.push(publish);
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirm").is_ack(), "the broker took every message");
    }

    // Every delivery settles once, none through a retry.
    let n = burst.len() as u64;
    eventually("every message of the burst settled", || async { worker.tally.total() >= settled_before + n })
        .await;
    let mut replies: HashMap<String, Vec<Value>> = HashMap::new();
    let mut dead: HashMap<String, Vec<lapin::message::Delivery>> = HashMap::new();
    let wanted_replies = expected.values().filter(|e| **e == Expect::Reply).count();
    let wanted_dead = expected.len() - wanted_replies;
    while replies.values().map(Vec::len).sum::<usize>() < wanted_replies
        || dead.values().map(Vec::len).sum::<usize>() < wanted_dead
    {
        assert!(started.elapsed() < PATIENCE, "replies {replies:?}, dead {:?}", dead.keys());
        for (_, body) in env.replies().await {
            let id = body["in_reply_to"].as_str().unwrap_or("?").to_owned();
            replies.entry(id).or_default().push(body);
        }
        for d in env.dead_letters().await {
            let id = d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
            dead.entry(id).or_default().push(d);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Anything late would be a second outcome.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (_, body) in env.replies().await {
        replies.entry(body["in_reply_to"].as_str().unwrap_or("?").to_owned()).or_default().push(body);
    }
    for d in env.dead_letters().await {
        dead.entry(d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default())
            .or_default()
            .push(d);
    }

    for (id, expect) in &expected {
        let got_replies = replies.get(id).map_or(0, Vec::len);
        let got_dead = dead.get(id).map(|d| d.as_slice()).unwrap_or_default();
        match expect {
            Expect::Reply => {
                assert_eq!((got_replies, got_dead.len()), (1, 0), "{id}: one reply, no dead letter");
            }
            Expect::Dead(kind, names) => {
                assert_eq!((got_replies, got_dead.len()), (0, 1), "{id}: one dead letter, no reply");
                let original = burst.iter().find(|c| &c.id == id).expect("case");
                check::dead_letter(id, &got_dead[0], kind, names, original);
            }
        }
    }
    assert_eq!(replies.keys().filter(|k| !expected.contains_key(*k)).count(), 0, "no stray replies");
    for id in &good {
        let fingerprint = replies[id][0]["fingerprint"].as_str().expect("fingerprint").to_owned();
        assert_eq!(env.rows(&fingerprint).await, (1, 1), "{id}: one in and one out row");
    }

    // Nothing went where a header pointed, nothing waits for a retry.
    assert_eq!(env.queue_depth(&decoy).await, 0, "nothing copied to the queue CC/BCC/reply_to named");
    assert_eq!(env.queue_depth(&env.config.amqp.inbound_queue).await, 0, "nothing looped back");
    for n in 1..env.config.worker.max_attempts {
        let retry = format!("{}.{n}", env.config.amqp.retry_queue_prefix);
        assert_eq!(env.queue_depth(&retry).await, 0, "nothing parked in {retry}");
    }
    assert_eq!(worker.tally.failed.load(std::sync::atomic::Ordering::Relaxed), 0, "no failed attempt");
    let addr = *worker.tally.admin_addr.get().expect("admin address");
    chat_worker::tls::install_crypto();
    let metrics =
        reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    for line in metrics.lines() {
        if line.starts_with("chat_worker_messages_total{outcome=\"failed\"}")
            || line.starts_with("chat_worker_retries_total")
        {
            assert!(line.ends_with(" 0"), "no failed attempts in /metrics: {line}");
        }
    }

    // The worker still settles messages, good and bad, afterwards.
    let after = env.converse("c-after", "hello again").await;
    assert_eq!(after["text"].as_str().map(str::is_empty), Some(false));
    env.publish(b"{still not json").await;
    eventually("a dead letter after the burst", || async { !env.dead_letters().await.is_empty() }).await;

    worker.stop().await.expect("clean stop");
    let _ = channel.close(200, "done".into()).await;
    let _ = gateway.close(200, "done".into()).await;
    rabbitmqctl(&["delete_user", &gateway_user]);
    let _ = env.channel.queue_delete(decoy.as_str().into(), QueueDeleteOptions::default()).await;
    env.finish().await;
}
