#!/bin/sh
# Installs libchinwag for C/C++ (shared with SONAME, static, header,
# chinwag.pc) with CMake. Honours PREFIX (default /usr/local), LIBDIR
# (default lib, relative to PREFIX, or absolute), DESTDIR (staging root)
# and BUILD_DIR (default build/c). Installs cmake first when missing.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-lib}
BUILD_DIR=${BUILD_DIR:-$ROOT/build/c}
"$ROOT/scripts/c-deps.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_INSTALL_LIBDIR="$LIBDIR" ${CHINWAG_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR"
DESTDIR=${DESTDIR:-} cmake --install "$BUILD_DIR"
