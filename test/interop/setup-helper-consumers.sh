#!/usr/bin/env bash
# Installs the programs test/interop/helper-consumers.test.ts runs behind `tessera helper`: nginx
# and openssl from the distribution (PostgreSQL's server binaries come from .ci/run, which installs
# them for the datastore suites; here only when missing). Each is installed only when it is not
# there already (Debian images often have openssl; nginx may be installed). Idempotent; needs root
# or sudo and apt-get.
set -euo pipefail

die() {
  echo "helper consumers setup: $*" >&2
  exit 1
}

packages=()
{ command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1 || packages+=(nginx)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || packages+=(postgresql)
if ((${#packages[@]} > 0)); then
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  command -v apt-get >/dev/null 2>&1 && { [[ -z "$sudo" ]] || command -v sudo >/dev/null 2>&1; } ||
    die "missing ${packages[*]}: install them (Debian/Ubuntu: apt-get install -y ${packages[*]}) and re-run $0"
  echo "helper consumers setup: apt-get install -y ${packages[*]}"
  $sudo apt-get update -qq || die "apt-get update failed (see above)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null ||
    die "apt-get install -y ${packages[*]} failed (see above)"
  # Debian's package starts an nginx on port 80 and a PostgreSQL cluster; the tests start their own.
  if [[ " ${packages[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
echo "helper consumers setup: $("$nginx_bin" -v 2>&1); $(openssl version)"
