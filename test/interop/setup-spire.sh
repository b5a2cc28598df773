#!/usr/bin/env bash
# Builds SPIRE's spire-server and spire-agent v1.13.3 from the Go module proxy into
# test/interop/.spire/bin (gitignored), for the two things that run a real SPIRE: the interop suites
# (spire.test.util.ts; test/interop/setup.sh calls this script) and the HA bench's reference
# measurement (bench/spire-reference.ts). Idempotent: a binary already there that reports the wanted
# version is kept (~0.1 s). Needs Go 1.25.3 or later (SPIRE v1.13.3's go.mod).
#
# Cold, it is the slow part of the interop setup: spire-server took 855 s (module downloads
# included), spire-agent then 102 s (sharing its build cache), on 2 cores busy with other work; with
# a warm Go build cache but no binaries, 26 s for both (the link). CI should cache
# test/interop/.spire/bin (~320 MB) keyed by SPIRE_VERSION, so that only a version bump pays it.
#
# Built as `go install …@v1.13.3` builds it: no release ldflags, so the binaries report
# "1.13.3-dev-unk" (SPIRE's release builds stamp the tag with -X; the code is the same).
set -euo pipefail

SPIRE_VERSION=1.13.3
MODULE=github.com/spiffe/spire
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$here/.spire/bin"

if ! command -v go >/dev/null 2>&1; then
  echo "setup-spire: go not found on PATH; install Go 1.25.3 or later to build SPIRE v$SPIRE_VERSION" >&2
  exit 1
fi
mkdir -p "$bin_dir"

# The version a binary reports (both print it on stderr), or nothing.
version_of() {
  if [ -x "$1" ]; then "$1" --version 2>&1 | head -n 1 | tr -d '[:space:]'; fi
}
is_wanted() {
  case "$1" in "$SPIRE_VERSION" | "$SPIRE_VERSION"-*) return 0 ;; *) return 1 ;; esac
}

for cmd in spire-server spire-agent; do
  have="$(version_of "$bin_dir/$cmd")"
  if is_wanted "$have"; then
    echo "setup-spire: $bin_dir/$cmd reports $have; kept"
    continue
  fi
  if [ -n "$have" ]; then
    echo "setup-spire: $bin_dir/$cmd reports \"$have\", not $SPIRE_VERSION; rebuilding"
  fi
  echo "setup-spire: building $cmd v$SPIRE_VERSION with $(go version | cut -d' ' -f3) (a few minutes the first time)"
  start=$SECONDS
  if ! GOBIN="$bin_dir" go install "$MODULE/cmd/$cmd@v$SPIRE_VERSION"; then
    # `go install …@version` also asks the proxy for the module's version list (to report a
    # deprecation); a proxy that serves only pinned versions refuses that. Then build the same
    # module version, downloaded and checked against go.sum, with its own go.mod as the main module.
    echo "setup-spire: go install failed (see above); building $MODULE@v$SPIRE_VERSION from its downloaded module instead"
    dir="$(go mod download -json "$MODULE@v$SPIRE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
      echo "setup-spire: could not download $MODULE@v$SPIRE_VERSION" >&2
      exit 1
    fi
    (cd "$dir" && GOBIN="$bin_dir" GOFLAGS="${GOFLAGS:-} -mod=readonly" go install "./cmd/$cmd")
  fi
  have="$(version_of "$bin_dir/$cmd")"
  if ! is_wanted "$have"; then
    echo "setup-spire: $bin_dir/$cmd was built but reports \"$have\", not $SPIRE_VERSION" >&2
    exit 1
  fi
  echo "setup-spire: built $bin_dir/$cmd ($have) in $((SECONDS - start)) s"
done
echo "setup-spire: SPIRE v$SPIRE_VERSION in $bin_dir (spire-server, spire-agent)"
