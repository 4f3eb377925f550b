//! Traces as a real OTLP receiver sees them: the worker binary exports over
//! OTLP/HTTP (protobuf) to a local server, which decodes what arrives.

use std::collections::HashMap;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use testkit::http_stub::{self, Answer};

use crate::harness::{PATIENCE, TestEnv, eventually, fingerprint_of, header_str};

fn spans(stub: &http_stub::Stub) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    for body in stub.raw_bodies() {
        let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) else { continue };
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref().and_then(|v| v.value.clone()))
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                out.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    out
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| {
            let value = match a.value.as_ref().and_then(|v| v.value.clone()) {
                Some(AnyValue::StringValue(s)) => s,
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (a.key.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_continue_the_producers_trace_and_the_reply_carries_it_on() {
    let env = TestEnv::new().await;
    let receiver = http_stub::serve(Answer::Json(200, String::new())).await.expect("stub");
    let mut worker = env
        .worker_command("traced")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_SERVICE_NAME", "chat-worker-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .expect("spawn");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let message = env.message("m-traced", "c-traced", "hello");
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(format!("00-{trace_id}-{producer_span}-01").as_bytes())),
    );
    env.channel
        .basic_publish(
            env.config.amqp.inbound_exchange.as_str().into(),
            format!("whatsapp.{}", env.tenant_id).into(),
            BasicPublishOptions::default(),
            message.to_string().as_bytes(),
            BasicProperties::default().with_message_id("m-traced".into()).with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    eventually("the reply", || async { env.queue_depth(&env.replies_queue).await > 0 }).await;
    let replies = env.replies().await;
    let traceparent = header_str(&replies[0].0, "traceparent").expect("the reply carries a traceparent");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "same trace: {traceparent}");

    eventually("spans exported", || async {
        spans(&receiver).iter().any(|(_, s)| s.name.starts_with("process ") && hex(&s.trace_id) == trace_id)
    })
    .await;
    // Children end before their parent, so by now they are exported too; give the
    // batch one more period to be sure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = spans(&receiver);
    let (service, consumer) = all
        .iter()
        .find(|(_, s)| s.name.starts_with("process ") && hex(&s.trace_id) == trace_id)
        .cloned()
        .expect("consumer span");
    assert_eq!(service, "chat-worker-test");
    assert_eq!(consumer.name, format!("process {}", env.config.amqp.inbound_queue));
    assert_eq!(consumer.kind, 5, "SPAN_KIND_CONSUMER");
    assert_eq!(hex(&consumer.parent_span_id), producer_span, "continues the producer's span");
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(hex(&consumer.span_id).as_str()),
        "the reply's traceparent names the consumer span"
    );
    let attrs = attributes(&consumer);
    let fp = fingerprint_of(&message);
    for (key, want) in [
        ("messaging.system", "rabbitmq"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", env.config.amqp.inbound_queue.as_str()),
        ("messaging.message.id", "m-traced"),
        ("chat.tenant_id", &env.tenant_id.to_string()),
        ("chat.fingerprint", &fp),
        ("chat.outcome", "processed"),
        ("chat.lock", "acquired"),
    ] {
        assert_eq!(attrs.get(key).map(String::as_str), Some(want), "{key} in {attrs:?}");
    }
    assert!(
        attrs.contains_key("messaging.message.body.size")
            && attrs.contains_key("messaging.rabbitmq.message.delivery_tag")
    );

    let children: Vec<&Span> =
        all.iter().map(|(_, s)| s).filter(|s| s.parent_span_id == consumer.span_id).collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for stage in ["decode", "tenant", "lock", "catalog", "history", "respond", "persist", "publish", "ack"] {
        assert!(names.contains(&stage), "stage span {stage} in {names:?}");
    }
    for cached in ["tenant", "catalog"] {
        let span = children.iter().find(|s| s.name == cached).expect("stage span");
        let tier = attributes(span).get("cache.tier").cloned().unwrap_or_default();
        assert!(["local", "redis", "database"].contains(&tier.as_str()), "{cached}: cache.tier = {tier:?}");
    }
    println!("trace {trace_id} as the receiver saw it:");
    let ms = |s: &Span| (s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)) as f64 / 1e6;
    println!(
        "  {} [{}] {:.2} ms",
        consumer.name,
        attrs.get("chat.outcome").map(String::as_str).unwrap_or(""),
        ms(&consumer)
    );
    let mut ordered = children.clone();
    ordered.sort_by_key(|s| s.start_time_unix_nano);
    for child in ordered {
        println!("    {} {:.2} ms", child.name, ms(child));
    }

    let pid = worker.id().expect("running").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let status = tokio::time::timeout(PATIENCE, worker.wait()).await.expect("stops").expect("wait");
    assert!(status.success());
    env.finish().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With no OTLP endpoint the worker exports nothing, so the reply carries the
/// gateway's trace context on unchanged (CONTRACT §4) — and none when the
/// gateway sent none, or sent something that is not one.
#[tokio::test]
async fn without_traces_the_reply_forwards_the_gateways_traceparent_unchanged() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker("w-forward");
    env.ready(&mut worker).await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    // (message id, headers the gateway sets, traceparent and tracestate the reply carries)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>, Option<&'a str>);
    let cases: [Case; 3] = [
        ("m-with-trace", vec![("traceparent", parent), ("tracestate", state)], Some(parent), Some(state)),
        ("m-without-trace", vec![], None, None),
        ("m-bad-trace", vec![("traceparent", "00-not-a-trace-01"), ("tracestate", state)], None, None),
    ];
    for (id, headers, want_parent, want_state) in cases {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(k.into(), AMQPValue::LongString(LongString::from(v.as_bytes())));
        }
        env.publish_with_headers(env.message(id, &format!("c-{id}"), "hello").to_string().as_bytes(), table)
            .await;
        let started = std::time::Instant::now();
        let reply = loop {
            let found = env.replies().await.into_iter().find(|(_, body)| body["in_reply_to"] == id);
            if let Some((delivery, _)) = found {
                break delivery;
            }
            assert!(started.elapsed() < PATIENCE, "no reply to {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(header_str(&reply, "traceparent").as_deref(), want_parent, "{id}");
        assert_eq!(header_str(&reply, "tracestate").as_deref(), want_state, "{id}");
    }
    worker.stop().await.expect("clean stop");
    env.finish().await;
}
