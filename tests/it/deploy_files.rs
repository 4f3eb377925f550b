//! `deploy/`: the compose file, the Prometheus and collector configs and the
//! Grafana provisioning parse (with real YAML and JSON parsers), agree with one
//! another, and the dashboard only asks for metrics the worker exports.
//! deploy/k8s has its own module (`k8s_manifests`), which uses the helpers here.

use std::collections::BTreeSet;

use chat_worker::config::Config;
use chat_worker::telemetry::metrics::Metrics;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

pub(super) fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn yaml(path: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    // Compose files use `<<:` merge keys, which docker compose applies.
    value.apply_merge().unwrap_or_else(|e| panic!("{path}: merge keys: {e}"));
    value
}

#[test]
fn the_compose_file_brings_up_the_services_the_fleet_and_the_observability_stack() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for wanted in [
        "rabbitmq",
        "redis",
        "postgres",
        "otel-collector",
        "tempo",
        "prometheus",
        "grafana",
        "worker-1",
        "worker-2",
        "worker-3",
    ] {
        assert!(names.contains(wanted), "compose lacks {wanted}: {names:?}");
    }
    for worker in ["worker-1", "worker-2", "worker-3"] {
        let env = &services[worker]["environment"];
        assert_eq!(env["WORKER_ADMIN_ADDR"].as_str(), Some("0.0.0.0:9464"), "{worker}");
        assert!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str().is_some_and(|e| e.contains("otel-collector")),
            "{worker}"
        );
        assert_eq!(env["WORKER__WORKER__ID"].as_str(), Some(worker));
    }
    let prometheus = yaml("deploy/prometheus.yml");
    let targets: Vec<&str> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .map(|t| t.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(targets, ["worker-1:9464", "worker-2:9464", "worker-3:9464"]);

    // What a compose worker's environment really configures, read back from the
    // worker itself: the admin address Prometheus scrapes, its id, its services.
    for (worker, target) in ["worker-1", "worker-2", "worker-3"].into_iter().zip(&targets) {
        let config = effective_config(&services[worker]["environment"]);
        let addr: std::net::SocketAddr =
            config["admin"]["addr"].as_str().and_then(|a| a.parse().ok()).expect("an admin address");
        assert!(addr.ip().is_unspecified(), "{worker} must listen beyond loopback for Prometheus: {addr}");
        assert_eq!(target.rsplit_once(':').map(|(_, p)| p), Some(addr.port().to_string().as_str()));
        assert_eq!(config["worker"]["id"], worker);
        assert_eq!(config["amqp"]["url"], "amqp://guest:***@rabbitmq:5672/%2f");
        assert_eq!(config["database"]["url"], "postgres://postgres:***@postgres:5432/worker");
        // Compose kills a container 10 s after SIGTERM unless told otherwise.
        let grace = services[worker]["stop_grace_period"].as_str().and_then(|g| g.strip_suffix('s'));
        let grace: u64 = grace.and_then(|g| g.parse().ok()).expect("stop_grace_period in seconds, e.g. 75s");
        let bound = chat_worker::worker::shutdown_bound(&typed(&config));
        assert!(
            grace > bound.as_secs(),
            "{worker}: stop_grace_period {grace}s must exceed the stop bound {bound:?}"
        );
    }
    let collector = yaml("deploy/otel-collector.yaml");
    assert!(
        collector["receivers"]["otlp"]["protocols"]["grpc"].is_mapping()
            && collector["receivers"]["otlp"]["protocols"]["http"].is_mapping()
    );
    assert_eq!(collector["service"]["pipelines"]["traces"]["exporters"][0].as_str(), Some("otlp/tempo"));
}

/// `worker config` run with exactly this environment (and nothing of ours).
pub(super) fn effective_config(environment: &Yaml) -> Json {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command.env_clear().arg("config");
    for (key, value) in environment.as_mapping().expect("an environment mapping") {
        let value = match value {
            Yaml::String(s) => s.clone(),
            other => serde_yaml::to_string(other).expect("a scalar").trim().to_owned(),
        };
        command.env(key.as_str().expect("a variable name"), value);
    }
    let out = command.output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// `worker config`'s JSON as the `Config` it prints (passwords stay redacted).
pub(super) fn typed(config: &Json) -> Config {
    serde_json::from_value(config.clone()).expect("worker config's output is a Config")
}

#[test]
fn the_dashboard_parses_uses_the_provisioned_datasources_and_only_exported_metrics() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let uids: BTreeSet<String> = datasources["datasources"]
        .as_sequence()
        .map(|d| d.iter().filter_map(|x| x["uid"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(uids, BTreeSet::from(["prometheus".to_owned(), "tempo".to_owned()]));
    yaml("deploy/grafana/provisioning/dashboards/dashboards.yaml");

    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/dashboards/chat-worker.json")).expect("dashboard JSON");
    let exported: BTreeSet<String> = Metrics::new()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let known = |name: &str| {
        exported.iter().any(|base| {
            [
                base.clone(),
                format!("{base}_total"),
                format!("{base}_bucket"),
                format!("{base}_count"),
                format!("{base}_sum"),
            ]
            .iter()
            .any(|n| n == name)
        })
    };
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut checked = 0;
    for panel in panels {
        let uid = panel["datasource"]["uid"].as_str().unwrap_or_default();
        assert!(uids.contains(uid), "panel {} uses unknown datasource {uid}", panel["title"]);
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else { continue };
            for token in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| t.starts_with("chat_worker_"))
            {
                assert!(
                    known(token),
                    "panel {} asks for {token}, which the worker does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked} metric references checked");
}
