//! The C install as a C or C++ developer gets it: CMakeLists.txt installs
//! into a temporary prefix (once staged under DESTDIR, once for real), then
//! one C and one C++ example are built with nothing but `pkg-config` and
//! that prefix, and run against an in-process chinwagd. No path into the
//! checkout and no rpath into target/ may appear in what they use.
//! cmake and pkg-config are installed by scripts/c-deps.sh when missing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{expect_line, lib_dir, output_within, require, start, ROOT};

const STEP: Duration = Duration::from_secs(10);

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let o = output_within(cmd, Duration::from_secs(300));
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tools_ready() -> bool {
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(have("cmake") && have("pkg-config")) {
        let _ = output_within(
            Command::new("sh").arg(Path::new(ROOT).join("scripts/c-deps.sh")),
            Duration::from_secs(300),
        );
    }
    require("cmake") && require("pkg-config") && require("cc") && require("c++")
}

/// Configure, build and install into `prefix` (under `destdir` if given).
fn install(build: &Path, prefix: &Path, destdir: Option<&Path>) {
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(ROOT)
            .arg("-B")
            .arg(build)
            .arg(format!("-DCMAKE_INSTALL_PREFIX={}", prefix.display()))
            .arg("-DCMAKE_INSTALL_LIBDIR=lib")
            // The archive `cargo test` just built: no second cargo inside.
            .arg(format!("-DCHINWAG_PREBUILT_DIR={}", lib_dir().display())),
        "cmake configure",
    );
    run_ok(
        Command::new("cmake").arg("--build").arg(build),
        "cmake build",
    );
    let mut inst = Command::new("cmake");
    inst.arg("--install").arg(build);
    if let Some(d) = destdir {
        inst.env("DESTDIR", d);
    }
    run_ok(&mut inst, "cmake install");
}

fn pkg(prefix: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("pkg-config")
            .args(args)
            .arg("chinwag")
            // The prefix, then the system's own .pc files (libchinwag.so
            // needs libopus and ALSA, which chinwag.pc requires privately).
            .env_remove("PKG_CONFIG_LIBDIR")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        "pkg-config",
    )
    .trim()
    .to_string()
}

fn readelf(path: &Path) -> String {
    run_ok(Command::new("readelf").arg("-d").arg(path), "readelf")
}

#[test]
fn install_into_a_prefix_then_build_c_and_cxx_with_pkg_config_only() {
    if !tools_ready() {
        return;
    }
    // Outside the checkout, so that a path into it cannot hide.
    let tmp = std::env::temp_dir().join(format!("chinwag-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let prefix = tmp.join("prefix");
    let version = env!("CARGO_PKG_VERSION");
    let soname = format!(
        "libchinwag.so.{}",
        if env!("CARGO_PKG_VERSION_MAJOR") == "0" {
            format!("0.{}", env!("CARGO_PKG_VERSION_MINOR"))
        } else {
            env!("CARGO_PKG_VERSION_MAJOR").to_string()
        }
    );

    // Staged: every file lands under DESTDIR, nothing in the prefix yet.
    let stage = tmp.join("stage");
    install(&tmp.join("build-staged"), &prefix, Some(&stage));
    let staged = stage.join(prefix.strip_prefix("/").unwrap());
    for f in [
        format!("lib/libchinwag.so.{version}"),
        format!("lib/{soname}"),
        "lib/libchinwag.so".into(),
        "lib/libchinwag.a".into(),
        "include/chinwag.h".into(),
        "lib/pkgconfig/chinwag.pc".into(),
    ] {
        assert!(staged.join(&f).exists(), "{f} not staged");
    }
    assert!(!prefix.exists(), "DESTDIR install wrote into the prefix");

    // For real.
    install(&tmp.join("build"), &prefix, None);
    let lib = prefix.join("lib");
    assert!(readelf(&lib.join(format!("libchinwag.so.{version}")))
        .contains(&format!("Library soname: [{soname}]")));
    assert_eq!(
        std::fs::read_link(lib.join("libchinwag.so")).unwrap(),
        PathBuf::from(&soname)
    );
    assert_eq!(pkg(&prefix, &["--modversion"]), version);
    let cflags = pkg(&prefix, &["--cflags"]);
    let libs = pkg(&prefix, &["--libs"]);
    for flags in [&cflags, &libs] {
        assert!(!flags.contains(ROOT), "a path into the checkout: {flags}");
        assert!(!flags.contains("/target/"), "a path into target/: {flags}");
        assert!(!flags.contains("rpath"), "an rpath: {flags}");
    }
    assert!(libs.contains("-lchinwag"), "{libs}");
    let libdir = pkg(&prefix, &["--variable=libdir"]);
    assert_eq!(Path::new(&libdir), lib);

    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.chatos_addr().port().to_string();

    // C: the poll(2) example.
    let c_exe = tmp.join("poll_chat");
    run_ok(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(Path::new(ROOT).join("examples/c/poll_chat.c"))
            .args(cflags.split_whitespace())
            .arg("-o")
            .arg(&c_exe)
            .args(libs.split_whitespace()),
        "cc poll_chat.c",
    );
    // C++: RAII around the C API.
    let cxx_exe = tmp.join("hello");
    run_ok(
        Command::new("c++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(Path::new(ROOT).join("examples/cpp/hello.cpp"))
            .args(cflags.split_whitespace())
            .arg("-o")
            .arg(&cxx_exe)
            .args(libs.split_whitespace()),
        "c++ hello.cpp",
    );
    for exe in [&c_exe, &cxx_exe] {
        let d = readelf(exe);
        assert!(d.contains(&format!("Shared library: [{soname}]")), "{d}");
        assert!(!d.contains("RPATH") && !d.contains("RUNPATH"), "{d}");
    }

    // They run with the prefix's library and nothing else.
    let o = output_within(
        Command::new(&cxx_exe)
            .args(["127.0.0.1", &port, "cxx"])
            .env("LD_LIBRARY_PATH", &libdir),
        Duration::from_secs(30),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "hello: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("libchinwag {version} (header {version})")),
        "{out}"
    );
    assert!(out.contains("echo from cxx: hello from C++"), "{out}");

    let mut cee = start(
        Command::new(&c_exe)
            .args(["127.0.0.1", &port, "cee"])
            .env("LD_LIBRARY_PATH", &libdir),
    );
    expect_line(&cee.lines, "logged in as cee", STEP);
    writeln!(cee.stdin, "from the installed library").unwrap();
    expect_line(&cee.lines, "<cee> from the installed library", STEP);
    writeln!(cee.stdin, "/quit").unwrap();
    expect_line(&cee.lines, "-- bye", STEP);
    cee.succeeds("the installed chat", STEP);
    let _ = std::fs::remove_dir_all(&tmp);
}
