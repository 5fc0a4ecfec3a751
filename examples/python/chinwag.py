"""chinwag.py - lets the examples run from a checkout without installing.

The bindings are the package in python/chinwag (``pip install .`` installs
it, with libchinwag bundled). Run from here, ``import chinwag`` finds this
file first; it loads that package in its place, so the examples work both
ways.
"""

import importlib.util
import os
import sys

_pkg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "chinwag")
_spec = importlib.util.spec_from_file_location(
    "chinwag", os.path.join(_pkg, "__init__.py"), submodule_search_locations=[_pkg])
_module = importlib.util.module_from_spec(_spec)
sys.modules["chinwag"] = _module
_spec.loader.exec_module(_module)
