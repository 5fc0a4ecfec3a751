"""Shared fixtures. The servers are started by the Rust test that runs
pytest (tests/python.rs: an in-process chinwagd on 127.0.0.1), which
passes their ports as CHINWAG_TEST_<DIALECT>_PORT; without them the
network tests are skipped."""

import itertools
import os
import sys
from typing import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The package from this checkout (an installed one is tested separately).
sys.path.insert(0, os.path.join(ROOT, "python"))

import chinwag  # noqa: E402

_names = itertools.count()


def port(dialect: str) -> int:
    value = os.environ.get("CHINWAG_TEST_%s_PORT" % dialect.upper())
    if not value:
        pytest.skip("no test server (run through `cargo test --test python`)")
    return int(value)


@pytest.fixture
def name() -> Iterator[str]:
    """A login nobody else in this test run uses."""
    yield "py%d_%d" % (os.getpid() % 1000, next(_names))


def unique(prefix: str) -> str:
    return "%s%d%d" % (prefix, os.getpid() % 1000, next(_names))


@pytest.fixture
def chatos() -> int:
    return port("chatos")


@pytest.fixture
def accounts() -> int:
    return port("accounts")


@pytest.fixture
def header() -> str:
    with open(os.path.join(ROOT, "include", "chinwag.h")) as f:
        return f.read()


__all__ = ["chinwag", "port", "unique", "ROOT"]
