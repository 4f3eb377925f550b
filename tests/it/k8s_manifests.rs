//! `deploy/k8s/` against the worker itself: the Deployment's environment, read back
//! through `worker config`, listens where the probes, the Service and the
//! ServiceMonitor look; every variable is one the worker reads; the grace period
//! outlasts the stop; KEDA watches the queue the worker consumes; the Job migrates;
//! the user is the image's. Schemas and cross-references between the objects are
//! scripts/validate-manifests.sh's (the start of `make test`).

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

use super::deploy_files::{effective_config, read, typed, yaml};

/// What the kubelet would give a pod for a field reference.
const POD_NAME: &str = "chat-worker-7d9f8c6b5-x2x7q";

/// Variables CONTRACT §1 names, which the worker reads besides `WORKER__<SECTION>__<KEY>`.
const CONTRACT_VARIABLES: &[&str] = &[
    "AMQP_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "DATABASE_LISTEN_URL",
    "WORKER_ADMIN_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// A stand-in for each key of the Secret `chat-worker`, with a host to find again.
fn secret_value(key: &str) -> &'static str {
    match key {
        "AMQP_URL" => "amqp://worker:hunter2@rabbitmq.k8s.test:5672/%2f",
        "REDIS_URL" => "redis://:hunter2@redis.k8s.test:6379/0",
        "DATABASE_URL" => "postgres://worker:hunter2@postgres.k8s.test:5432/worker",
        "DATABASE_LISTEN_URL" => "postgres://worker:hunter2@postgres-direct.k8s.test:5432/worker",
        // Without a password: it is compared with `worker config`'s (redacted) value.
        "WORKER__REDIS__CACHE_URL" => "redis://redis-cache.k8s.test:6379/0",
        "WORKER__DATABASE__PREPARED_STATEMENTS" => "false",
        other => panic!("the Secret key {other} has no stand-in here: add one"),
    }
}

fn manifest(file: &str) -> Yaml {
    yaml(&format!("deploy/k8s/{file}"))
}

fn container<'a>(workload: &'a Yaml, file: &str) -> &'a Yaml {
    let containers = workload["spec"]["template"]["spec"]["containers"].as_sequence();
    match containers.map(Vec::as_slice) {
        Some([one]) => one,
        _ => panic!("{file}: one container"),
    }
}

/// The container's environment as the kubelet resolves it: values as they are, the
/// pod's name for `metadata.name`, a stand-in for each Secret key.
fn environment(container: &Yaml) -> Mapping {
    let mut env = Mapping::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("a name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            assert_eq!(var["valueFrom"]["secretKeyRef"]["name"], "chat-worker", "{name}");
            secret_value(key).to_owned()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            POD_NAME.to_owned()
        } else {
            panic!("{name}: a value, a Secret key or the pod's name");
        };
        assert!(env.insert(Yaml::from(name.clone()), Yaml::from(value)).is_none(), "{name} twice");
    }
    env
}

