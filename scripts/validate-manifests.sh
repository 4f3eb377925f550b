#!/usr/bin/env bash
# `make manifests` (and the start of `make test`): check deploy/k8s offline, with no
# cluster and no kubectl needed. scripts/check_manifests.py says what is checked; it
# runs in a venv under target/ holding kubernetes-validate from PyPI (Kubernetes' own
# schemas), made on the first run and kept. With kubectl present, `kubectl kustomize`
# must also render the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: its schemas are the reference, so a new release must not change a verdict unseen.
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
VENV=target/manifests-venv

fail() {
  echo "validate-manifests: FAILED: $*" >&2
  exit 1
}

command -v python3 >/dev/null || fail "python3 not found (needed for the offline checks of deploy/k8s)"
if ! "$VENV/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null \
  || [ "$(cat "$VENV/.pinned" 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
  echo "validate-manifests: installing $KUBERNETES_VALIDATE into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" \
    || fail "pip could not install $KUBERNETES_VALIDATE from PyPI"
  echo "$KUBERNETES_VALIDATE" >"$VENV/.pinned"
fi

"$VENV/bin/python" scripts/check_manifests.py deploy/k8s \
  || fail "deploy/k8s: the problems above (scripts/check_manifests.py)"

if command -v kubectl >/dev/null; then
  kubectl kustomize deploy/k8s >/dev/null || fail "kubectl kustomize deploy/k8s does not render"
  echo "deploy/k8s: kubectl kustomize renders it"
fi
