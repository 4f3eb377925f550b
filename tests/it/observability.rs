//! `/metrics`, `/healthz`, `/readyz` on a running worker (CONTRACT §7).

use std::collections::HashMap;
use std::time::Duration;

use testkit::proxy;

use crate::harness::{TestEnv, eventually};

async fn get(url: &str) -> (u16, String) {
    chat_worker::tls::install_crypto();
    match reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Parses the Prometheus text format strictly enough to catch a broken
/// exposition: `# HELP`/`# TYPE` lines, then `name{labels} value` samples.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split_whitespace().next().unwrap_or("");
            assert!(matches!(kind, "HELP" | "TYPE" | "EOF" | "UNIT"), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_their_counters_move_as_messages_flow() {
    let env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    let mut worker = env.spawn_worker("metered");
    env.ready(&mut worker).await;
    let addr = *worker.tally.admin_addr.get().expect("admin address");
    let url = format!("http://{addr}");
    assert_eq!(get(&format!("{url}/healthz")).await, (200, "ok\n".to_owned()));

    let before = parse_prometheus(&get(&format!("{url}/metrics")).await.1);
    assert_eq!(
        before.get("chat_worker_messages_total{outcome=\"processed\"}"),
        Some(&0.0),
        "exported at zero from the start"
    );
    for text in ["Do you have running shoes under 5000?", "the second one", "What are your opening hours?"] {
        env.converse("metered-customer", text).await;
    }
    env.publish(b"not json").await;
    eventually("the rejection is counted", || async {
        worker.tally.rejected.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    eventually("the health watcher has run", || async { get(&format!("{url}/readyz")).await.0 == 200 }).await;

    let (status, text) = get(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    let after = parse_prometheus(&text);
    let value =
        |series: &str| after.get(series).copied().unwrap_or_else(|| panic!("missing {series} in\n{text}"));
    assert_eq!(value("chat_worker_messages_total{outcome=\"processed\"}"), 3.0);
    assert_eq!(value("chat_worker_messages_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(value("chat_worker_dead_letters_total{kind=\"malformed\"}"), 1.0);
    assert_eq!(value("chat_worker_messages_in_flight"), 0.0);
    for stage in ["decode", "tenant", "lock", "catalog", "history", "respond", "persist", "publish", "ack"] {
        let count = value(&format!("chat_worker_stage_duration_seconds_count{{stage=\"{stage}\"}}"));
        assert!(count >= 3.0, "stage {stage} observed {count} times");
    }
    eventually("cache lookups are exported", || async {
        let m = parse_prometheus(&get(&format!("{url}/metrics")).await.1);
        m.get("chat_worker_cache_lookups_total{tier=\"local\"}").copied().unwrap_or(0.0) > 0.0
    })
    .await;
    for series in [
        "chat_worker_db_pool_connections",
        "chat_worker_redis_round_trips_total",
        "chat_worker_inbound_queue_depth",
    ] {
        assert!(after.contains_key(series), "{series}");
    }
    let (status, _) = get(&format!("{url}/nope")).await;
    assert_eq!(status, 404);
    worker.stop().await.expect("stop");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_not_ready_while_rabbitmq_is_unreachable_and_ready_after() {
    let mut env = TestEnv::new().await;
    let upstream = url::Url::parse(&env.config.amqp.url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "127.0.0.1:5672".into());
    let broker = proxy::tcp(&upstream).await.expect("proxy");
    env.config.amqp.url = format!("amqp://guest:guest@{}/%2f", broker.addr);
    let mut worker = env.spawn_worker("readiness");
    env.ready(&mut worker).await;
    let url = format!("http://{}/readyz", worker.tally.admin_addr.get().expect("addr"));
    eventually("ready", || async { get(&url).await.0 == 200 }).await;

    broker.cut();
    eventually("not ready while RabbitMQ is unreachable", || async {
        let (status, body) = get(&url).await;
        status == 503 && body.contains("rabbitmq=down")
    })
    .await;
    assert_eq!(get(&url.replace("readyz", "healthz")).await.0, 200, "alive all the same");

    broker.restore();
    eventually("ready again once it is back", || async { get(&url).await.0 == 200 }).await;
    let metrics = get(&url.replace("readyz", "metrics")).await.1;
    assert!(metrics.contains("chat_worker_reconnects_total{service=\"rabbitmq\"} 1"), "{metrics}");
    env.publish_json(&env.message("after-outage", "c", "hello")).await;
    eventually("consuming again", || async {
        worker.tally.processed.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    worker.stop().await.expect("stop");
    env.finish().await;
}

/// `--log-format json`: one JSON object per line, and each line of a message's
/// handling carries its fingerprint and trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_a_message_carry_its_fingerprint_and_trace_id() {
    let env = TestEnv::new().await;
    env.on_message_insert("RAISE EXCEPTION 'disk full'").await;
    let worker = env
        .worker_command("json-logs")
        .args(["--log-format", "json"])
        .env("WORKER__WORKER__MAX_ATTEMPTS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let message = env.message("m-logged", "c", "hello");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-b7ad6b7169203331-01").as_bytes().into()),
    );
    env.publish_with_headers(message.to_string().as_bytes(), headers).await;
    eventually("dead-lettered", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 1 }).await;
    let pid = worker.id().expect("running").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let out = worker.wait_with_output().await.expect("output");
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["fields"]["message"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{text}");
    let spans = failed[0]["spans"].as_array().cloned().unwrap_or_default();
    let consumer = spans.iter().find(|s| s["name"] == "process worker.inbound").expect("the consumer span");
    assert_eq!(consumer["chat.fingerprint"], crate::harness::fingerprint_of(&message));
    assert_eq!(consumer["trace_id"], trace_id);
    env.finish().await;
}