/// Every variable is one the worker reads, and a `WORKER__` one names an existing
/// key and sets it (read back from `worker config`).
fn assert_read_by_the_worker(env: &Mapping, config: &Json, file: &str) {
    for (name, value) in env {
        let (name, value) = (name.as_str().expect("a name"), value.as_str().expect("a string"));
        if CONTRACT_VARIABLES.contains(&name) {
            continue;
        }
        let path = name.strip_prefix("WORKER__").map(|key| key.to_ascii_lowercase());
        let setting = path.as_deref().and_then(|p| p.split_once("__")).map(|(s, k)| &config[s][k]);
        let shown = match setting {
            Some(Json::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => panic!(
                "{file}: {name} is not a variable the worker reads (CONTRACT §1 or WORKER__<SECTION>__<KEY>)"
            ),
        };
        assert_eq!(shown, value, "{file}: {name} does not set what it says");
    }
}

/// The port a probe or Service names, as a number: by the container port's name or as is.
fn port_number(port: &Yaml, container: &Yaml) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("a port name or number");
    container["ports"]
        .as_sequence()
        .and_then(|ports| ports.iter().find(|p| p["name"].as_str() == Some(name)))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn the_deployment_configures_the_worker_the_other_objects_expect() {
    let deployment = manifest("deployment.yaml");
    let worker = container(&deployment, "deployment.yaml");
    let env = environment(worker);
    let config = effective_config(&Yaml::Mapping(env.clone()));
    assert_read_by_the_worker(&env, &config, "deployment.yaml");

    // The connections come from the Secret, and the pod is named in locks and states.
    for (section, host) in
        [("amqp", "@rabbitmq.k8s.test:"), ("redis", "@redis.k8s.test:"), ("database", "@postgres.k8s.test:")]
    {
        let url = config[section]["url"].as_str().unwrap_or_default();
        assert!(url.contains(host) && !url.contains("hunter2"), "{section}.url: {url}");
    }
    assert_eq!(config["worker"]["id"], POD_NAME);

    // The admin endpoint listens beyond loopback, on the port everything else uses.
    let addr: std::net::SocketAddr =
        config["admin"]["addr"].as_str().and_then(|a| a.parse().ok()).expect("an admin address");
    assert!(addr.ip().is_unspecified(), "the kubelet and Prometheus reach the pod's IP, not {addr}");
    let admin = u64::from(addr.port());
    for (probe, path) in
        [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    {
        let get = &worker[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_number(&get["port"], worker), admin, "{probe}");
    }
    let service = manifest("service.yaml");
    let service_port = service["spec"]["ports"]
        .as_sequence()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "admin"))
        .expect("the Service's admin port");
    assert_eq!(port_number(&service_port["targetPort"], worker), admin);
    // An unready worker (a service down, the responder's circuit open) is still scraped.
    assert_eq!(service["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));
    let monitor = manifest("servicemonitor.yaml");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // SIGKILL never comes before the worker's own bound on its stop.
    let bound = chat_worker::worker::shutdown_bound(&typed(&config));
    let grace =
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().expect("a grace");
    assert!(
        grace > bound.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed the stop bound {bound:?}"
    );
    // The startup probe waits longer than `run` waits for its services.
    let startup = &worker["startupProbe"];
    let patience =
        startup["periodSeconds"].as_u64().unwrap_or(10) * startup["failureThreshold"].as_u64().unwrap_or(3);
    let startup_timeout = config["worker"]["startup_timeout_secs"].as_u64().expect("startup_timeout_secs");
    assert!(
        patience > startup_timeout,
        "startupProbe gives up after {patience}s, run waits {startup_timeout}s"
    );

    // KEDA counts the queue the workers consume.
    let scaled = manifest("scaledobject.yaml");
    let triggers = scaled["spec"]["triggers"].as_sequence().expect("triggers");
    assert!(!triggers.is_empty());
    for trigger in triggers {
        assert_eq!(
            trigger["metadata"]["queueName"],
            config["amqp"]["inbound_queue"].as_str().expect("a queue")
        );
    }

    assert_eq!(worker["args"].as_sequence().and_then(|a| a.last()).and_then(Yaml::as_str), Some("run"));
    assert_the_binary_accepts(worker, "deployment.yaml");
    assert_runs_as_the_images_user(&deployment, worker, "deployment.yaml");
}

#[test]
fn the_migrate_job_runs_worker_migrate_with_the_database_of_the_secret() {
    let job = manifest("migrate-job.yaml");
    let migrate = container(&job, "migrate-job.yaml");
    let env = environment(migrate);
    let config = effective_config(&Yaml::Mapping(env.clone()));
    assert_read_by_the_worker(&env, &config, "migrate-job.yaml");
    let url = config["database"]["url"].as_str().unwrap_or_default();
    assert!(url.contains("@postgres.k8s.test:"), "database.url: {url}");
    assert_eq!(migrate["args"].as_sequence().and_then(|a| a.last()).and_then(Yaml::as_str), Some("migrate"));
    assert_the_binary_accepts(migrate, "migrate-job.yaml");
    assert_runs_as_the_images_user(&job, migrate, "migrate-job.yaml");
}

/// The container's arguments are a command line of `worker` (the image's entrypoint):
/// its subcommand exists (`--help` after it), and the global flags before it parse
/// (clap skips their values' checks for `--help`, so again before `config`, which
/// needs no service).
fn assert_the_binary_accepts(container: &Yaml, file: &str) {
    assert!(container["command"].is_null(), "{file}: the image's ENTRYPOINT is the worker; give args only");
    assert!(read("deploy/Dockerfile").lines().any(|l| l.trim() == r#"ENTRYPOINT ["worker"]"#));
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    let (_, global) = args.split_last().expect("a subcommand");
    for line in [[args.as_slice(), &["--help"]].concat(), [global, &["config"]].concat()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_clear()
            .args(&line)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{file}: worker {line:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `runAsUser`/`runAsGroup` are the Dockerfile's numeric `USER`, never root.
fn assert_runs_as_the_images_user(workload: &Yaml, container: &Yaml, file: &str) {
    let dockerfile = read("deploy/Dockerfile");
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (u64, u64) = (uid.parse().expect("a numeric uid"), gid.parse().expect("a numeric gid"));
    assert_ne!(uid, 0);
    let pod = &workload["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "{file}");
    assert_eq!((pod["runAsUser"].as_u64(), pod["runAsGroup"].as_u64()), (Some(uid), Some(gid)), "{file}");
    let own = &container["securityContext"];
    assert_eq!(own["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
    assert_eq!(own["allowPrivilegeEscalation"].as_bool(), Some(false), "{file}");
}
