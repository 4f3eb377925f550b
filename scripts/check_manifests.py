"""Offline checks of deploy/k8s (run by scripts/validate-manifests.sh, in its venv).

- kustomization.yaml lists exactly the manifests in the directory, one object each;
- every core object validates, strictly (no unknown field), against Kubernetes'
  own schemas (kubernetes-validate) for each version in K8S_VERSIONS;
- the custom resources, which those schemas lack, against the small schemas below
  (KEDA ScaledObject and TriggerAuthentication, Prometheus Operator ServiceMonitor),
  and the HPA that KEDA makes from the ScaledObject against Kubernetes' schema;
- the objects agree with one another: selectors, named ports, the Secret's name,
  the ScaledObject's target and authentication.

Consistency with the worker binary itself (admin port, probe paths, environment
names, grace period, queue name) is tests/it/k8s_manifests.rs's.
"""

import os
import sys

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes the manifests claim (PDB unhealthyPodEvictionPolicy is GA in
# 1.31) and the newest the pinned kubernetes-validate knows.
K8S_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]

CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2"}

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}


def obj(properties, required=(), closed=True):
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": not closed,
    }


METADATA = obj(
    {"name": NAME, "namespace": NAME, "labels": STRING_MAP, "annotations": STRING_MAP},
    required=["name"],
)


def resource(api_version, kind, spec):
    return obj(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        required=["apiVersion", "kind", "metadata", "spec"],
    )


# KEDA 2.x, keda.sh/v1alpha1 (fields of its CRDs; metadata values are strings there).
SCALED_OBJECT = resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    obj(
        {
            "scaleTargetRef": obj(
                {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": NAME,
                    "envSourceContainerName": {"type": "string"},
                },
                required=["name"],
            ),
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "initialCooldownPeriod": {"type": "integer", "minimum": 0},
            "idleReplicaCount": {"type": "integer", "minimum": 0},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "fallback": obj(
                {
                    "failureThreshold": {"type": "integer", "minimum": 1},
                    "replicas": {"type": "integer", "minimum": 0},
                    "behavior": {"type": "string"},
                },
                required=["failureThreshold", "replicas"],
            ),
            "advanced": obj(
                {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    # Checked as the HPA KEDA makes, against Kubernetes' schema.
                    "horizontalPodAutoscalerConfig": obj(
                        {"name": NAME, "behavior": {"type": "object"}}
                    ),
                    "scalingModifiers": {"type": "object"},
                }
            ),
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "type": {"type": "string"},
                        "name": {"type": "string"},
                        "metadata": STRING_MAP,
                        "authenticationRef": obj(
                            {
                                "name": NAME,
                                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                            },
                            required=["name"],
                        ),
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "useCachedMetrics": {"type": "boolean"},
                    },
                    required=["type", "metadata"],
                ),
            },
        },
        required=["scaleTargetRef", "triggers"],
    ),
)

# The rabbitmq scaler's metadata (KEDA docs, "RabbitMQ Queue"): what this fleet uses.
RABBITMQ_TRIGGER_METADATA = obj(
    {
        "protocol": {"enum": ["auto", "http", "amqp"]},
        "queueName": {"type": "string", "minLength": 1},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
        "activationValue": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
        "vhostName": {"type": "string"},
        "excludeUnacknowledged": {"enum": ["true", "false"]},
        "useRegex": {"enum": ["true", "false"]},
        "operation": {"enum": ["sum", "max", "avg"]},
        "timeout": {"type": "string", "pattern": "^[0-9]+$"},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
    required=["queueName", "mode", "value"],
)

TRIGGER_AUTHENTICATION = resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    obj(
        {
            "secretTargetRef": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {"parameter": {"type": "string"}, "name": NAME, "key": {"type": "string", "minLength": 1}},
                    required=["parameter", "name", "key"],
                ),
            },
            "env": {"type": "array"},
            "podIdentity": {"type": "object"},
        },
        required=["secretTargetRef"],
    ),
)

SERVICE_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    obj(
        {
            "selector": obj({"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}}),
            "namespaceSelector": {"type": "object"},
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array"},
                        "metricRelabelings": {"type": "array"},
                        "tlsConfig": {"type": "object"},
                    },
                    required=["port"],
                ),
            },
        },
        required=["selector", "endpoints"],
    ),
)

CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def load(directory):
    """Every manifest, by file name, after checking kustomization.yaml against the directory."""
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    listed = kustomization.get("resources") or []
    present = sorted(n for n in os.listdir(directory) if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml")
    if sorted(listed) != present or len(set(listed)) != len(listed):
        problem("kustomization.yaml", f"resources {sorted(listed)} must be exactly the manifests present, {present}")
    objects = {}
    for name in present:
        with open(os.path.join(directory, name)) as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
        if len(documents) != 1 or not isinstance(documents[0], dict):
            problem(name, f"must hold exactly one object, holds {len(documents)}")
            continue
        objects[name] = documents[0]
    return objects


def validate(name, o):
    key = (o.get("apiVersion"), o.get("kind"))
    if key in CUSTOM:
        for error in jsonschema.Draft202012Validator(CUSTOM[key]).iter_errors(o):
            path = ".".join(str(p) for p in error.absolute_path) or "(top)"
            problem(name, f"{path}: {error.message}")
    elif key[0] in CORE_GROUPS:
        core(name, o)
    else:
        problem(name, f"{key[0]} {key[1]} is neither a core kind nor one of the custom resources checked here")


def core(name, o):
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            problem(name, f"Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(name, e.message)


def by_kind(objects, kind):
    found = [(n, o) for n, o in objects.items() if o.get("kind") == kind]
    if len(found) != 1:
        problem("deploy/k8s", f"wants exactly one {kind}, has {len(found)}")
        return None, {}
    return found[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_check(objects):
    _, deployment = by_kind(objects, "Deployment")
    _, service = by_kind(objects, "Service")
    _, monitor = by_kind(objects, "ServiceMonitor")
    _, pdb = by_kind(objects, "PodDisruptionBudget")
    _, scaled = by_kind(objects, "ScaledObject")
    _, auth = by_kind(objects, "TriggerAuthentication")
    _, job = by_kind(objects, "Job")
    if not all([deployment, service, monitor, pdb, scaled, auth, job]):
        return
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    containers = pod["spec"]["containers"]
    port_names = {p.get("name") for c in containers for p in c.get("ports", [])}

    if not selects(deployment["spec"]["selector"].get("matchLabels"), pod_labels):
        problem("deployment.yaml", "spec.selector does not select its own pod template")
    if "replicas" in deployment["spec"]:
        problem("deployment.yaml", "spec.replicas would fight the HPA that KEDA makes: leave it out")
    for c in containers:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                problem("deployment.yaml", f"{c['name']}'s {probe} uses port {port}, which it does not name")
    for spread in pod["spec"].get("topologySpreadConstraints", []):
        if not selects(spread.get("labelSelector", {}).get("matchLabels"), pod_labels):
            problem("deployment.yaml", f"topology spread on {spread.get('topologyKey')} selects other pods")
    if not selects(service["spec"].get("selector"), pod_labels):
        problem("service.yaml", "spec.selector does not select the Deployment's pods")
    for port in service["spec"]["ports"]:
        if isinstance(port.get("targetPort"), str) and port["targetPort"] not in port_names:
            problem("service.yaml", f"targetPort {port['targetPort']} is no container port of the Deployment")
    if not selects(monitor["spec"]["selector"].get("matchLabels"), service["metadata"].get("labels", {})):
        problem("servicemonitor.yaml", "spec.selector does not select the Service")
    service_ports = {p.get("name") for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint["port"] not in service_ports:
            problem("servicemonitor.yaml", f"port {endpoint['port']} is not a port name of the Service")
    if ("minAvailable" in pdb["spec"]) == ("maxUnavailable" in pdb["spec"]):
        problem("poddisruptionbudget.yaml", "wants exactly one of minAvailable and maxUnavailable")
    if not selects(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
        problem("poddisruptionbudget.yaml", "spec.selector does not select the Deployment's pods")

    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    if target.get("name") != name or target.get("kind", "Deployment") != "Deployment":
        problem("scaledobject.yaml", f"scaleTargetRef must name the Deployment {name}")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not 1 <= low <= high:
        problem("scaledobject.yaml", f"wants 1 <= minReplicaCount ({low}) <= maxReplicaCount ({high})")
    for i, trigger in enumerate(spec["triggers"]):
        where = f"scaledobject.yaml triggers.{i}"
        if trigger["type"] != "rabbitmq":
            problem(where, f"type is {trigger['type']}, not rabbitmq")
            continue
        for error in jsonschema.Draft202012Validator(RABBITMQ_TRIGGER_METADATA).iter_errors(trigger["metadata"]):
            problem(where, f"metadata: {error.message}")
        meta = trigger["metadata"]
        if meta.get("mode") == "QueueLength" and float(meta.get("value", "0") or 0) < 1:
            problem(where, "a QueueLength value below 1 message per worker")
        if meta.get("mode") == "MessageRate" and meta.get("protocol") != "http":
            problem(where, "mode MessageRate needs protocol http")
        if trigger.get("authenticationRef", {}).get("name") != auth["metadata"]["name"]:
            problem(where, f"authenticationRef must name the TriggerAuthentication {auth['metadata']['name']}")
    # The HPA KEDA makes from it, checked against Kubernetes' own schema.
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{scaled['metadata']['name']}"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(low, 1),
            "maxReplicas": high,
        },
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        hpa["spec"]["behavior"] = behavior
    core("scaledobject.yaml (as the HPA KEDA makes)", hpa)

    secrets = {
        ref["secretKeyRef"]["name"]
        for o in (deployment, job)
        for c in o["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        for ref in [e.get("valueFrom", {})]
        if "secretKeyRef" in ref
    }
    if len(secrets) != 1:
        problem("deploy/k8s", f"the Deployment and the Job read one Secret, not {sorted(secrets)}")
    for ref in auth["spec"]["secretTargetRef"]:
        if ref["name"] not in secrets:
            problem("triggerauthentication.yaml", f"reads Secret {ref['name']}, not the workers' {sorted(secrets)}")
    images = {c["image"] for o in (deployment, job) for c in o["spec"]["template"]["spec"]["containers"]}
    if len(images) != 1:
        problem("migrate-job.yaml", f"must run the Deployment's image, not {sorted(images)}")


def main(directory):
    objects = load(directory)
    for name, o in objects.items():
        validate(name, o)
    if not problems:
        cross_check(objects)
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    versions = " and ".join(K8S_VERSIONS)
    print(f"deploy/k8s: {len(objects)} manifests valid (Kubernetes {versions}, KEDA, ServiceMonitor) and consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/k8s"))
