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
#   nats-server      the NATS bus the cluster tests start (server/tests/cluster.rs:
#                    JetStream in a temporary directory on 127.0.0.1); chinwagd
#                    needs it only in cluster mode (bus_url), and then on
#                    whichever machine the operator runs the bus
#   iproute2         ip and tc, for the tests that run in a network namespace of
#                    their own (tests/common/netns.rs: loopback up, a tbf queue)
#
# and then, with pip, pytest and mypy for the Python package's tests when
# python3 cannot import them (scripts/python-deps.sh).
#
# Detection asks pkg-config for each library, so a library installed some
# other way (from source, in a prefix on PKG_CONFIG_PATH) counts as present.
# PostgreSQL counts as present when initdb is where the tests look for it:
# $CHINWAG_PG_BIN, Debian's $CHINWAG_PG_ROOT/*/bin (default
# /usr/lib/postgresql), or PATH. nats-server counts as present when it is
# $CHINWAG_NATS_SERVER, on PATH, or in Debian's $CHINWAG_SBIN (default
# /usr/sbin).
#
# With --musl it installs instead only what the musl build of chinwagd
# needs (`make run-musl`, docs/operations.md), and nothing of the above:
#
#   musl-tools       musl-gcc, which compiles the C in chinwagd's dependencies
#                    (rusqlite's bundled SQLite, ring) against musl
#   Rust's x86_64-unknown-linux-musl target, with `rustup target add`
#                    (downloaded from static.rust-lang.org)
#
# The default path never asks for either: `make run` and `make test` work
# on a machine that cannot download the musl target.
#
# usage: scripts/install-deps.sh [--dry-run] [--musl]
#   --dry-run   print what is missing and the command that would install it;
#               install nothing and exit 0
#   --musl      only what the musl build of chinwagd needs
set -euo pipefail

dry_run=0
musl=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        --musl) musl=1 ;;
        *) echo "usage: $0 [--dry-run] [--musl]" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    as_root=(unavailable)
fi

# apt-get install "$@" as root (or say why it cannot, or what it would run).
apt_install() {
    echo "install-deps: missing: $*"
    if [ $dry_run -eq 1 ]; then
        if [ "${as_root[0]:-}" = unavailable ]; then
            echo "install-deps: would fail: not root and 'sudo -n' is not allowed"
        else
            echo "install-deps: would run: ${as_root[*]:+${as_root[*]} }apt-get install -y --no-install-recommends $*"
        fi
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: no apt-get here; install these (or your system's" \
            "equivalents: the Opus and ALSA development files, pkg-config, cmake," \
            "the PostgreSQL server, musl's gcc wrapper)" \
            "by hand, then run this again: $*" >&2
        exit 1
    fi
    if [ "${as_root[0]:-}" = unavailable ]; then
        echo "install-deps: need root to install $*: run as root, allow" \
            "'sudo -n apt-get', or run: sudo apt-get install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local install=("${as_root[@]}" apt-get install -y --no-install-recommends "$@")
    # A fresh machine may have no package lists yet (or stale ones): on
    # failure, update them once and try again.
    if ! "${install[@]}"; then
        echo "install-deps: install failed; updating the package lists and retrying" >&2
        "${as_root[@]}" apt-get update
        "${install[@]}"
    fi
    echo "install-deps: installed $*"
}

if [ $musl -eq 1 ]; then
    target=x86_64-unknown-linux-musl
    command -v musl-gcc >/dev/null 2>&1 || apt_install musl-tools
    if command -v rustup >/dev/null 2>&1; then
        have_target() {
            local line
            while read -r line; do
                [ "$line" = "$target" ] && return 0
            done < <(rustup target list --installed 2>/dev/null)
            return 1
        }
    else
        # A toolchain without rustup: the target is there if its library is.
        have_target() {
            local libdir
            libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null) &&
                [ -d "$libdir" ]
        }
    fi
    if have_target; then
        echo "install-deps: Rust's $target target found"
        exit 0
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        echo "install-deps: no rustup here: add Rust's $target target by your" \
            "toolchain's own means, or use 'make run' (glibc)" >&2
        exit 1
    fi
    if [ $dry_run -eq 1 ]; then
        echo "install-deps: would run: rustup target add $target"
        exit 0
    fi
    if ! rustup target add "$target"; then
        echo "install-deps: could not add Rust's $target target (is" \
            "static.rust-lang.org reachable?); 'make run' builds chinwagd" \
            "against glibc without it" >&2
        exit 1
    fi
    exit 0
fi

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

have_nats() {
    [ -n "${CHINWAG_NATS_SERVER:-}" ] && [ -x "$CHINWAG_NATS_SERVER" ] && return 0
    [ -x "${CHINWAG_SBIN:-/usr/sbin}/nats-server" ] && return 0
    command -v nats-server >/dev/null 2>&1
}
have_nats || missing+=(nats-server)

# ip and tc live in /usr/sbin, which a user's PATH may not list.
have_iproute2() {
    local t
    for t in ip tc; do
        command -v "$t" >/dev/null 2>&1 || [ -x "${CHINWAG_SBIN:-/usr/sbin}/$t" ] || return 1
    done
}
have_iproute2 || missing+=(iproute2)

python_deps() {
    [ $dry_run -eq 1 ] && return 0
    "$(dirname "$0")/python-deps.sh"
}

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: nothing to install (pkg-config, opus, alsa, cmake, postgresql, nats-server and iproute2 found)"
    python_deps
    exit 0
fi

apt_install "${missing[@]}"
python_deps
