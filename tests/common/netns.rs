//! A test re-run in a network namespace of its own (`unshare --user
//! --net`), for a test that needs more than 127.0.0.1 as everyone shares
//! it: a second source address, `::1`, a server bound to every address,
//! or a queueing discipline on its own loopback. Shared by the server's
//! rooms tests (server/tests/rooms_support) and the library's unit tests.
#![allow(dead_code)]

use std::time::Duration;

/// Processes with time limits.
#[path = "tools.rs"]
#[allow(clippy::duplicate_mod)]
mod tools;

/// Set in a test process re-run inside a network namespace of its own.
const NETNS: &str = "CHINWAG_TEST_NETNS";

/// [`in_own_netns_with`] with only the loopback brought up.
pub fn in_own_netns(name: &str) -> bool {
    in_own_netns_with(name, "true")
}

/// Run the calling test (`name`, as libtest names it, module path
/// included) in a network namespace of its own: the test binary runs again
/// under `unshare --user --map-root-user --net` with only its loopback up,
/// after `setup` (a shell command run as the namespace's root, such as a
/// `tc qdisc`), so nothing it sends or binds can reach beyond it. Returns
/// true in that child (run the body there), false in the parent, which has
/// checked that the child ran the test and passed. Where no namespace can
/// be made, or `setup` fails in one, the test is skipped (a failure under
/// CI=true).
pub fn in_own_netns_with(name: &str, setup: &str) -> bool {
    if std::env::var_os(NETNS).is_some() {
        return true;
    }
    let prepare = format!("ip link set lo up && {setup}");
    let can = tools::require("unshare")
        && std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sh", "-c", &prepare])
            .status()
            .is_ok_and(|s| s.success());
    if !can {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name}: no network namespace (or `{setup}` in one) under CI=true"
        );
        eprintln!("SKIPPED: {name}: no network namespace (or `{setup}` in one) here");
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = tools::output_within(
        std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "--"])
            .args(["sh", "-c", &format!(r#"{prepare} && exec "$0" "$@""#)])
            .arg(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(NETNS, "1"),
        Duration::from_secs(120),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let errs = String::from_utf8_lossy(&out.stderr);
    eprintln!("{errs}");
    assert!(
        out.status.success() && said.contains("1 passed"),
        "{name} in its own network namespace: {}\n{said}",
        out.status
    );
    false
}
