# Sourced by the interop set-up scripts (setup.sh, setup-helper-consumers.sh, setup-workload-attestors.sh).
# apt_install [--no-install-recommends] <label> <package>...: installs the packages from the
# distribution with apt-get, as root or through sudo; otherwise, or when apt-get fails, says what to
# install by hand and returns 1.
apt_install() {
  local options=()
  if [[ "${1:-}" == --no-install-recommends ]]; then
    options+=(--no-install-recommends)
    shift
  fi
  local label="$1"
  shift
  (($# > 0)) || return 0
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1 || { [[ -n "$sudo" ]] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "$label: missing $*: install them (Debian/Ubuntu: apt-get install -y $*) and re-run" >&2
    return 1
  fi
  echo "$label: apt-get install -y $*"
  $sudo apt-get update -qq || {
    echo "$label: apt-get update failed (see above)" >&2
    return 1
  }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${options[@]}" "$@" >/dev/null || {
    echo "$label: apt-get install -y $* failed (see above)" >&2
    return 1
  }
}
