//! Keeps the benchmark from rotting: a `--quick` run of every workload
//! against the chinwagd this workspace built must succeed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// chinwagd sits in the same target profile directory as this test's deps/.
fn chinwagd() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("chinwagd");
    p.exists().then_some(p)
}

#[test]
fn quick_run_of_every_workload_succeeds() {
    let Some(server) = chinwagd() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chinwagd is not built beside this test; run `cargo test --workspace`");
        }
        eprintln!("SKIPPED: chinwagd not built; run `cargo test --workspace`");
        return;
    };
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_chinwag-bench"))
        .args(["all", "--quick", "--server"])
        .arg(&server)
        .output()
        .expect("chinwag-bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chinwag-bench --quick failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for workload in [
        "fanout-saturation",
        "fanout-paced",
        "p2p-saturation",
        "relay",
        "idle",
        "slow",
        "accounts",
        "accounts-history",
        "audio",
        "media",
    ] {
        assert!(
            text.contains(&format!("\"workload\":\"{workload}\"")),
            "{workload} missing:\n{text}"
        );
    }
    assert!(
        !text.contains("\"ok\":false"),
        "a workload reported a problem:\n{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(120));
}
