//! Keeps the benchmark from rotting: a `--quick` run of every workload
//! against the chinwagd this workspace built must succeed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How slow the machine runs now.
#[path = "../../tests/common/tools.rs"]
mod tools;

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
    let slow = tools::stretch();
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
    let workloads = [
        "fanout-saturation",
        "fanout-paced",
        "p2p-saturation",
        "p2p-paced",
        "relay",
        "idle",
        "churn",
        "slow",
        "accounts",
        "accounts-history",
        "accounts-offline",
        "rooms",
        "rooms-workers",
        "rooms-rtt",
        "babel-login",
        "babel-call",
        "audio",
        "media",
    ];
    for workload in workloads {
        assert!(
            text.contains(&format!("\"workload\":\"{workload}\"")),
            "{workload} missing:\n{text}"
        );
    }
    // Every workload against a spawned chinwagd says how long the server's
    // threads and the bench's waited in the run queue per time slice.
    for line in text
        .lines()
        .filter(|l| l.contains("\"workload\":\"p2p-paced\""))
    {
        for key in ["server_rq_wait_us", "bench_rq_wait_us"] {
            assert!(
                line.contains(&format!("\"{key}\":")),
                "{key} missing:\n{line}"
            );
        }
    }
    assert!(
        !text.contains("\"ok\":false"),
        "a workload reported a problem:\n{text}"
    );
    // The README's table is made from these lines.
    let table = Command::new(env!("CARGO_BIN_EXE_chinwag-bench"))
        .arg("table")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut t| {
            use std::io::Write;
            t.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            t.wait_with_output()
        })
        .expect("chinwag-bench table runs");
    let table = String::from_utf8_lossy(&table.stdout);
    // Every workload has its rows in it.
    for workload in workloads {
        assert!(
            table.contains(&format!("| **{workload}**")),
            "{workload}:\n{table}"
        );
    }
    // Quick: two minutes on an idle machine (a full run takes hours), as
    // much of this one's time as it runs slower now (the larger of the
    // slowdowns before and after).
    let took = start.elapsed();
    let slow = slow.max(tools::stretch());
    assert!(
        took < Duration::from_secs(120).mul_f64(slow),
        "{took:?} ({slow:.1}x slower than idle)"
    );
}
