#!/usr/bin/env bash
# Builds SPIRE's spire-server and spire-agent (the version ha.bench.ts compares against) from the Go
# module proxy into bench/.spire/bin, where ha.bench.ts looks for them. Idempotent: a binary already
# there that reports the wanted version is kept. Needs Go 1.25.3 or later (SPIRE v1.13.3's go.mod).
#
# Built as `go install …@v1.13.3` builds it: no release ldflags, so the binaries report
# "1.13.3-dev-unk" (SPIRE's release builds stamp the tag with -X; the code is the same).
set -euo pipefail

SPIRE_VERSION=1.13.3
MODULE=github.com/spiffe/spire
bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$bench_dir/.spire/bin"

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
