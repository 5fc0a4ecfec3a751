"""Build hook of the Python package (pyproject.toml holds the metadata).

`pip install .` runs `cargo build --release -p chinwag --lib` and copies
libchinwag into the package, so `import chinwag` needs no environment
variable. Set CHINWAG_CARGO_PROFILE=debug for a quicker debug build, or
CHINWAG_PREBUILT_LIB=/path/to/libchinwag.so to bundle a library built
already (the tests do, to avoid a second build inside `cargo test`).
"""

import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB = {"darwin": "libchinwag.dylib"}.get(sys.platform, "libchinwag.so")


def built_library():
    prebuilt = os.environ.get("CHINWAG_PREBUILT_LIB")
    if prebuilt:
        return prebuilt
    profile = os.environ.get("CHINWAG_CARGO_PROFILE", "release")
    cmd = ["cargo", "build", "-p", "chinwag", "--lib"]
    if profile == "release":
        cmd.append("--release")
    subprocess.check_call(cmd, cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, profile, LIB)


class BuildWithCargo(build_py):
    """build_py that also builds and bundles the shared library."""

    def run(self):
        super().run()
        lib = built_library()
        dest = os.path.join(self.build_lib, "chinwag")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(lib, os.path.join(dest, LIB))


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithCargo}, distclass=BinaryDistribution)
