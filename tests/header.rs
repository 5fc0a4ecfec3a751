//! The generated header matches the committed include/chinwag.h, compiles
//! as C11 and C++ with every warning an error, carries the crate version,
//! and chinwag.pc gives flags that build and run a program.
//!
//! CHINWAG_UPDATE_HEADER=1 rewrites include/chinwag.h instead of failing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{output_within, require, require_with, runs, ROOT};

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/chinwag.h"));

#[test]
fn committed_header_is_the_generated_one() {
    let path = Path::new(ROOT).join("include/chinwag.h");
    if std::env::var("CHINWAG_UPDATE_HEADER").as_deref() == Ok("1") {
        std::fs::write(&path, GENERATED).expect("write include/chinwag.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == GENERATED,
        "include/chinwag.h differs from what build.rs generates; \
         run `CHINWAG_UPDATE_HEADER=1 cargo test -p chinwag --test header` and commit it"
    );
}

#[test]
fn header_opens_with_threads_and_carries_version() {
    let threads = GENERATED.find("Threads:").expect("thread-safety statement");
    let first_decl = GENERATED.find("typedef").expect("declarations");
    assert!(threads < first_decl, "the thread statement must come first");
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(
            GENERATED.contains(&format!("#define CW_VERSION_{name} {value}\n")),
            "{name}"
        );
    }
    let v = unsafe { std::ffi::CStr::from_ptr(chinwag::ffi::cw_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    // Every exported function is documented with its contract.
    for chunk in GENERATED.split("\n/**").skip(1) {
        if chunk.contains("cw_") && chunk.contains("(") && chunk.contains(");") {
            let doc = chunk.split("*/").next().unwrap();
            if chunk.split("*/").nth(1).is_some_and(|d| d.contains('(')) {
                for word in ["Returns", "Ownership", "Threads"] {
                    assert!(doc.contains(word), "missing {word} in:{chunk}");
                }
            }
        }
    }
}

#[test]
fn header_compiles_as_c11_and_cxx() {
    if !require("cc") || !require("c++") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("header_check.c");
    std::fs::write(
        &src,
        "#include <chinwag.h>\n\
         int main(void) {\n\
           cw_client *c = 0; cw_event *e = 0; cw_stream *s = 0;\n\
           cw_result r = CW_OK; cw_event_type k = CW_EVENT_NONE; cw_dialect d = CW_DIALECT_CHATOS;\n\
           (void)c; (void)e; (void)s; (void)k; (void)d;\n\
           return (int)r + CW_VERSION_MAJOR * 0;\n\
         }\n",
    )
    .unwrap();
    let include = Path::new(ROOT).join("include");
    for (compiler, std, lang) in [("cc", "-std=c11", "c"), ("c++", "-std=c++17", "c++")] {
        let o = output_within(
            Command::new(compiler)
                .args([
                    "-x",
                    lang,
                    std,
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-pedantic",
                    "-c",
                ])
                .arg("-I")
                .arg(&include)
                .arg(&src)
                .arg("-o")
                .arg(dir.join(format!("header_check_{lang}.o"))),
            Duration::from_secs(60),
        );
        assert!(
            o.status.success(),
            "{compiler}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn pkg_config_file_builds_and_runs_a_program() {
    if !require("pkg-config") || !require("cc") {
        return;
    }
    // chinwag.pc sits in the profile directory, above deps/.
    let lib = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let o = output_within(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "chinwag"])
            .env("PKG_CONFIG_PATH", &lib),
        Duration::from_secs(20),
    );
    assert!(
        o.status.success(),
        "pkg-config: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let flags = String::from_utf8(o.stdout).unwrap();
    assert!(flags.contains("-lchinwag"), "{flags}");
    assert!(flags.contains(&format!("-I{ROOT}/include")), "{flags}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("pkg_check.c");
    std::fs::write(
        &src,
        "#include <chinwag.h>\n#include <stdio.h>\n#include <string.h>\n\
         int main(void) {\n\
           printf(\"%s\\n\", cw_version());\n\
           return strcmp(cw_version(), CW_VERSION_STRING) != 0;\n\
         }\n",
    )
    .unwrap();
    let exe = dir.join("pkg_check");
    let o = output_within(
        Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(flags.split_whitespace()),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = output_within(&mut Command::new(&exe), Duration::from_secs(10));
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
}

/// Skipping a test for a missing tool is an explicit opt-in, never the default.
#[test]
fn a_missing_tool_fails_unless_skipping_it_was_asked_for() {
    const GONE: &str = "cw-no-such-tool";
    assert!(!runs(GONE));
    let fails =
        |skip: &'static str| std::panic::catch_unwind(|| require_with(GONE, false, skip)).is_err();
    assert!(fails(""), "missing and not listed: a failure");
    assert!(fails("cc,python3"), "another tool listed: a failure");
    assert!(fails("cw-no-such"), "a prefix is not the tool");
    assert!(
        !require_with(GONE, false, "cc, cw-no-such-tool"),
        "listed: skipped"
    );
    assert!(require_with("cc", true, ""), "present: runs");
    assert!(
        require_with("cc", true, "cc"),
        "present and listed: still runs"
    );
}
