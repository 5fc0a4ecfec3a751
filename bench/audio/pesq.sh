#!/bin/sh
# Run chinwag-bench's audio workload with PESQ: makes a virtual environment
# with the `pesq` and `numpy` packages from PyPI (once, in
# target/pesq-venv; needs python3-venv and a C compiler when no wheel
# fits), builds the release binaries and runs
#   chinwag-bench audio --pesq target/pesq-venv/bin/python [ARGS...]
# The test suite never runs this.
set -eu
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
VENV="$TARGET/pesq-venv"
if ! "$VENV/bin/python" -c "import pesq, numpy" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet numpy pesq
fi
cargo build --release -p chinwagd -p chinwag-bench
exec "$TARGET/release/chinwag-bench" audio --pesq "$VENV/bin/python" "$@"
