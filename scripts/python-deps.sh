#!/bin/sh
# Installs what the Python tests need (pytest) when it is missing.
# Idempotent: does nothing when `python3 -m pytest` already runs.
set -eu
PY=${PYTHON:-python3}
if "$PY" -c 'import pytest' 2>/dev/null; then
    exit 0
fi
"$PY" -m pip install --quiet --disable-pip-version-check 'pytest>=7'
"$PY" -c 'import pytest; print("pytest", pytest.__version__)'
