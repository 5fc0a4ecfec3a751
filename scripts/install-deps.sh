#!/usr/bin/env bash
# Install the system packages that building and testing chinwag needs, and
# only those that are missing. Idempotent: a second run installs nothing.
#
#   pkg-config       finds the two libraries below for the build scripts
#   libopus-dev      Opus, linked by the `opus` crate (through audiopus_sys)
#   libasound2-dev   ALSA headers, for cpal/rodio (the `device` feature)
#
# Detection asks pkg-config for each library, so a library installed some
# other way (from source, in a prefix on PKG_CONFIG_PATH) counts as present.
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

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: nothing to install (pkg-config, opus and alsa found)"
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
        "equivalents: the Opus and ALSA development files, and pkg-config)" \
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
