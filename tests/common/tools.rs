//! The tools the tests need (a missing one fails, unless CHINWAG_SKIP_TOOLS
//! names it) and processes with time limits. Plain std, so that the
//! server's own tests can include this file too.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Names the tools this machine lacks on purpose, comma-separated
/// (`CHINWAG_SKIP_TOOLS=cc,python3`): the tests that need one of them are
/// skipped. Any other missing tool fails its test.
pub const SKIP_TOOLS: &str = "CHINWAG_SKIP_TOOLS";

/// Whether `tool` runs. A missing tool fails the test unless
/// `CHINWAG_SKIP_TOOLS` names it, in which case the caller skips (false).
pub fn require(tool: &str) -> bool {
    let skip = std::env::var(SKIP_TOOLS).unwrap_or_default();
    require_with(tool, runs(tool), &skip)
}

/// Whether `tool --version` runs and succeeds.
pub fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// [`require`] with what the machine and the environment say passed in.
pub fn require_with(tool: &str, runs: bool, skip_list: &str) -> bool {
    if runs {
        return true;
    }
    if skip_list.split(',').any(|t| t.trim() == tool) {
        eprintln!("SKIPPED: {tool} not available, and {SKIP_TOOLS} says so");
        return false;
    }
    panic!(
        "{tool} is required but does not run; to skip the tests that need it, \
         set {SKIP_TOOLS}={tool}"
    );
}

/// Run to completion within `limit`, or kill it and fail.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_within(child, limit)
}

pub fn wait_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap_or_default();
            panic!(
                "process exceeded {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}
