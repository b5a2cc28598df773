#!/usr/bin/env bash
# What the workload attestor suites need (docker-attestor.test.ts, systemd-attestor.test.ts,
# packages/tessera/src/agent/workload/dbus.test.ts), called from setup.sh:
#   - Debian's docker.io (dockerd, containerd, runc; the tests start their own dockerd on a private
#     socket) and busybox-static (the shell of the test image, imported with no registry);
#   - systemd (the tests run `systemd --user` in a cgroup and mount namespace of their own) with
#     dbus-user-session (the user bus it starts) and dbus-daemon (a bus for the D-Bus client's tests);
#   - the go-spiffe peer built static (CGO_ENABLED=0) -> go/bin/interop-static, to run in a
#     container that has no libc.
# Idempotent: apt-get runs only when a program is missing; the Go build is cached by Go.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=apt-install.sh
source "$here/apt-install.sh"
die() {
  echo "workload attestors setup: $*" >&2
  exit 1
}

packages=()
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
[[ -x /bin/busybox ]] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || packages+=(busybox-static)
[[ -x /lib/systemd/systemd ]] && command -v systemd-run >/dev/null 2>&1 || packages+=(systemd)
[[ -x /usr/bin/dbus-daemon ]] || packages+=(dbus-daemon)
[[ -e /usr/lib/systemd/user/dbus.socket ]] || packages+=(dbus-user-session)
command -v unshare >/dev/null 2>&1 || packages+=(util-linux)
command -v file >/dev/null 2>&1 || packages+=(file)
if ((${#packages[@]} > 0)); then
  # docker.io recommends a dozen packages the tests do not use.
  apt_install --no-install-recommends "workload attestors setup" "${packages[@]}" || exit 1
fi
echo "workload attestors setup: $(dockerd --version 2>&1); $(systemd --version 2>&1 | head -n 1); $(dbus-daemon --version 2>&1 | head -n 1)"

command -v go >/dev/null 2>&1 || die "go is not on PATH (needed for the static go-spiffe peer)"
(
  cd "$here/go"
  CGO_ENABLED=0 go build -o "$here/go/bin/interop-static" ./...
) || die "building the static go-spiffe peer failed (see above)"
echo "workload attestors setup: built $here/go/bin/interop-static"
