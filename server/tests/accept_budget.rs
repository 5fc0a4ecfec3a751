//! A TCP connection refused at accept because no thread can be had (the
//! thread budget: `max_threads`, `vm.max_map_count`): counted under
//! `chinwag_drops_total{reason="thread_budget"}` on the metrics endpoint,
//! closed with a FIN (the peer reads the end of the stream, not a reset,
//! even when it had sent its login), and logged a bounded number of times
//! however many are refused. This file installs its own logger.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use chinwag_proto::chatos::Command;
use chinwagd::{Config, Server};

#[path = "common/budget.rs"]
mod budget;
#[path = "common/capture.rs"]
mod capture;
mod common;
use common::{http_get, samples, Wire, WAIT};

/// Connect, send `hello` at once, and read to the end: Ok(()) on a clean
/// end of stream, Err on a reset or bytes.
fn refused_cleanly(addr: SocketAddr, hello: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    // The server may already have closed: a write error is its business.
    let _ = s.write_all(hello);
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} bytes instead of the end")),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(format!("still open after {WAIT:?}"))
        }
        Err(e) => Err(format!("not a clean end: {e}")),
    }
}

#[test]
fn a_connection_refused_for_want_of_a_thread_is_counted_closed_cleanly_and_logged_sparingly() {
    capture::install();
    let srv = Server::start(Config {
        max_threads: 40,
        // No spares: each connection thread is started for it, within the
        // budget, and none in the background.
        spare_threads: 0,
        metrics_addr: "127.0.0.1:0".into(),
        ..Config::ephemeral()
    })
    .unwrap();
    let metrics = srv.metrics_addr().unwrap();
    let spent = budget::spend(&srv);
    const REFUSED: usize = 3 * chinwagd::logs::PER_WINDOW as usize;
    let login = Command::Login {
        login: "late".into(),
    }
    .to_bytes();
    let dialects = [srv.chatos_addr(), srv.babel_addr(), srv.accounts_addr()];
    for i in 0..REFUSED {
        let at = dialects[i % dialects.len()];
        refused_cleanly(at, &login).unwrap_or_else(|e| panic!("connection {i} to {at}: {e}"));
    }
    // Counted before the peer was closed: no wait needed.
    let (code, page) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    let counted = samples(&page)
        .get("chinwag_drops_total{reason=\"thread_budget\"}")
        .copied();
    assert_eq!(counted, Some(REFUSED as f64), "{page}");
    assert_eq!(srv.connections(), 0, "a refused connection holds no slot");
    let said = capture::lines()
        .iter()
        .filter(|l| l.contains("no thread for a new connection"))
        .count();
    assert!(
        (1..=chinwagd::logs::PER_WINDOW as usize).contains(&said),
        "{said} log lines for {REFUSED} refusals"
    );
    // With threads back, the next connection is served.
    drop(spent);
    let deadline = std::time::Instant::now() + WAIT;
    let budget = srv.thread_budget();
    while budget.live() >= budget.limit() {
        assert!(
            std::time::Instant::now() < deadline,
            "the held threads never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut w = Wire::<Command>::new(TcpStream::connect(srv.chatos_addr()).unwrap());
    w.send_bytes(&login);
    assert_eq!(w.recv(), Command::LoginAccepted);
}

/// The test helper itself: dropping a spent budget gives every thread back
/// before the test goes on (the bridge test's call right after it raced the
/// holding threads' exits under load: "a message within the wait").
#[test]
fn a_spent_budget_is_whole_again_as_soon_as_it_is_dropped() {
    let srv = Server::start(Config {
        max_threads: 40,
        spare_threads: 0,
        ..Config::ephemeral()
    })
    .unwrap();
    let before = srv.thread_budget().live();
    for _ in 0..5 {
        let spent = budget::spend(&srv);
        assert_eq!(srv.thread_budget().live(), 40);
        drop(spent);
        assert_eq!(srv.thread_budget().live(), before);
    }
}
