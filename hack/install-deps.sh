#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a fresh machine, and
# nothing twice: Debian packages (PostgreSQL, SoftHSM2, openssl), the Python
# virtualenv with keyledger and its dev tools, and the test control plane binaries.
#
#   hack/install-deps.sh [python|system|testbin|all]   (default: all)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo_root}/.venv"
python="${PYTHON:-python3}"

log() { printf 'install-deps: %s\n' "$*" >&2; }

# Debian packages the harness starts servers from.
system_packages=(postgresql openssl softhsm2 opensc)

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

install_testbin() {
  bash "${repo_root}/hack/testbin.sh" build
}

case "${1:-all}" in
  system) install_system ;;
  python) install_python ;;
  testbin) install_testbin ;;
  all) install_system; install_python; install_testbin ;;
  *) echo "usage: $0 [python|system|testbin|all]" >&2; exit 2 ;;
esac
