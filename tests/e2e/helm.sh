#!/usr/bin/env bash
# tests/e2e/helm.sh ARGS... — `helm` for the end-to-end tests.
#
# * A real `helm` on PATH is exec'd as is (CI with kind).
# * Otherwise a venv is created once at ${E2E_VENV:-<repo>/target/e2e-venv} with the pinned
#   helm-python-sdk (Helm v4 Go SDK in a shared library, no helm binary or network to a chart
#   repo needed), and tests/e2e/helm_sdk.py answers a helm-CLI-compatible subset:
#   upgrade --install, install, uninstall, status, get notes|values|manifest|hooks, test,
#   template, list, history, lint, version. See the top of helm_sdk.py for what the SDK can
#   and cannot do. KUBECONFIG / --kubeconfig / --kube-context / -n are honoured.
#
# Environment: E2E_VENV (venv dir), E2E_PYTHON (interpreter for the venv, >= 3.10; default
#   python3), E2E_HELM_FORCE_SDK=1 (use the SDK even if a helm binary exists),
#   PIP_INDEX_URL etc. are passed to pip as usual.
set -euo pipefail

HELM_PYTHON_SDK_VERSION=0.2.2

self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
repo=$(cd "$here/../.." && pwd)

if [ "${E2E_HELM_FORCE_SDK:-0}" != 1 ]; then
  # First `helm` on PATH that is not this script (in case it is symlinked as `helm`).
  while IFS= read -r candidate; do
    [ -n "$candidate" ] || continue
    if [ "$(readlink -f "$candidate")" != "$self" ]; then
      exec "$candidate" "$@"
    fi
  done < <(type -aP helm 2>/dev/null || true)
fi

venv=${E2E_VENV:-$repo/target/e2e-venv}
stamp="$venv/.helm-python-sdk-$HELM_PYTHON_SDK_VERSION"

ensure_venv() {
  [ -f "$stamp" ] && [ -x "$venv/bin/python" ] && return 0
  local python=${E2E_PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || {
    echo "Error: no helm on PATH and no $python to build the helm-python-sdk venv" >&2; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "Error: helm-python-sdk needs Python >= 3.10 ($python is $("$python" -V 2>&1)); set E2E_PYTHON" >&2
    exit 1; }
  echo "helm.sh: no helm binary; creating $venv with helm-python-sdk==$HELM_PYTHON_SDK_VERSION" >&2
  local start=$SECONDS
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2 || {
      echo "Error: '$python -m venv $venv' failed (on Debian/Ubuntu install python3-venv)" >&2; exit 1; }
  fi
  # Wheel only: the sdist would try to build the Go library.
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
      --only-binary helm-python-sdk "helm-python-sdk==$HELM_PYTHON_SDK_VERSION" >&2 || {
    echo "Error: pip could not install helm-python-sdk==$HELM_PYTHON_SDK_VERSION into $venv" >&2; exit 1; }
  "$venv/bin/python" -c 'import helm_python' >&2 || {
    echo "Error: helm-python-sdk installed but cannot be imported in $venv" >&2; exit 1; }
  rm -f "$venv"/.helm-python-sdk-*
  touch "$stamp"
  echo "helm.sh: venv ready in $((SECONDS - start)) s" >&2
}

if [ ! -f "$stamp" ] || [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  if command -v flock >/dev/null 2>&1; then
    # Serialize concurrent first runs; the winner builds, the others find the stamp.
    exec 9>"$venv.lock"
    flock 9
    ensure_venv
    flock -u 9
    exec 9>&-
  else
    ensure_venv
  fi
fi

exec "$venv/bin/python" "$here/helm_sdk.py" "$@"
