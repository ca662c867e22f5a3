#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a fresh machine, and
# nothing twice: Debian packages (PostgreSQL, SoftHSM2, openssl), the Python
# virtualenv with keyledger and its dev tools, the published API definitions the
# test servers are checked against, and the test control plane binaries.
#
#   hack/install-deps.sh [python|system|apis|testbin|all]   (default: all)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo_root}/.venv"
python="${PYTHON:-python3}"

log() { printf 'install-deps: %s\n' "$*" >&2; }

# Debian packages the harness starts servers from.
# prometheus brings promtool, which checks and unit-tests manifests/monitoring.
system_packages=(postgresql openssl softhsm2 opensc prometheus)

# The published google.cloud.kms.v1 .proto files, which the Cloud KMS test server
# is checked against (tests/conformance). Pinned: a new release is a deliberate update.
api_definitions="${repo_root}/.cache/api-definitions"
google_proto_files="google-proto-files@6.0.1"

install_system() {
  local missing=() pkg
  for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("${pkg}")
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  ${sudo} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

install_python() {
  local stamp="${venv}/.keyledger-deps"
  local want
  want="$(sha256sum "${repo_root}/pyproject.toml" | cut -d' ' -f1)"
  if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return
  fi
  log "creating the Python virtualenv in .venv"
  [[ -x "${venv}/bin/python" ]] || "${python}" -m venv "${venv}"
  "${venv}/bin/pip" install -q --upgrade pip
  "${venv}/bin/pip" install -q -e "${repo_root}[dev]"
  echo "${want}" > "${stamp}"
}

install_api_definitions() {
  local stamp="${api_definitions}/.keyledger-apis"
  if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${google_proto_files}" ]]; then
    return
  fi
  log "installing the published API definitions (${google_proto_files}) into .cache/api-definitions"
  if ! command -v npm >/dev/null; then
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    ${sudo} apt-get update -qq
    DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  mkdir -p "${api_definitions}"
  # --ignore-scripts: only the .proto files are used, nothing of the package runs.
  npm install --prefix "${api_definitions}" --ignore-scripts --no-audit --no-fund \
    --no-save --loglevel=error "${google_proto_files}" >/dev/null
  echo "${google_proto_files}" > "${stamp}"
}

install_testbin() {
  bash "${repo_root}/hack/testbin.sh" build
}

case "${1:-all}" in
  system) install_system ;;
  python) install_python ;;
  apis) install_api_definitions ;;
  testbin) install_testbin ;;
  all) install_system; install_python; install_api_definitions; install_testbin ;;
  *) echo "usage: $0 [python|system|apis|testbin|all]" >&2; exit 2 ;;
esac
