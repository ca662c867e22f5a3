#!/usr/bin/env bash
# `make demo`: a real control plane, the CRDs, the operator (embedded SQLite
# ledger, dev-only local provider) and the keys in examples/, left running.
# Safe to run twice. `make demo-down` stops it all.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo_dir="${repo_root}/.demo"
plane_dir="${demo_dir}/control-plane"
operator_pid="${demo_dir}/operator.pid"
operator_log="${demo_dir}/operator.log"
webhook_port=9443
kubectl="${KEYLEDGER_TESTBIN_DIR:-${repo_root}/.cache/kube-testbin}/bin/kubectl"
export KUBECONFIG="${plane_dir}/kubeconfig"

log() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

operator_running() {
  [[ -f "${operator_pid}" ]] && kill -0 "$(cat "${operator_pid}")" 2>/dev/null
}

up() {
  mkdir -p "${demo_dir}"
  log "starting the control plane (kube-apiserver + etcd)"
  bash "${repo_root}/hack/testbin.sh" start "${plane_dir}"

  log "installing CRDs and the operator's namespace and RBAC"
  "${kubectl}" apply --server-side -k "${repo_root}/crds" >/dev/null
  "${kubectl}" apply --server-side -f "${repo_root}/manifests/base/namespace.yaml" \
    -f "${repo_root}/manifests/base/rbac.yaml" >/dev/null
  "${kubectl}" wait --for=condition=Established --timeout=60s \
    crd/encryptionkeys.keyledger.io crd/keyproviders.keyledger.io \
    crd/clusterkeyproviders.keyledger.io >/dev/null

  if operator_running; then
    log "operator already running (pid $(cat "${operator_pid}"))"
  else
    start_operator
  fi

  wait_for_webhooks
  log "applying examples/"
  "${kubectl}" apply -f "${repo_root}/examples" >/dev/null
  log "waiting for every key to be Ready"
  if ! "${kubectl}" wait --for=condition=Ready ek --all --all-namespaces --timeout=120s \
      >/dev/null; then
    log "keys did not become Ready; operator log: ${operator_log}"
    tail -n 40 "${operator_log}" >&2
    exit 1
  fi
  echo
  "${kubectl}" get clusterkeyproviders
  echo
  "${kubectl}" get encryptionkeys --all-namespaces
  echo
  "${repo_root}/.venv/bin/python" "${repo_root}/hack/demo_client.py" "${demo_dir}/data"
  cat <<MSG

The control plane and the operator keep running. To use them:

  export KUBECONFIG=${KUBECONFIG}
  export PATH=$(dirname "${kubectl}"):\$PATH
  kubectl get ek -A
  kubectl describe ek -n tenant-acme phi-primary

Operator log: ${operator_log}   Ledger: ${demo_dir}/data/ledger.db (SQLite)
Stop everything with: make demo-down
MSG
}

start_operator() {
  # The operator runs as its ServiceAccount, with exactly the RBAC of manifests/base/rbac.yaml.
  local token
  token="$("${kubectl}" create token keyledger-operator -n keyledger-system --duration=24h)"
  local sa_kubeconfig="${demo_dir}/operator.kubeconfig"
  "${kubectl}" config view --minify --flatten --raw -o json \
    | "${repo_root}/.venv/bin/python" -c '
import json, sys
config = json.load(sys.stdin)
config["users"] = [{"name": "operator", "user": {"token": sys.argv[1]}}]
config["contexts"][0]["context"]["user"] = "operator"
print(json.dumps(config))' "${token}" > "${sa_kubeconfig}.tmp"
  chmod 600 "${sa_kubeconfig}.tmp"
  mv "${sa_kubeconfig}.tmp" "${sa_kubeconfig}"

  log "starting the operator (SQLite ledger, local provider; log: ${operator_log})"
  # It serves its admission webhooks on loopback, where this API server calls them.
  KUBECONFIG="${sa_kubeconfig}" KEYLEDGER_DATA_DIR="${demo_dir}/data" \
    KEYLEDGER_WEBHOOK_PORT="${webhook_port}" KEYLEDGER_WEBHOOK_HOST=127.0.0.1 \
    KEYLEDGER_WEBHOOK_LISTEN=127.0.0.1 \
    nohup "${repo_root}/.venv/bin/keyledger" run --standalone \
    >>"${operator_log}" 2>&1 &
  echo $! > "${operator_pid}"
}

wait_for_webhooks() {
  local _
  for _ in $(seq 1 120); do
    if "${kubectl}" get validatingwebhookconfiguration keyledger.io \
        -o jsonpath='{.webhooks[*].clientConfig.url}' 2>/dev/null \
        | grep -q "127.0.0.1:${webhook_port}/"; then
      return 0
    fi
    sleep 0.5
  done
  log "the operator's admission webhooks never came up; operator log: ${operator_log}"
  tail -n 40 "${operator_log}" >&2
  exit 1
}

down() {
  if operator_running; then
    log "stopping the operator"
    local pid
    pid="$(cat "${operator_pid}")"
    kill -TERM "${pid}"
    for _ in $(seq 1 50); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  rm -f "${operator_pid}"
  if [[ -d "${plane_dir}" ]]; then
    log "stopping the control plane"
    bash "${repo_root}/hack/testbin.sh" stop "${plane_dir}"
  fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
