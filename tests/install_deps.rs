//! scripts/install-deps.sh decides what to install from what pkg-config
//! finds, and installs nothing when nothing is missing. Its decisions are
//! tested with `--dry-run` and stand-in `pkg-config`, `id` and `sudo`
//! commands on a PATH of the test's own, and a stand-in Debian PostgreSQL
//! directory (`CHINWAG_PG_ROOT`) holding `initdb` or not, and a stand-in
//! `nats-server` on that PATH or not (`CHINWAG_SBIN` points there too),
//! and `ip` and `tc` there unless the test leaves them out.
//! `--musl` is tested with a stand-in `musl-gcc` and `rustup` (or none).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps.sh")
}

/// A directory of stand-in commands: `pkg-config` knows only `present`
/// (absent: no pkg-config at all), `id -u` prints `uid`, and `sudo -n`
/// succeeds when `sudo_ok`. "postgresql" in `present` puts an `initdb`
/// where Debian's package would (under the same directory, which
/// `dry_run` passes as `CHINWAG_PG_ROOT`); "nats" puts a `nats-server`
/// on the PATH.
fn fake_path(name: &str, present: Option<&[&str]>, uid: u32, sudo_ok: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chinwag-deps-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, body: String| {
        let p = dir.join(file);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    if let Some(present) = present {
        write(
            "pkg-config",
            format!(
                "#!/bin/sh\n[ \"$1\" = --exists ] || exit 2\ncase \" {} \" in *\" $2 \"*) exit 0;; esac\nexit 1\n",
                present.join(" ")
            ),
        );
    }
    write("id", format!("#!/bin/sh\necho {uid}\n"));
    if name != "nocmake" {
        write("cmake", "#!/bin/sh\nexit 0\n".into());
    }
    if name != "noiproute2" {
        write("ip", "#!/bin/sh\nexit 0\n".into());
        write("tc", "#!/bin/sh\nexit 0\n".into());
    }
    if sudo_ok {
        write("sudo", "#!/bin/sh\nexit 0\n".into());
    }
    if present.is_some_and(|p| p.contains(&"nats")) {
        write("nats-server", "#!/bin/sh\nexit 0\n".into());
    }
    if present.is_some_and(|p| p.contains(&"postgresql")) {
        std::fs::create_dir_all(dir.join("15/bin")).unwrap();
        write("15/bin/initdb", "#!/bin/sh\nexit 0\n".into());
    }
    dir
}

fn dry_run(path: &Path) -> String {
    let (code, text, err) = run(path, &["--dry-run"]);
    assert_eq!(code, Some(0), "{text}{err}");
    text
}

#[test]
fn nothing_missing_installs_nothing() {
    let out = dry_run(&fake_path(
        "none",
        Some(&["opus", "alsa", "postgresql", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("nothing to install"), "{out}");
    assert!(!out.contains("apt-get"), "{out}");
}

#[test]
fn only_what_is_missing_is_installed() {
    let out = dry_run(&fake_path(
        "opus",
        Some(&["alsa", "postgresql", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("missing: libopus-dev\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends libopus-dev\n"),
        "{out}"
    );
    let out = dry_run(&fake_path(
        "alsa",
        Some(&["opus", "postgresql", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("missing: libasound2-dev\n"), "{out}");
}

#[test]
fn without_pkg_config_everything_is_needed() {
    let out = dry_run(&fake_path("nopc", None, 0, false));
    assert!(
        out.contains("missing: pkg-config libopus-dev libasound2-dev"),
        "{out}"
    );
}

#[test]
fn not_root_uses_sudo_or_says_why_not() {
    let out = dry_run(&fake_path("sudo", Some(&[]), 1000, true));
    assert!(out.contains("would run: sudo -n apt-get install"), "{out}");
    let out = dry_run(&fake_path("nosudo", Some(&[]), 1000, false));
    assert!(
        out.contains("would fail: not root and 'sudo -n' is not allowed"),
        "{out}"
    );
}

#[test]
fn a_bad_argument_is_refused() {
    let out = Command::new("/bin/bash")
        .arg(script())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_cmake_is_installed() {
    let out = dry_run(&fake_path(
        "nocmake",
        Some(&["opus", "alsa", "postgresql", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("missing: cmake\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends cmake\n"),
        "{out}"
    );
}

#[test]
fn a_missing_postgresql_server_is_installed() {
    let out = dry_run(&fake_path(
        "nopg",
        Some(&["opus", "alsa", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("missing: postgresql\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends postgresql\n"),
        "{out}"
    );
}

#[test]
fn a_missing_iproute2_is_installed() {
    let out = dry_run(&fake_path(
        "noiproute2",
        Some(&["opus", "alsa", "postgresql", "nats"]),
        0,
        false,
    ));
    assert!(out.contains("missing: iproute2\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends iproute2\n"),
        "{out}"
    );
}

#[test]
fn a_missing_nats_server_is_installed() {
    let out = dry_run(&fake_path(
        "nonats",
        Some(&["opus", "alsa", "postgresql"]),
        0,
        false,
    ));
    assert!(out.contains("missing: nats-server\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends nats-server\n"),
        "{out}"
    );
}

/// The script run with `args` on the stand-in PATH `path`: its exit
/// status, standard output and standard error.
fn run(path: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("/bin/bash")
        .arg(script())
        .args(args)
        .env("PATH", path)
        .env("CHINWAG_PG_ROOT", path)
        .env("CHINWAG_SBIN", path)
        .env_remove("CHINWAG_PG_BIN")
        .env_remove("CHINWAG_NATS_SERVER")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stand-ins for `--musl`: `musl-gcc` when `gcc`, and `rustup` listing the
/// installed targets `targets` (None: no rustup, and no rustc either).
fn fake_musl_path(name: &str, gcc: bool, targets: Option<&[&str]>) -> PathBuf {
    let dir = fake_path(name, None, 0, false);
    let write = |file: &str, body: String| {
        let p = dir.join(file);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    if gcc {
        write("musl-gcc", "#!/bin/sh\nexit 0\n".into());
    }
    if let Some(targets) = targets {
        write(
            "rustup",
            format!(
                "#!/bin/sh\n[ \"$1 $2 $3\" = \"target list --installed\" ] || exit 2\nprintf '%s\\n' {}\n",
                targets.join(" ")
            ),
        );
    }
    dir
}

#[test]
fn the_musl_path_installs_musl_gcc_and_the_target_and_nothing_else() {
    // pkg-config, opus, alsa and the rest are all missing: --musl asks
    // for none of them.
    let (code, out, err) = run(
        &fake_musl_path("musl-none", false, Some(&["x86_64-unknown-linux-gnu"])),
        &["--dry-run", "--musl"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("missing: musl-tools\n"), "{out}");
    assert!(
        out.contains("would run: apt-get install -y --no-install-recommends musl-tools\n"),
        "{out}"
    );
    assert!(
        out.contains("would run: rustup target add x86_64-unknown-linux-musl\n"),
        "{out}"
    );
    assert!(
        !out.contains("opus") && !out.contains("pkg-config"),
        "{out}"
    );
}

#[test]
fn the_musl_path_with_everything_there_installs_nothing() {
    let (code, out, err) = run(
        &fake_musl_path(
            "musl-all",
            true,
            Some(&["x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl"]),
        ),
        &["--musl", "--dry-run"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("x86_64-unknown-linux-musl target found"),
        "{out}"
    );
    assert!(!out.contains("would run"), "{out}");
}

#[test]
fn the_musl_path_without_rustup_says_what_to_do() {
    let (code, out, err) = run(&fake_musl_path("musl-norustup", true, None), &["--musl"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("no rustup") && err.contains("make run"),
        "{err}"
    );
}

#[test]
fn the_default_path_never_asks_for_musl() {
    // musl-gcc and the musl target both missing: the default path does
    // not care (make run and make test must work without them).
    let (code, out, err) = run(
        &fake_musl_path("musl-default", false, Some(&["x86_64-unknown-linux-gnu"])),
        &["--dry-run"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("missing: pkg-config"), "{out}");
    assert!(!out.contains("musl") && !out.contains("rustup"), "{out}");
}
