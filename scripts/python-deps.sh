#!/bin/sh
# Installs what the Python tests need (pytest; mypy, which checks the
# package's type hints) when missing. Idempotent: does nothing when both
# import.
set -eu
PY=${PYTHON:-python3}
if "$PY" -c 'import pytest, mypy' 2>/dev/null; then
    exit 0
fi
"$PY" -m pip install --quiet --disable-pip-version-check 'pytest>=7' 'mypy>=1'
"$PY" -c 'import pytest, mypy; print("pytest", pytest.__version__)'
