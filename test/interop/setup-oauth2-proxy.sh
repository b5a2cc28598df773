#!/usr/bin/env bash
# Builds oauth2-proxy v7.15.6 from the Go module proxy into test/interop/go/bin/oauth2-proxy
# (gitignored), an OIDC relying party for the OIDC discovery suite (oidc.test.ts): with
# --skip-jwt-bearer-tokens and --extra-jwt-issuers=<issuer>=<audience> it discovers the issuer and
# lets through requests whose bearer JWT verifies. Idempotent: a binary that reports the wanted
# version is kept (~0.05 s). test/interop/setup.sh calls this.
#
# Cold (empty Go module and build caches) it downloads ~750 MB of modules (cloud SDKs among them)
# and compiles for ~205 s of CPU: 3 min 31 s of wall time on 2 cores busy with another build;
# 3 min 24 s with the caches SPIRE's build had left (other work on the cores again); the link
# alone when only the binary is missing.
set -euo pipefail

VERSION=7.15.6
MODULE=github.com/oauth2-proxy/oauth2-proxy/v7
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$here/go/bin"

command -v go >/dev/null 2>&1 || {
  echo "setup-oauth2-proxy: go not found on PATH" >&2
  exit 1
}
mkdir -p "$bin_dir"
have=""
if [ -x "$bin_dir/oauth2-proxy" ]; then have="$("$bin_dir/oauth2-proxy" --version 2>&1 | head -n 1 || true)"; fi
case "$have" in
  "oauth2-proxy v$VERSION "*)
    echo "setup-oauth2-proxy: $bin_dir/oauth2-proxy reports v$VERSION; kept"
    exit 0
    ;;
esac
echo "setup-oauth2-proxy: building oauth2-proxy v$VERSION with $(go version | cut -d' ' -f3) (minutes the first time)"
start=$SECONDS
# The version is stamped as its release builds stamp it, so that the check above can read it.
GOBIN="$bin_dir" go install -ldflags "-X $MODULE/pkg/version.VERSION=v$VERSION" "$MODULE@v$VERSION"
echo "setup-oauth2-proxy: built $bin_dir/oauth2-proxy ($("$bin_dir/oauth2-proxy" --version 2>&1)) in $((SECONDS - start)) s"
