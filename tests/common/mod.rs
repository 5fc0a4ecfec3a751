//! Shared by the integration tests: where the built library is, the tools
//! they need (a missing one fails, unless CHINWAG_SKIP_TOOLS names it),
//! processes with time limits, and the digest the examples use.
#![allow(dead_code)]

pub mod alsa;
pub mod forwarder;
pub mod signal;
pub mod storm;
mod tools;

pub use tools::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The directory holding libchinwag.so. The test executable lives in
/// <target>/<profile>/deps, whatever the target directory is: `cargo test`
/// leaves the cdylib beside it in deps/, and `cargo build` also copies it up
/// to <profile>/. Prefer deps/, which this very test run just built.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("target/<profile>/deps").to_path_buf();
    let candidates = [
        deps.clone(),
        deps.parent().expect("target/<profile>").to_path_buf(),
    ];
    for dir in &candidates {
        if dir.join(shared_lib_name()).exists() {
            return dir.clone();
        }
    }
    panic!(
        "{} not found in {} or its parent",
        shared_lib_name(),
        deps.display()
    );
}

pub fn shared_lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libchinwag.dylib"
    } else {
        "libchinwag.so"
    }
}

/// Lines of a child's stdout, delivered through a channel.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A program under test with its standard streams piped: what it prints,
/// line by line, and its input.
pub struct Program {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stdin: ChildStdin,
}

/// Start `cmd` with stdin, stdout and stderr piped.
pub fn start(cmd: &mut Command) -> Program {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let lines = lines_of(&mut child);
    let stdin = child.stdin.take().expect("piped stdin");
    Program {
        child,
        lines,
        stdin,
    }
}

impl Program {
    /// Close its input, then wait (within `limit`) for it to exit with
    /// status 0 (`what` names it in the failure); the lines it printed
    /// that nobody read yet.
    pub fn succeeds(self, what: &str, limit: Duration) -> Vec<String> {
        drop(self.stdin);
        let out = wait_within(self.child, limit);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + limit;
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        rest
    }
}

/// Wait for a line containing `needle`; fail after `limit`.
pub fn expect_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line containing {needle:?} within {limit:?}; saw {seen:?}"),
        }
    }
}

/// Compile `examples/c/<name>.c` against include/ and the built library.
pub fn build_c_example(name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("example-{name}"));
    let lib = lib_dir();
    let o = output_within(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
            .arg("-I")
            .arg(Path::new(ROOT).join("include"))
            .arg(Path::new(ROOT).join(format!("examples/c/{name}.c")))
            .arg("-L")
            .arg(&lib)
            // DT_RPATH, not RUNPATH: it outranks the LD_LIBRARY_PATH that
            // cargo sets for tests, which may list a stale uplifted copy of
            // the library (target/<profile>/) before this one.
            .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
            .args(["-lchinwag", "-lpthread", "-o"])
            .arg(&out),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "cc {name}.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

pub const FNV_OFFSET: u64 = 0xcbf29ce484222325;
pub const FNV_PRIME: u64 = 0x100000001b3;

/// 64-bit FNV-1a, the digest the examples exchange.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter()
        .fold(FNV_OFFSET, |h, b| (h ^ *b as u64).wrapping_mul(FNV_PRIME))
}

/// The email and password the tests give the account `name`.
pub fn account_email(name: &str) -> String {
    format!("{name}@example.org")
}

pub fn account_password(name: &str) -> String {
    format!("pw-{name}-secret")
}

/// Register accounts `a` and `b` and make them friends, with Rust clients
/// that then close; returns once the server has both offline again, so
/// the programs under test can log in as them.
pub fn befriend(srv: &chinwagd::Server, a: &str, b: &str) {
    use chinwag::AccountsClient;
    let limit = Some(Duration::from_secs(20));
    let port = srv.accounts_addr().port();
    let login = |name: &str| {
        let c = AccountsClient::connect("127.0.0.1", port).unwrap();
        c.register(&account_email(name), name, &account_password(name), limit)
            .unwrap();
        c.login_password(&account_email(name), &account_password(name), limit)
            .unwrap();
        c
    };
    let (ca, cb) = (login(a), login(b));
    ca.request_friend(b, limit).unwrap();
    cb.accept_friend(a, limit).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ca.list_friends(limit).unwrap() != [b] {
        assert!(
            Instant::now() < deadline,
            "{a} and {b} did not become friends"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop((ca, cb));
    while srv.hub().online(a).is_some() || srv.hub().online(b).is_some() {
        assert!(Instant::now() < deadline, "{a} and {b} stay online");
        std::thread::sleep(Duration::from_millis(10));
    }
}
