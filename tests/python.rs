//! The Python package's tests (python/tests, pytest) against an in-process
//! chinwagd on 127.0.0.1, as part of `cargo test`: the ports go to pytest
//! in CHINWAG_TEST_<DIALECT>_PORT and the library just built in
//! CHINWAG_LIB. pytest and mypy are installed by scripts/python-deps.sh when
//! missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{lib_dir, output_within, require, shared_lib_name, ROOT};

/// Whether pytest runs, installing it once with the project's script.
fn pytest_ready() -> bool {
    let runs = || {
        Command::new("python3")
            .args(["-c", "import pytest, mypy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs() {
        return true;
    }
    let o = output_within(
        Command::new("sh").arg(Path::new(ROOT).join("scripts/python-deps.sh")),
        Duration::from_secs(300),
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    runs()
}

#[test]
fn python_package_tests_pass_under_pytest() {
    if !require("python3") {
        return;
    }
    if !pytest_ready() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pytest is required under CI=true and could not be installed"
        );
        eprintln!("SKIPPED: pytest not available");
        return;
    }
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let o = output_within(
        Command::new("python3")
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "python/tests",
            ])
            .current_dir(ROOT)
            .env("CHINWAG_LIB", lib_dir().join(shared_lib_name()))
            .env(
                "CHINWAG_TEST_CHATOS_PORT",
                srv.chatos_addr().port().to_string(),
            )
            .env(
                "CHINWAG_TEST_BABEL_PORT",
                srv.babel_addr().port().to_string(),
            )
            .env(
                "CHINWAG_TEST_ACCOUNTS_PORT",
                srv.accounts_addr().port().to_string(),
            )
            .env(
                "CHINWAG_TEST_ROOMS_PORT",
                srv.rooms_addr().port().to_string(),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(600),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    println!("{out}");
    assert!(
        o.status.success(),
        "pytest failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(" passed"), "pytest ran no test:\n{out}");
    assert!(
        !out.contains("skipped"),
        "a Python test was skipped:\n{out}"
    );
}
