//! chinwagd catches SIGHUP (reread the configuration), SIGINT and SIGTERM
//! (stop) with handlers that restart system calls (SA_RESTART), but that
//! is not enough: a socket call with a time-out (SO_RCVTIMEO, SO_SNDTIMEO),
//! `epoll_wait` and `poll` are never restarted (signal(7)), and a SIGHUP
//! may land on any thread that does not block it. So a SIGHUP sent about
//! every millisecond to every thread of a running chinwagd, while clients
//! of several dialects talk, must end no connection, lose no message, fail
//! no HTTP request and drop no relayed call.

mod common;
#[allow(dead_code)]
#[path = "../../tests/common/storm.rs"]
mod storm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::chatos::Command as Chat;
use common::{babel, babel_calls_accounts, chatos, friends, temp_dir, voice_both_ways, Chinwagd};
use storm::Storm;

/// Texts each way, relayed calls, and metrics requests.
const COUNT: usize = 40;

/// GET /metrics, the request sent only once the server's connection
/// thread is likely waiting in its timed read (the moment a signal would
/// interrupt it): the status code.
fn slow_get(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Not synchronisation: a window for signals to land in.
    std::thread::sleep(Duration::from_millis(20));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The daemon, stopped (killed if it must be) and its files removed when
/// the test ends, failed or not.
struct Running(Chinwagd, std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
        std::fs::remove_dir_all(&self.1).ok();
    }
}

#[test]
fn a_sighup_storm_during_traffic_ends_no_connection_and_loses_nothing() {
    let dir = temp_dir("signals");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chinwagd"));
    cmd.args(common::ALL_PORTS_FREE)
        .args(["--admin-socket", "off", "--metrics-addr", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.join("c.db"));
    let mut run = Running(Chinwagd::spawn(&mut cmd), dir);
    let d = &mut run.0;
    let metrics = d.metrics.expect("the metrics endpoint");
    let (mut ca, mut cb) = (chatos(d.chatos, "ann"), chatos(d.chatos, "bob"));
    let (mut aa, mut ab) = friends(d.accounts, ("al", d.accounts), ("bo", d.accounts));
    let (mut bc, _) = babel(d.babel, "cy");
    let storm = Storm::start(d.child.id() as i32, libc::SIGHUP, Duration::from_secs(60));
    for i in 0..COUNT {
        let text = format!("chatos {i}");
        ca.send_bytes(
            &Chat::Message {
                from: "ann".into(),
                text: text.clone(),
            }
            .to_bytes(),
        );
        // Everyone in chatos hears a text, its author too.
        for c in [&mut cb, &mut ca] {
            assert_eq!(
                c.recv(),
                Chat::Message {
                    from: "ann".into(),
                    text: text.clone()
                }
            );
        }
        let text = format!("accounts {i}");
        aa.send_bytes(
            &Acc::SendMessage {
                pseudo: "bo".into(),
                text: text.clone(),
            }
            .to_bytes(),
        );
        assert_eq!(aa.recv(), Acc::MessageStored);
        assert_eq!(
            ab.recv(),
            Acc::Message {
                pseudo: "al".into(),
                text
            }
        );
        assert_eq!(slow_get(metrics), 200, "GET /metrics {i}");
    }
    // Calls through the media relay: its babel leg's timed greeting read
    // and its voice reads, and the UDP side.
    for i in 0..COUNT / 4 {
        let mut call = babel_calls_accounts(&mut bc, "cy", &mut ab, "bo");
        voice_both_ways(&mut call);
        // The babel side hangs up by closing its voice connection.
        drop(call);
        assert_eq!(
            ab.recv(),
            Acc::HungUp {
                pseudo: "cy".into()
            },
            "call {i}"
        );
    }
    let sent = storm.stop();
    assert!(sent > 1000, "only {sent} signals sent: no storm");
    // Everyone is still connected: one more text each way.
    cb.send_bytes(
        &Chat::Message {
            from: "bob".into(),
            text: "after".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        ca.recv(),
        Chat::Message {
            from: "bob".into(),
            text: "after".into()
        }
    );
    ab.send_bytes(
        &Acc::SendMessage {
            pseudo: "al".into(),
            text: "after".into(),
        }
        .to_bytes(),
    );
    assert_eq!(ab.recv(), Acc::MessageStored);
    assert_eq!(
        aa.recv(),
        Acc::Message {
            pseudo: "bo".into(),
            text: "after".into()
        }
    );
    assert!(d.child.try_wait().unwrap().is_none(), "chinwagd still runs");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    assert!(
        d.child.wait().unwrap().success(),
        "a clean stop after the storm"
    );
}
