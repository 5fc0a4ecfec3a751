"""The package as users get it: `pip install` bundles libchinwag, so a
plain `import chinwag` works with no environment variable; type hints and
docstrings on every public name; the examples' shim loads this package."""

import inspect
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, chinwag


def public_callables():
    for name in chinwag.__all__:
        obj = getattr(chinwag, name)
        if inspect.isclass(obj):
            yield name, obj
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (inspect.isfunction(member)
                                                 or isinstance(member, property)):
                    yield "%s.%s" % (name, attr), member
        elif callable(obj) and inspect.isfunction(obj):
            yield name, obj


def test_every_public_name_has_a_docstring_and_hints() -> None:
    for name, obj in public_callables():
        assert inspect.getdoc(obj), "%s has no docstring" % name
        fn = obj.fget if isinstance(obj, property) else obj
        if inspect.isfunction(fn):
            sig = inspect.signature(fn)
            assert sig.return_annotation is not inspect.Signature.empty, name
            for p in sig.parameters.values():
                if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                assert p.annotation is not inspect.Parameter.empty, "%s(%s)" % (name, p.name)
    assert os.path.exists(os.path.join(os.path.dirname(chinwag.__file__), "py.typed"))


def test_pip_install_bundles_the_library() -> None:
    lib = os.environ.get("CHINWAG_LIB")
    if not lib:
        pytest.skip("no built library to bundle (run through cargo test)")
    with tempfile.TemporaryDirectory() as target, tempfile.TemporaryDirectory() as build:
        env = dict(os.environ, CHINWAG_PREBUILT_LIB=lib)
        # A copy of the sources, so the build leaves the checkout alone.
        for item in ("pyproject.toml", "setup.py", "python"):
            src = os.path.join(ROOT, item)
            dst = os.path.join(build, item)
            if os.path.isdir(src):
                subprocess.check_call(["cp", "-r", src, dst])
            else:
                subprocess.check_call(["cp", src, dst])
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", "--no-deps",
                            "--target", target, build],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("CHINWAG_LIB", "PYTHONPATH", "LD_LIBRARY_PATH")}
        clean["PYTHONPATH"] = target
        r = subprocess.run([sys.executable, "-c",
                            "import chinwag; print(chinwag.__file__); print(chinwag.lib_path);"
                            "print(chinwag.version())"],
                           env=clean, cwd=target, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        module, lib_path, version = r.stdout.split()
        assert module.startswith(target) and lib_path.startswith(target), r.stdout
        assert os.path.exists(os.path.join(target, "chinwag", "py.typed"))
        assert version == chinwag.version()


def test_the_examples_shim_loads_this_package() -> None:
    shim_dir = os.path.join(ROOT, "examples", "python")
    r = subprocess.run([sys.executable, "-c", "import chinwag; print(chinwag.__file__)"],
                       cwd=shim_dir, env=dict(os.environ, PYTHONPATH=shim_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(
        os.path.join(ROOT, "python", "chinwag", "__init__.py"))


def test_the_type_hints_pass_mypy_strict() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, os.path.join(ROOT, "python", "chinwag")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
