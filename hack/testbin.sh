#!/usr/bin/env bash
# Builds and runs the control plane that keyledger's tests and demo use: a real
# kube-apiserver and etcd (plus kubectl) built from Go modules in tools/kube-testbin/,
# because there is no Docker to run kind with. Set up the way controller-runtime's
# envtest does it: loopback only, throwaway PKI, RBAC on, no kubelet or controller-manager.
#
#   hack/testbin.sh build              build the binaries unless they are current
#   hack/testbin.sh start <statedir>   start etcd + kube-apiserver, write <statedir>/kubeconfig
#   hack/testbin.sh stop <statedir>    stop them
#   hack/testbin.sh env <statedir>     print exports for KUBECONFIG and PATH
#
# KEYLEDGER_TESTBIN_DIR overrides where the binaries go (default <repo>/.cache/kube-testbin).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module_dir="${repo_root}/tools/kube-testbin"
testbin_dir="${KEYLEDGER_TESTBIN_DIR:-${repo_root}/.cache/kube-testbin}"
bin_dir="${testbin_dir}/bin"
# The binaries are current when they exist and were built from this go.sum with these
# flags; the stamp file records both.
stamp_file="${testbin_dir}/build.stamp"
binaries=(etcd kube-apiserver kubectl)

go_minimum=1.24
ready_timeout_s=90
stop_timeout_s=20

