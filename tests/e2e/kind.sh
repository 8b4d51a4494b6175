#!/usr/bin/env bash
# End-to-end on kind: create (or reuse) a kind cluster, then run tests/e2e/run.sh against it,
# loading the image into the kind node with `kind load docker-image`.
#
#   tests/e2e/kind.sh [SCENARIO …]            # FLOTILLA_IMAGE, E2E_KEEP, … as run.sh takes
#
# Without kind (or kubectl, docker, etcdctl) it prints "SKIPPED: …" and exits 0, unless
# E2E_REQUIRE_KIND=1 (CI), where a missing tool is a failure. Helm comes from tests/e2e/helm.sh
# (a real `helm` when installed, else the Helm library from PyPI).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER="${KIND_CLUSTER:-flotilla-e2e}"

for tool in kind kubectl etcdctl docker python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${E2E_REQUIRE_KIND:-0}" = 1 ]; then
      echo "FAILED: $tool not found" >&2
      exit 1
    fi
    echo "SKIPPED: $tool not found (the kind end-to-end test needs kind, kubectl, etcdctl, docker and python3)"
    exit 0
  fi
done

cleanup() {
  [ "${E2E_KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
}
trap cleanup EXIT

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
export KUBECONFIG="${KUBECONFIG_KIND:-$(mktemp /tmp/kind-kubeconfig.XXXXXX)}"
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
E2E_LOAD_IMAGE="kind load docker-image --name $CLUSTER" tests/e2e/run.sh "$@"
echo "PASSED: kind end-to-end"
