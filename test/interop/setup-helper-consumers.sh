#!/usr/bin/env bash
# Installs the programs test/interop/helper-consumers.test.ts runs behind `tessera helper`: nginx
# and openssl from the distribution (PostgreSQL's server binaries come from .ci/run, which installs
# them for the datastore suites; here only when missing). Each is installed only when it is not
# there already (Debian images often have openssl; nginx may be installed). Idempotent; needs root
# or sudo and apt-get.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=apt-install.sh
source "$here/apt-install.sh"

packages=()
{ command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null 2>&1 || packages+=(nginx)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || packages+=(postgresql)
if ((${#packages[@]} > 0)); then
  apt_install "helper consumers setup" "${packages[@]}" || exit 1
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
echo "helper consumers setup: $("$nginx_bin" -v 2>&1); $(openssl version)"