log() { printf 'testbin: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed; $2"; }

usage() {
  sed -n '7,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------- build

binaries_current() {
  local name
  for name in "${binaries[@]}"; do
    [[ -x "${bin_dir}/${name}" ]] || return 1
  done
  [[ -f "${stamp_file}" ]] || return 1
  [[ "$(cat "${stamp_file}")" == "$(build_recipe)" ]]
}

build_recipe() {
  printf 'go.sum sha256 %s\n' "$(sha256sum "${module_dir}/go.sum" | cut -d' ' -f1)"
  printf 'ldflags %s\n' "$(go_ldflags)"
}

# A plain `go build` leaves the Kubernetes version at v0.0.0-master, which kubectl and
# clients then report as the server version; stamp the real one, as release builds do.
# -s -w: no symbol tables or DWARF, a third smaller and quicker to link.
go_ldflags() {
  local version major minor pkg flags="-s -w"
  # Read from go.mod, not `go list`, so that checking a cached build needs no Go.
  version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' \
    "${module_dir}/go.mod")"
  [[ -n "${version}" ]] || die "no k8s.io/kubernetes requirement in ${module_dir}/go.mod"
  major="${version#v}"
  major="${major%%.*}"
  minor="${version#v*.}"
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major}"
    flags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  done
  printf '%s\n' "${flags}"
}

cmd_build() {
  mkdir -p "${bin_dir}"
  # pytest-xdist workers all call build at once; let one build while the rest wait.
  exec 9>"${testbin_dir}/.build.lock"
  flock 9
  if binaries_current; then
    log "binaries in ${bin_dir} are current"
    return 0
  fi
  need go "install Go ${go_minimum} or newer to build the test control plane"
  log "building ${binaries[*]} into ${bin_dir} (a cold build takes a long while)"
  local started=${SECONDS}
  # CGO off: static binaries that need no C toolchain and run on any Linux.
  (
    cd "${module_dir}"
    CGO_ENABLED=0 go build -trimpath -ldflags="$(go_ldflags)" -o "${bin_dir}/" \
      ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  )
  build_recipe >"${stamp_file}"
  log "built in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------- processes

# A pid from a pid file counts only if it is alive, not a zombie (the processes are
# orphaned once this script exits, and not every init reaps them) and its command line
# names this state dir (so a recycled pid is never mistaken for ours, or killed).
pid_of() {
  local state_dir=$1 name=$2 pid state cmdline
  [[ -f "${state_dir}/${name}.pid" ]] || return 1
  pid="$(cat "${state_dir}/${name}.pid")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  state="$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" || return 1
  [[ "${state}" != "Z" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" || return 1
  [[ "${cmdline}" == *"${state_dir}/"* ]] || return 1
  printf '%s\n' "${pid}"
}

stop_process() {
  local state_dir=$1 name=$2 pid deadline
  if pid="$(pid_of "${state_dir}" "${name}")"; then
    log "stopping ${name} (pid ${pid})"
    kill -TERM "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout_s))
    while pid_of "${state_dir}" "${name}" >/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if pid_of "${state_dir}" "${name}" >/dev/null; then
      log "${name} ignored SIGTERM for ${stop_timeout_s} s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      while pid_of "${state_dir}" "${name}" >/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "${state_dir}/${name}.pid"
}

# Starts a binary in the background. Its output goes to a log file and its stdin is
# /dev/null, so a caller that captures our output (subprocess.run) does not wait on it.
spawn() {
  local state_dir=$1 name=$2
  shift 2
  "${bin_dir}/${name}" "$@" </dev/null >"${state_dir}/${name}.log" 2>&1 &
  local pid=$! tries=0
  printf '%s\n' "${pid}" >"${state_dir}/${name}.pid"
  # Until the child has become `name` (or 5 s): before its exec it is a copy of this
  # shell, whose command line pid_of would not take for ours, and a check made then
  # would report a process that is only starting as one that has exited.
  until [[ "$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" == "${bin_dir}/${name} "* ]]; do
    ((++tries < 500)) || break
    sleep 0.01
  done
}

# Free loopback ports, picked by the kernel. Another process could take one before we
# bind it; envtest accepts the same small race.
free_ports() {
  "${PYTHON:-python3}" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

tail_log() {
  local file=$1
  log "last lines of ${file}:"
  tail -n 40 "${file}" >&2 || true
}

# ---------------------------------------------------------------------------- pki

# A serving CA, a client CA and a service-account key pair, all throwaway. EC keys are
# quick to generate; the service-account key is RSA so tokens are RS256, as on most
# real clusters.
make_pki() {
  local pki=$1
  [[ -f "${pki}/admin.crt" ]] && return 0
  mkdir -p "${pki}"
  chmod 700 "${pki}"
  (
    cd "${pki}"
    new_ca ca "keyledger-test-ca"
    new_ca client-ca "keyledger-test-client-ca"
    new_cert ca apiserver "/CN=kube-apiserver" \
      "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc"
    # O=system:masters is the group RBAC always allows everything.
    new_cert client-ca admin "/CN=keyledger-admin/O=system:masters" \
      "extendedKeyUsage=clientAuth"
    quietly openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    openssl pkey -in sa.key -pubout -out sa.pub
    rm -f ./*.ext ./*.csr ./*.srl
  )
}

# openssl chats on stderr even when it succeeds (progress dots, "signature ok"); show
# that only when it fails.
quietly() {
  local output
  if ! output="$("$@" 2>&1)"; then
    printf '%s\n' "${output}" >&2
    return 1
  fi
}

new_ca() {
  local name=$1 cn=$2
  openssl ecparam -name prime256v1 -genkey -noout -out "${name}.key"
  openssl req -x509 -new -key "${name}.key" -sha256 -days 3650 -subj "/CN=${cn}" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "${name}.crt"
}

new_cert() {
  local ca=$1 name=$2 subject=$3 extensions=$4
  openssl ecparam -name prime256v1 -genkey -noout -out "${name}.key"
  openssl req -new -key "${name}.key" -subj "${subject}" -out "${name}.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' \
    "${extensions}" >"${name}.ext"
  quietly openssl x509 -req -in "${name}.csr" -CA "${ca}.crt" -CAkey "${ca}.key" \
    -CAcreateserial -sha256 -days 3650 -extfile "${name}.ext" -out "${name}.crt"
}

# ---------------------------------------------------------------------------- start

# curl as the admin user; works before RBAC's bootstrap roles exist, unlike anonymous.
admin_curl() {
  local state_dir=$1 path=$2
  curl --silent --fail --max-time 5 \
    --cacert "${state_dir}/pki/ca.crt" \
    --cert "${state_dir}/pki/admin.crt" --key "${state_dir}/pki/admin.key" \
    "$(cat "${state_dir}/apiserver.url")${path}"
}

control_plane_healthy() {
  local state_dir=$1
  pid_of "${state_dir}" etcd >/dev/null &&
    pid_of "${state_dir}" kube-apiserver >/dev/null &&
    [[ -f "${state_dir}/apiserver.url" ]] &&
    [[ "$(admin_curl "${state_dir}" /readyz 2>/dev/null)" == "ok" ]]
}

# Waits for `check` to succeed while `name` keeps running; on timeout or death, shows
# its log, tears everything down and fails.
wait_for() {
  local state_dir=$1 name=$2 what=$3 timeout_s=$4
  shift 4
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "${state_dir}" "${name}" >/dev/null; then
      tail_log "${state_dir}/${name}.log"
      cmd_stop "${state_dir}"
      die "${name} exited while waiting for ${what}; remove ${state_dir} to start from scratch"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "${state_dir}/${name}.log"
      cmd_stop "${state_dir}"
      die "timed out after ${timeout_s} s waiting for ${what}"
    fi
    sleep 0.25
  done
}

etcd_healthy() { [[ "$(curl --silent --fail --max-time 2 "$1/health")" == *'"health":"true"'* ]]; }
apiserver_ready() { [[ "$(admin_curl "$1" /readyz)" == "ok" ]]; }
default_namespace_exists() { admin_curl "$1" /api/v1/namespaces/default; }

write_kubeconfig() {
  local state_dir=$1 server=$2 pki="$1/pki"
  local tmp="${state_dir}/kubeconfig.tmp"
  cat >"${tmp}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: keyledger-test
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 <"${pki}/ca.crt")
users:
- name: keyledger-admin
  user:
    client-certificate-data: $(base64 -w0 <"${pki}/admin.crt")
    client-key-data: $(base64 -w0 <"${pki}/admin.key")
contexts:
- name: keyledger-test
  context:
    cluster: keyledger-test
    user: keyledger-admin
current-context: keyledger-test
EOF
  chmod 600 "${tmp}"
  mv "${tmp}" "${state_dir}/kubeconfig"
}

cmd_start() {
  local state_dir=$1 name
  need openssl "it generates the control plane's certificates"
  need curl "it checks that the control plane is up"
  for name in "${binaries[@]}"; do
    [[ -x "${bin_dir}/${name}" ]] || die "${bin_dir}/${name} is missing; run: $0 build"
  done
  mkdir -p "${state_dir}"
  state_dir="$(cd "${state_dir}" && pwd)"

  if control_plane_healthy "${state_dir}"; then
    log "control plane in ${state_dir} is already running at $(cat "${state_dir}/apiserver.url")"
    return 0
  fi
  # Half a control plane (one process died, or apiserver not ready) is not worth
  # nursing; start over. etcd's data goes too: its member record holds the old ports.
  cmd_stop "${state_dir}"
  rm -rf "${state_dir}/etcd" "${state_dir}/kubeconfig" "${state_dir}/apiserver.url"

  local started=${SECONDS} etcd_client_port etcd_peer_port apiserver_port
  read -r etcd_client_port etcd_peer_port apiserver_port <<<"$(free_ports 3)"
  local etcd_url="http://127.0.0.1:${etcd_client_port}"
  local peer_url="http://127.0.0.1:${etcd_peer_port}"
  local server="https://127.0.0.1:${apiserver_port}"

  make_pki "${state_dir}/pki"

  # An explicit peer port: the default 2380 would clash between parallel test workers.
  # No fsync: the data is thrown away, and fsync dominates etcd's latency on slow disks.
  spawn "${state_dir}" etcd \
    --name=keyledger-test \
    --data-dir="${state_dir}/etcd" \
    --listen-client-urls="${etcd_url}" \
    --advertise-client-urls="${etcd_url}" \
    --listen-peer-urls="${peer_url}" \
    --initial-advertise-peer-urls="${peer_url}" \
    --initial-cluster="keyledger-test=${peer_url}" \
    --unsafe-no-fsync=true \
    --log-level=warn
  wait_for "${state_dir}" etcd "etcd to become healthy" 30 etcd_healthy "${etcd_url}"

  local pki="${state_dir}/pki"
  # The ServiceAccount admission plugin would reject pods until a controller-manager
  # creates each namespace's default ServiceAccount, and we run no controller-manager.
  # --endpoint-reconciler-type=none: the "kubernetes" Service cannot point at a loopback
  # address, and the reconciler would log that failure every few seconds.
  spawn "${state_dir}" kube-apiserver \
    --etcd-servers="${etcd_url}" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="${apiserver_port}" \
    --cert-dir="${pki}" \
    --tls-cert-file="${pki}/apiserver.crt" \
    --tls-private-key-file="${pki}/apiserver.key" \
    --client-ca-file="${pki}/client-ca.crt" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="${pki}/sa.pub" \
    --service-account-signing-key-file="${pki}/sa.key" \
    --disable-admission-plugins=ServiceAccount \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --endpoint-reconciler-type=none
  printf '%s\n' "${server}" >"${state_dir}/apiserver.url"

  wait_for "${state_dir}" kube-apiserver "/readyz to answer ok" "${ready_timeout_s}" \
    apiserver_ready "${state_dir}"
  wait_for "${state_dir}" kube-apiserver "the default namespace" 30 \
    default_namespace_exists "${state_dir}"
  write_kubeconfig "${state_dir}" "${server}"
  log "control plane ready at ${server} in $((SECONDS - started)) s"
  log "KUBECONFIG=${state_dir}/kubeconfig"
}

# ---------------------------------------------------------------------------- stop, env

cmd_stop() {
  local state_dir=$1
  [[ -d "${state_dir}" ]] || return 0
  state_dir="$(cd "${state_dir}" && pwd)"
  # apiserver first, so it never runs against a missing etcd.
  stop_process "${state_dir}" kube-apiserver
  stop_process "${state_dir}" etcd
}

cmd_env() {
  local state_dir=$1
  [[ -d "${state_dir}" ]] || die "${state_dir} does not exist; run: $0 start ${state_dir}"
  state_dir="$(cd "${state_dir}" && pwd)"
  printf 'export KUBECONFIG=%q\n' "${state_dir}/kubeconfig"
  printf 'export PATH=%q:"${PATH}"\n' "${bin_dir}"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1
  shift
  case "${cmd}" in
    build) (($# == 0)) || usage; cmd_build ;;
    start) (($# == 1)) || usage; cmd_start "$1" ;;
    stop) (($# == 1)) || usage; cmd_stop "$1" ;;
    env) (($# == 1)) || usage; cmd_env "$1" ;;
    *) usage ;;
  esac
}

main "$@"
