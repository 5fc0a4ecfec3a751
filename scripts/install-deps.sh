#!/usr/bin/env bash
# Install the system packages that building and testing chinwag needs, and
# only those that are missing. Idempotent: a second run installs nothing.
#
#   pkg-config       finds the two libraries below for the build scripts
#   libopus-dev      Opus, linked by the `opus` crate (through audiopus_sys)
#   libasound2-dev   ALSA headers, for cpal/rodio (the `device` feature)
#   cmake            builds and installs the C library (scripts/install-c.sh)
#   postgresql       the PostgreSQL server the store's tests start (initdb and
#                    postgres, in a temporary directory on 127.0.0.1); chinwagd
#                    itself needs none (its client is pure Rust)
#
# and then, with pip, pytest and mypy for the Python package's tests when
# python3 cannot import them (scripts/python-deps.sh).
#
# Detection asks pkg-config for each library, so a library installed some
# other way (from source, in a prefix on PKG_CONFIG_PATH) counts as present.
# PostgreSQL counts as present when initdb is where the tests look for it:
# $CHINWAG_PG_BIN, Debian's $CHINWAG_PG_ROOT/*/bin (default
# /usr/lib/postgresql), or PATH.
#
# usage: scripts/install-deps.sh [--dry-run]
#   --dry-run   print what is missing and the command that would install it;
#               install nothing and exit 0
set -euo pipefail

dry_run=0
case "${1:-}" in
    --dry-run) dry_run=1 ;;
    "") ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

missing=()
if ! command -v pkg-config >/dev/null 2>&1; then
    # Without pkg-config nothing can be probed: every package is needed.
    missing=(pkg-config libopus-dev libasound2-dev)
else
    pkg-config --exists opus || missing+=(libopus-dev)
    pkg-config --exists alsa || missing+=(libasound2-dev)
fi
command -v cmake >/dev/null 2>&1 || missing+=(cmake)

have_postgres() {
    [ -n "${CHINWAG_PG_BIN:-}" ] && [ -x "$CHINWAG_PG_BIN/initdb" ] && return 0
    local initdb
    for initdb in "${CHINWAG_PG_ROOT:-/usr/lib/postgresql}"/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    command -v initdb >/dev/null 2>&1
}
have_postgres || missing+=(postgresql)

python_deps() {
    [ $dry_run -eq 1 ] && return 0
    "$(dirname "$0")/python-deps.sh"
}

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: nothing to install (pkg-config, opus, alsa, cmake and postgresql found)"
    python_deps
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    as_root=(unavailable)
fi

echo "install-deps: missing: ${missing[*]}"
if [ $dry_run -eq 1 ]; then
    if [ "${as_root[0]:-}" = unavailable ]; then
        echo "install-deps: would fail: not root and 'sudo -n' is not allowed"
    else
        echo "install-deps: would run: ${as_root[*]:+${as_root[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install these (or your system's" \
        "equivalents: the Opus and ALSA development files, pkg-config, cmake," \
        "the PostgreSQL server)" \
        "by hand, then run this again: ${missing[*]}" >&2
    exit 1
fi
if [ "${as_root[0]:-}" = unavailable ]; then
    echo "install-deps: need root to install ${missing[*]}: run as root, allow" \
        "'sudo -n apt-get', or run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
install=("${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}")
# A fresh machine may have no package lists yet (or stale ones): on failure,
# update them once and try again.
if ! "${install[@]}"; then
    echo "install-deps: install failed; updating the package lists and retrying" >&2
    "${as_root[@]}" apt-get update
    "${install[@]}"
fi
echo "install-deps: installed ${missing[*]}"
python_deps
