//! The operator's kit, end to end on 127.0.0.1: the sample configuration
//! and systemd unit, owner-only database files, online backup under write
//! load, the admin socket through the real `chinwagctl` (who, kick, bans by
//! name and address in every dialect, account deletion, password reset),
//! the Prometheus endpoint, and the real `chinwagd` binary's start-up
//! errors and SIGHUP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::Frame as Babel;
use chinwag_proto::chatos;
use chinwag_proto::rooms::{self as wire, Body, Message, Registration};
use chinwagd::{Config, Server};

mod common;
use common::{http_get, samples, temp_dir, Wire, WAIT};

/// An in-process server whose database and admin socket live in `dir`.
fn server_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.db_path = dir.join("chinwag.db");
    cfg.admin_socket = dir.join("admin.sock");
    tweak(&mut cfg);
    Server::start(cfg).expect("server starts")
}

/// Run the real chinwagctl: (exit code, stdout, stderr).
fn ctl_with(sock: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chinwagctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    ctl_with(sock, args, "")
}

/// chinwagctl that must succeed; its standard output.
fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let (code, out, err) = ctl(sock, args);
    assert_eq!(code, 0, "chinwagctl {args:?}: {out} {err}");
    out
}

/// Poll `f` until it holds, failing after the wait.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---- one small client per dialect ----

fn chatos_login(addr: SocketAddr, name: &str) -> (TcpStream, Option<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(&chatos::Command::Login { login: name.into() }.to_bytes());
    let mut one = [0u8; 1];
    // read_exact waits on through EINTR (see
    // a_signal_does_not_end_a_wait_for_a_message); EOF or a time-out is None.
    let answer = s.read_exact(&mut one).ok().map(|()| one[0]);
    (s, answer)
}

fn babel_login(addr: SocketAddr, name: &str) -> (Wire<Babel>, Babel) {
    let mut w = Wire::<Babel>::new(TcpStream::connect(addr).unwrap());
    assert_eq!(w.recv(), Babel::HelloConnect);
    w.send_bytes(&Babel::Login { name: name.into() }.to_bytes());
    let answer = w.recv();
    if answer == Babel::LoginSuccess {
        // The contact list always follows.
        assert!(matches!(w.recv(), Babel::AddContact { .. }));
    }
    (w, answer)
}

fn accounts_conn(addr: SocketAddr) -> Wire<Acc> {
    let mut w = Wire::<Acc>::new(TcpStream::connect(addr).unwrap());
    w.send_bytes(&Acc::Hello.to_bytes());
    assert_eq!(w.recv(), Acc::HelloAck);
    w
}

fn register(addr: SocketAddr, email: &str, pseudo: &str, pw: &str) -> Acc {
    let mut w = accounts_conn(addr);
    w.send_bytes(
        &Acc::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: pw.into(),
        }
        .to_bytes(),
    );
    w.recv()
}

fn accounts_login(addr: SocketAddr, email: &str, pw: &str) -> (Wire<Acc>, Acc) {
    let mut w = accounts_conn(addr);
    w.send_bytes(
        &Acc::Login {
            email: email.into(),
            password: pw.into(),
        }
        .to_bytes(),
    );
    let r = w.recv();
    (w, r)
}

/// Register on the rooms dialect: the answer, or None if none comes.
fn rooms_register(server: SocketAddr, name: &str) -> (UdpSocket, Option<Body>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let hello = Message {
        user: wire::UNREGISTERED,
        seq: 1,
        body: Body::Connexion {
            name: Some(name.into()),
        },
    }
    .to_bytes();
    let mut buf = [0u8; 2048];
    // Retransmit as the seed asks: every 100 ms, 5 tries.
    for _ in 0..5 {
        s.send_to(&hello, server).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let m = Message::decode(&buf[..n]).unwrap();
            return (s, Some(m.body));
        }
    }
    (s, None)
}

fn who(sock: &Path) -> Vec<(String, String)> {
    let out = ctl_ok(sock, &["--json", "who"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_owned(),
                u["dialect"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn online(sock: &Path, name: &str) -> bool {
    who(sock).iter().any(|(n, _)| n == name)
}

// ---- the sample files ----

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn sample_config_lists_every_key_with_its_default_and_a_comment() {
    let text = std::fs::read_to_string(repo_file("dist/chinwagd.toml")).unwrap();
    let parsed = Config::from_toml(&text).expect("the sample parses");
    assert_eq!(
        parsed,
        Config::default(),
        "the sample's values are the defaults"
    );
    // Parsing fills missing keys with defaults, so compare the key sets too.
    let sample: toml::Table = text.parse().unwrap();
    let defaults = match toml::Value::try_from(Config::default()).unwrap() {
        toml::Value::Table(t) => t,
        other => panic!("{other:?}"),
    };
    let mut want: Vec<&String> = defaults.keys().collect();
    let mut have: Vec<&String> = sample.keys().collect();
    want.sort();
    have.sort();
    assert_eq!(have, want, "every key of Config, and only those");
    // Each key is explained: a comment on its line or just above it.
    let lines: Vec<&str> = text.lines().collect();
    for key in want {
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap();
        let commented =
            lines[i].contains('#') || lines[..i].last().is_some_and(|l| l.starts_with('#'));
        assert!(commented, "{key} has no comment");
    }
    assert!(Config::default().validate().is_ok());
}

/// `chinwagctl --help` says what chinwagctl is, not what the package is
/// ("The chinwag server" was its first line).
#[test]
fn chinwagctl_help_says_it_administers_a_running_chinwagd() {
    let out = Command::new(env!("CARGO_BIN_EXE_chinwagctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with("Administer a running chinwagd through its admin socket"),
        "{help}"
    );
}

/// dist/chinwagd.toml promises "Command-line flags (same names, with
/// dashes: --chatos-port) override this file": every key has its flag
/// (`db_path` is `--db`), and the flag really sets it.
#[test]
fn every_setting_has_a_flag_of_the_same_name() {
    let help = Command::new(env!("CARGO_BIN_EXE_chinwagd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let defaults = match toml::Value::try_from(Config::default()).unwrap() {
        toml::Value::Table(t) => t,
        other => panic!("{other:?}"),
    };
    let missing: Vec<String> = defaults
        .keys()
        .map(|k| match k.as_str() {
            "db_path" => "--db".to_owned(),
            k => format!("--{}", k.replace('_', "-")),
        })
        .filter(|flag| !help.contains(&format!("{flag} ")))
        .collect();
    assert!(missing.is_empty(), "no flag for {missing:?}:\n{help}");
    // The flag reaches the setting: a zero is refused naming the key.
    let (code, err) = refused_start(&["--max-pending-requests", "0", "--db", ":memory:"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("max_pending_requests = 0 is out of range"),
        "{err}"
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let has = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("systemd-analyze is not installed: the unit is not checked here");
        return;
    }
    let dir = temp_dir("unit");
    let unit = std::fs::read_to_string(repo_file("dist/chinwagd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/chinwagd --config /etc/chinwag/chinwagd.toml"));
    // verify wants the binary it names to exist: point it at the one just built.
    let local = unit.replace("/usr/local/bin/chinwagd", env!("CARGO_BIN_EXE_chinwagd"));
    let path = dir.join("chinwagd.service");
    std::fs::write(&path, local).unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for chinwagd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    // 0 is a perfect sandbox, 10 none at all; systemd calls < 2 "OK".
    assert!(score <= 2.0, "exposure {score}: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- files ----

#[test]
fn database_wal_and_shm_files_are_owner_only() {
    let dir = temp_dir("perm");
    let srv = server_in(&dir, |_| {});
    let db = dir.join("chinwag.db");
    assert_eq!(
        register(
            srv.accounts_addr(),
            "a@example.org",
            "alice",
            "correct horse"
        ),
        Acc::Registered
    );
    for f in ["chinwag.db", "chinwag.db-wal", "chinwag.db-shm"] {
        let p = dir.join(f);
        assert!(p.exists(), "{f} exists while the server runs");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.join("admin.sock")) & 0o077, 0, "admin socket");
    drop(srv);
    assert_eq!(mode(&db), 0o600);
    // A database left readable by others (an older chinwagd) is tightened.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let srv = server_in(&dir, |_| {});
    assert_eq!(mode(&db), 0o600);
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- backup ----

#[test]
fn backup_under_write_load_passes_integrity_check() {
    let dir = temp_dir("backup");
    let srv = server_in(&dir, |_| {});
    let addr = srv.accounts_addr();
    let sock = dir.join("admin.sock");
    assert_eq!(
        register(addr, "a@example.org", "alice", "correct horse"),
        Acc::Registered
    );
    assert_eq!(
        register(addr, "b@example.org", "bob", "battery staple"),
        Acc::Registered
    );
    let (mut a, r) = accounts_login(addr, "a@example.org", "correct horse");
    assert!(matches!(r, Acc::LoginOk { .. }));
    let (mut b, r) = accounts_login(addr, "b@example.org", "battery staple");
    assert!(matches!(r, Acc::LoginOk { .. }));
    a.send_bytes(
        &Acc::FriendRequest {
            pseudo: "bob".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        a.recv(),
        Acc::FriendRequestSent {
            pseudo: "bob".into()
        }
    );
    assert_eq!(
        b.recv(),
        Acc::FriendRequested {
            pseudo: "alice".into()
        }
    );
    b.send_bytes(
        &Acc::AcceptFriend {
            pseudo: "alice".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        a.recv(),
        Acc::FriendAccepted {
            pseudo: "bob".into()
        }
    );
    drop(b); // bob offline: every message is stored undelivered

    // Writer: alice sends acknowledged messages until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        thread::spawn(move || {
            let mut in_flight = 0usize;
            let mut n = 0usize;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                while in_flight < 16 {
                    n += 1;
                    a.send_bytes(
                        &Acc::SendMessage {
                            pseudo: "bob".into(),
                            text: format!("message {n} {}", "x".repeat(200)),
                        }
                        .to_bytes(),
                    );
                    in_flight += 1;
                }
                match a.try_recv(Duration::from_secs(5)) {
                    Some(Acc::MessageStored) => {
                        in_flight -= 1;
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    other => panic!("writer got {other:?}"),
                }
            }
        })
    };
    eventually("the write load to start", || {
        acked.load(Ordering::Acquire) > 200
    });
    let mut counts = Vec::new();
    for i in 0..3 {
        let before = acked.load(Ordering::Acquire);
        let dest = dir.join(format!("copy-{i}.db"));
        let out = ctl_ok(&sock, &["backup", dest.to_str().unwrap()]);
        assert!(out.contains("bytes"), "{out}");
        assert_eq!(mode(&dest), 0o600, "the copy is owner-only");
        let c = rusqlite::Connection::open(&dest).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "a self-contained copy");
        let n: i64 = c
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        // Everything acknowledged before the backup began is in the copy.
        assert!(
            n as usize >= before,
            "copy {i}: {n} rows, {before} acknowledged before"
        );
        counts.push(n);
        // Let the load move on between copies.
        let mark = acked.load(Ordering::Acquire);
        eventually("more writes", || acked.load(Ordering::Acquire) > mark + 50);
    }
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]),
        "copies of a live database: {counts:?}"
    );
    // An existing file is never overwritten; a relative path is made absolute by chinwagctl.
    let (code, _, err) = ctl(&sock, &["backup", dir.join("copy-0.db").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- administration ----

/// `ban` and `unban` take exactly one of a name and `--ip`; anything else
/// is a usage error (exit 2, docs/operations.md), found by chinwagctl
/// itself, not a refusal of a live server (exit 1) after a round trip.
#[test]
fn ban_and_unban_need_exactly_one_target_or_it_is_a_usage_error() {
    let dir = temp_dir("ctl-usage");
    let srv = server_in(&dir, |_| {});
    let sock = dir.join("admin.sock");
    for args in [
        &["ban"][..],
        &["ban", "--reason", "spam"],
        &["ban", "eve", "--ip", "10.0.0.7"],
        &["unban"],
        &["unban", "eve", "--ip", "10.0.0.7"],
    ] {
        let (code, out, err) = ctl(&sock, args);
        assert_eq!(code, 2, "chinwagctl {args:?}: {out} {err}");
        assert!(err.contains("Usage"), "{args:?}: {err}");
    }
    // Nothing was banned, and one target works.
    assert_eq!(ctl_ok(&sock, &["bans"]), "");
    assert_eq!(ctl_ok(&sock, &["ban", "--ip", "10.0.0.7"]), "banned\n");
    assert_eq!(ctl_ok(&sock, &["unban", "--ip", "10.0.0.7"]), "done\n");
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn who_kick_and_bans_by_name_and_address_in_every_dialect() {
    let dir = temp_dir("admin");
    let srv = server_in(&dir, |_| {});
    let sock = dir.join("admin.sock");
    let (c_addr, b_addr, a_addr, r_addr) = (
        srv.chatos_addr(),
        srv.babel_addr(),
        srv.accounts_addr(),
        srv.rooms_addr(),
    );
    assert_eq!(
        register(a_addr, "c@example.org", "carol", "correct horse"),
        Acc::Registered
    );
    let (mut alice, ok) = chatos_login(c_addr, "alice");
    assert_eq!(ok, Some(chatos::op::LOGIN_ACCEPTED));
    let (mut bob, ok) = babel_login(b_addr, "bob");
    assert_eq!(ok, Babel::LoginSuccess);
    let (mut carol, ok) = accounts_login(a_addr, "c@example.org", "correct horse");
    assert!(matches!(ok, Acc::LoginOk { .. }));
    // A babel client lists every user it can call: carol, an accounts user
    // (docs/bridging.md).
    assert_eq!(
        bob.recv(),
        Babel::AddContact {
            contacts: vec!["carol".into()]
        }
    );
    let (_dave, ok) = rooms_register(r_addr, "dave");
    assert!(matches!(
        ok,
        Some(Body::Registered {
            status: Registration::Accepted,
            ..
        })
    ));

    let mut users = who(&sock);
    users.sort();
    let want: Vec<(String, String)> = [
        ("alice", "chatos"),
        ("bob", "babel"),
        ("carol", "accounts"),
        ("dave", "rooms"),
    ]
    .iter()
    .map(|(n, d)| (n.to_string(), d.to_string()))
    .collect();
    assert_eq!(users, want);
    let table = ctl_ok(&sock, &["who"]);
    assert!(
        table.contains("4 online: accounts 1, babel 1, chatos 1, rooms 1")
            && table.contains("127.0.0.1"),
        "{table}"
    );

    // Kick: the connection closes and the name is free again.
    assert!(ctl_ok(&sock, &["kick", "alice"]).contains("chatos"));
    common::expect_eof(&mut alice, "alice's connection");
    eventually("alice gone", || !online(&sock, "alice"));
    let (code, _, err) = ctl(&sock, &["kick", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("not online"), "{err}");
    let (_again, ok) = chatos_login(c_addr, "alice");
    assert_eq!(ok, Some(chatos::op::LOGIN_ACCEPTED), "a kick is not a ban");

    // Ban by name: bob is disconnected and refused in every dialect.
    let out = ctl_ok(&sock, &["ban", "bob", "--reason", "spam"]);
    assert!(out.contains("disconnected: bob"), "{out}");
    bob.expect_closed();
    eventually("bob gone", || !online(&sock, "bob"));
    let (_b, refused) = babel_login(b_addr, "bob");
    assert_eq!(
        refused,
        Babel::LoginFailed {
            reason: "banned".into()
        }
    );
    let (_c, refused) = chatos_login(c_addr, "bob");
    assert_eq!(refused, Some(chatos::op::LOGIN_REFUSED));
    let (_r, refused) = rooms_register(r_addr, "bob");
    assert!(matches!(
        refused,
        Some(Body::Registered {
            status: Registration::NameTaken,
            ..
        })
    ));
    assert_eq!(
        register(a_addr, "b@example.org", "bob", "correct horse"),
        Acc::PseudoTaken
    );
    assert!(ctl_ok(&sock, &["bans"]).contains("name bob  (spam)"));
    // Banning again is harmless and says so.
    assert!(ctl_ok(&sock, &["ban", "bob"]).contains("already banned"));

    // Ban by address: every connection from 127.0.0.1 closes, in every
    // dialect, and new ones are closed at accept (TCP) or ignored (UDP).
    let out = ctl_ok(&sock, &["ban", "--ip", "127.0.0.1"]);
    assert!(out.contains("carol") && out.contains("dave"), "{out}");
    carol.expect_closed();
    eventually("nobody online", || who(&sock).is_empty());
    let mut fresh = Wire::<Babel>::new(TcpStream::connect(b_addr).unwrap());
    fresh.expect_closed(); // not even HelloConnect
    let (_c, refused) = chatos_login(c_addr, "erin");
    assert_eq!(refused, None, "closed at accept");
    let (_r, silence) = rooms_register(r_addr, "erin");
    assert!(silence.is_none(), "rooms: {silence:?}");
    assert_eq!(ctl_ok(&sock, &["bans"]).lines().count(), 2);

    ctl_ok(&sock, &["unban", "--ip", "127.0.0.1"]);
    let (_e, ok) = chatos_login(c_addr, "erin");
    assert_eq!(ok, Some(chatos::op::LOGIN_ACCEPTED));
    let (code, _, err) = ctl(&sock, &["unban", "--ip", "127.0.0.1"]);
    assert_eq!((code, err.contains("no such ban")), (1, true), "{err}");
    let (code, _, err) = ctl(&sock, &["ban", "--ip", "not-an-address"]);
    assert_eq!(code, 1, "{err}");

    // Bans are persisted: a restart on the same database keeps bob out.
    drop(srv);
    let srv = server_in(&dir, |_| {});
    assert_eq!(ctl_ok(&sock, &["bans"]).trim(), "name bob  (spam)");
    let (_b, refused) = babel_login(srv.babel_addr(), "bob");
    assert_eq!(
        refused,
        Babel::LoginFailed {
            reason: "banned".into()
        }
    );
    ctl_ok(&sock, &["unban", "bob"]);
    let (_b, ok) = babel_login(srv.babel_addr(), "bob");
    assert_eq!(ok, Babel::LoginSuccess);
    drop(srv);
    assert!(!sock.exists(), "the socket is removed at shutdown");
    let (code, _, err) = ctl(&sock, &["who"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn delete_account_and_reset_password() {
    let dir = temp_dir("accounts");
    let srv = server_in(&dir, |_| {});
    let sock = dir.join("admin.sock");
    let addr = srv.accounts_addr();
    assert_eq!(
        register(addr, "c@example.org", "carol", "correct horse"),
        Acc::Registered
    );

    // The new password comes on standard input, never on the command line.
    let (code, out, err) = ctl_with(&sock, &["reset-password", "carol"], "new password 1\n");
    assert_eq!(code, 0, "{out} {err}");
    let (_w, r) = accounts_login(addr, "c@example.org", "correct horse");
    assert_eq!(r, Acc::LoginFailed, "the old password no longer works");
    let (mut carol, r) = accounts_login(addr, "c@example.org", "new password 1");
    assert!(matches!(r, Acc::LoginOk { .. }), "{r:?}");
    let (code, _, err) = ctl_with(&sock, &["reset-password", "carol"], "short\n");
    assert_eq!(code, 1);
    assert!(err.contains("at least 8"), "{err}");
    let (code, _, err) = ctl_with(&sock, &["reset-password", "nobody"], "long enough\n");
    assert_eq!((code, err.contains("no account")), (1, true), "{err}");

    // Deleting closes the session, frees the name and the email.
    ctl_ok(&sock, &["delete-account", "carol"]);
    carol.expect_closed();
    let (_w, r) = accounts_login(addr, "c@example.org", "new password 1");
    assert_eq!(r, Acc::LoginFailed);
    eventually("carol offline", || !online(&sock, "carol"));
    let (_g, ok) = chatos_login(srv.chatos_addr(), "carol");
    assert_eq!(
        ok,
        Some(chatos::op::LOGIN_ACCEPTED),
        "no longer a reserved name"
    );
    let (code, _, err) = ctl(&sock, &["delete-account", "carol"]);
    assert_eq!((code, err.contains("no account")), (1, true), "{err}");
    assert_eq!(
        register(addr, "c@example.org", "carol2", "correct horse"),
        Acc::Registered
    );
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn admin_socket_keeps_other_users_out() {
    let dir = temp_dir("sockperm");
    let srv = server_in(&dir, |_| {});
    let sock = dir.join("admin.sock");
    assert_eq!(mode(&sock), 0o600);
    let health = ctl_ok(&sock, &["health"]);
    assert!(health.starts_with("store ok"), "{health}");
    // The wire format by hand: bad requests are answered, the connection
    // stays usable, and an over-long line is answered and closed.
    let raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap()).lines();
    let mut ask = |line: &str| -> serde_json::Value {
        (&raw).write_all(line.as_bytes()).unwrap();
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
    };
    let bad = ask("this is not json\n");
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().starts_with("bad request"));
    assert_eq!(ask("{\"cmd\":\"launch-missiles\"}\n")["ok"], false);
    assert_eq!(
        ask("{\"cmd\":\"ban\",\"name\":\"x\",\"ip\":\"1.2.3.4\"}\n")["ok"],
        false
    );
    assert_eq!(ask("{\"cmd\":\"who\"}\n")["ok"], true);
    let long = format!("{{\"cmd\":\"kick\",\"name\":\"{}\"}}\n", "a".repeat(70_000));
    assert_eq!(ask(&long)["error"], "request line too long");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run chinwagctl as another user here");
        return;
    }
    // A copy every user may execute, whatever the checkout's permissions,
    // written by another process: a file this process held open for
    // writing would be inherited by any child another test forks meanwhile
    // (until that child's exec closes it), and executing it then fails
    // with ETXTBSY ("Text file busy": 4 runs in 80 of this binary beside
    // two busy loops, with std::fs::copy).
    let exe = dir.join("chinwagctl");
    let copied = Command::new("install")
        .args(["-m", "0755"])
        .arg(env!("CARGO_BIN_EXE_chinwagctl"))
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success(), "install: {copied}");
    let as_nobody = || {
        Command::new(&exe)
            .arg("--socket")
            .arg(&sock)
            .arg("who")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // Even with the file opened up, the server checks who is calling.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- metrics ----

#[test]
fn metrics_endpoint_counts_traffic_and_answers_health() {
    // Off unless asked for.
    let plain = Server::start(Config::ephemeral()).unwrap();
    assert_eq!(plain.metrics_addr(), None);
    drop(plain);

    let dir = temp_dir("metrics");
    let srv = server_in(&dir, |c| c.metrics_addr = "127.0.0.1:0".into());
    let m = srv.metrics_addr().expect("metrics on");
    assert!(m.ip().is_loopback());
    let (c_addr, a_addr) = (srv.chatos_addr(), srv.accounts_addr());

    let (mut alice, _) = chatos_login(c_addr, "alice");
    let (mut bob, _) = chatos_login(c_addr, "bob");
    let (_taken, refused) = chatos_login(c_addr, "bob");
    assert_eq!(refused, Some(chatos::op::LOGIN_REFUSED));
    alice
        .write_all(
            &chatos::Command::Message {
                from: "alice".into(),
                text: "hi".into(),
            }
            .to_bytes(),
        )
        .unwrap();
    // Both hear it: two deliveries.
    for s in [&mut alice, &mut bob] {
        let mut d = chatos::Decoder::new();
        let mut buf = [0u8; 256];
        while d.next_command().unwrap().is_none() {
            let n = loop {
                match s.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    r => break r.unwrap(),
                }
            };
            d.push(&buf[..n]);
        }
    }
    let mut bad = TcpStream::connect(c_addr).unwrap();
    bad.write_all(&[0xee, 0, 0, 0]).unwrap(); // unknown opcode: protocol drop
    let (_b, ok) = babel_login(srv.babel_addr(), "carol");
    assert_eq!(ok, Babel::LoginSuccess);
    assert_eq!(
        register(a_addr, "d@example.org", "dan", "correct horse"),
        Acc::Registered
    );
    let (_w, r) = accounts_login(a_addr, "d@example.org", "wrong password");
    assert_eq!(r, Acc::LoginFailed);
    let (_dan, r) = accounts_login(a_addr, "d@example.org", "correct horse");
    assert!(matches!(r, Acc::LoginOk { .. }));
    let (_r, ok) = rooms_register(srv.rooms_addr(), "erin");
    assert!(ok.is_some());

    let mut last = HashMap::new();
    eventually("the counters to reflect the traffic", || {
        let (code, body) = http_get(m, "/metrics");
        assert_eq!(code, 200);
        assert!(body.ends_with("# EOF\n"));
        last = samples(&body);
        let v = |k: &str| last.get(k).copied().unwrap_or(-1.0);
        // Queue depths are read at scrape time: wait for a quiet moment.
        v(r#"chinwag_drops_total{reason="protocol"}"#) == 1.0
            && v(r#"chinwag_connections{dialect="chatos"}"#) == 3.0
            && v("chinwag_store_queue_depth") == 0.0
            && v("chinwag_hash_queue_depth") == 0.0
    });
    let v = |k: &str| *last.get(k).unwrap_or_else(|| panic!("no {k} in {last:?}"));
    let expected = [
        (r#"chinwag_logins_total{dialect="chatos",result="ok"}"#, 2.0),
        (
            r#"chinwag_logins_total{dialect="chatos",result="taken"}"#,
            1.0,
        ),
        (r#"chinwag_logins_total{dialect="babel",result="ok"}"#, 1.0),
        (
            r#"chinwag_logins_total{dialect="accounts",result="ok"}"#,
            1.0,
        ),
        (
            r#"chinwag_logins_total{dialect="accounts",result="bad_password"}"#,
            1.0,
        ),
        (r#"chinwag_logins_total{dialect="rooms",result="ok"}"#, 1.0),
        (r#"chinwag_messages_total{dialect="chatos"}"#, 1.0),
        ("chinwag_deliveries_total", 2.0),
        (r#"chinwag_online_users{dialect="chatos"}"#, 2.0),
        (r#"chinwag_online_users{dialect="rooms"}"#, 1.0),
        (r#"chinwag_connections{dialect="rooms"}"#, 1.0),
        (
            r#"chinwag_connections_accepted_total{dialect="chatos"}"#,
            4.0,
        ),
        ("chinwag_relays_active", 0.0),
        (r#"chinwag_calls_total{dialect="babel"}"#, 0.0),
        (r#"chinwag_drops_total{reason="slow_reader"}"#, 0.0),
    ];
    for (key, want) in expected {
        assert_eq!(v(key), want, "{key}");
    }
    assert!(
        v("chinwag_store_commit_seconds_count") >= 1.0,
        "registration committed"
    );

    assert_eq!(http_get(m, "/health"), (200, "ok\n".into()));
    assert_eq!(http_get(m, "/nothing").0, 404);
    // Garbage is answered 400 and changes nothing.
    let mut junk = TcpStream::connect(m).unwrap();
    junk.write_all(b"\x00\x01 nonsense\r\n\r\n").unwrap();
    let mut text = String::new();
    junk.set_read_timeout(Some(WAIT)).unwrap();
    let _ = junk.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- the real binary ----

/// chinwagd with its stderr collected as it comes.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chinwagd"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (err, log2) = (child.stderr.take().unwrap(), log.clone());
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log }
    }

    fn wait_log(&self, what: &str) -> String {
        let mut found = String::new();
        eventually(&format!("chinwagd to log {what:?}"), || {
            let l = self.log.lock().unwrap();
            match l.lines().find(|x| x.contains(what)) {
                Some(x) => {
                    found = x.to_owned();
                    true
                }
                None => false,
            }
        });
        found
    }

    /// The port chinwagd logged for `dialect` ("chatos 127.0.0.1:PORT").
    fn port(&self, dialect: &str) -> u16 {
        let line = self.wait_log("listening: chatos");
        let at = line.split(&format!("{dialect} 127.0.0.1:")).nth(1).unwrap();
        at.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                panic!("chinwagd did not exit; log:\n{}", self.log.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run chinwagd expecting it to refuse to start: (exit code, stderr).
fn refused_start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chinwagd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_up_errors_name_the_port_the_dialect_and_the_limit() {
    let dir = temp_dir("startup");
    let db = dir.join("c.db");
    let db = db.to_str().unwrap();
    // Every port 0 and the database in `dir`, with `extra` flags replacing
    // or adding to those.
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = common::ALL_PORTS_FREE
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(["--db".into(), db.into()]);
        for pair in extra.chunks(2) {
            match v.iter().position(|a| a == pair[0]) {
                Some(i) => v[i + 1] = pair[1].to_string(),
                None => v.extend(pair.iter().map(|s| s.to_string())),
            }
        }
        v
    };
    // A TCP port in use (held by this test while chinwagd tries it).
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let args = base(&["--babel-port", &port]);
    let (code, err) = refused_start(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("babel: cannot listen on 127.0.0.1:{port}/tcp"))
            && err.contains("babel_port")
            && err.contains("in use"),
        "{err}"
    );
    // The UDP port of the rooms dialect.
    let held_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = held_udp.local_addr().unwrap().port().to_string();
    let args = base(&["--rooms-port", &uport]);
    let (code, err) = refused_start(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("rooms: cannot listen on 127.0.0.1:{uport}/udp")),
        "{err}"
    );
    // The metrics port.
    let args = base(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let (code, err) = refused_start(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("metrics: cannot listen") && err.contains("metrics_addr"),
        "{err}"
    );
    drop((held, held_udp));
    // An address no interface of this machine has (TEST-NET-1): the
    // culprit is `bind`, not the port of the first listener tried.
    let (code, err) = refused_start(&base(&["--bind", "192.0.2.1"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("chatos: cannot listen on 192.0.2.1:")
            && err.contains("(set by bind)")
            && !err.contains("chatos_port"),
        "{err}"
    );

    // Zero and absurd limits, from flags and from a file.
    for (flag, value, key) in [
        ("--max-connections", "0", "max_connections"),
        ("--flush-threads", "0", "flush_threads"),
        ("--outbound-limit", "10", "outbound_limit"),
        ("--login-timeout-ms", "999999999999", "login_timeout_ms"),
        ("--metrics-addr", "localhost", "metrics_addr"),
    ] {
        let args = base(&[flag, value]);
        let (code, err) = refused_start(&args);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(err.contains(key), "{flag} {value}: {err}");
    }
    let file = dir.join("zero.toml");
    std::fs::write(&file, "max_relays = 0\n").unwrap();
    let (code, err) = refused_start(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max_relays = 0 is out of range"), "{err}");
    // A misspelt key and a value of the wrong type: one line each, naming
    // the file, the line and the key (not toml's drawing of the place
    // with the list of all the keys).
    for (text, want) in [
        (
            "chatos_port = 0\nmax_conections = 5\n",
            "line 2: unknown key max_conections",
        ),
        (
            "max_connections = \"many\"\n",
            "line 1: max_connections: invalid type",
        ),
    ] {
        let file = dir.join("typo.toml");
        std::fs::write(&file, text).unwrap();
        let (code, err) = refused_start(&["--config", file.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{}: {want}", file.display())),
            "{err}"
        );
    }

    // An admin socket in a directory that does not exist: the line names
    // the socket and the key, not a bare "No such file or directory".
    let nowhere = dir.join("no-such-dir").join("admin.sock");
    let (code, err) = refused_start(&base(&["--admin-socket", nowhere.to_str().unwrap()]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("admin socket {}", nowhere.display()))
            && err.contains("admin_socket"),
        "{err}"
    );

    // A second chinwagd on the same database finds the admin socket in use.
    let first = Daemon::spawn(&base(&[]));
    first.wait_log("admin socket at");
    let (code, err) = refused_start(&base(&[]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("admin socket") && err.contains("in use"),
        "{err}"
    );
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(), Some(0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sighup_rereads_the_file_and_keeps_serving() {
    let dir = temp_dir("sighup");
    let config = dir.join("chinwagd.toml");
    let sock = dir.join("admin.sock");
    let write_config = |max: u32| {
        std::fs::write(
            &config,
            format!(
                "bind = \"127.0.0.1\"\nchatos_port = 0\nbabel_port = 0\naccounts_port = 0\nrooms_port = 0\n\
                 db_path = \"{}\"\nadmin_socket = \"{}\"\nmax_connections = {max}\n",
                dir.join("c.db").display(),
                sock.display()
            ),
        )
        .unwrap()
    };
    write_config(100);
    let d = Daemon::spawn(&["--config", config.to_str().unwrap()]);
    let port = d.port("chatos");
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: configuration unchanged");
    write_config(200);
    d.signal(libc::SIGHUP);
    let line = d.wait_log("SIGHUP: max_connections changed");
    assert!(line.contains("restart"), "{line}");
    std::fs::write(&config, "max_connections = 0\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: the configuration would not start");
    // Still alive and serving after three SIGHUPs.
    let (_s, ok) = chatos_login(([127, 0, 0, 1], port).into(), "alice");
    assert_eq!(ok, Some(chatos::op::LOGIN_ACCEPTED));
    assert!(ctl_ok(&sock, &["who"]).contains("alice"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit_code(), Some(0));
    std::fs::remove_dir_all(&dir).ok();
}

// ---- the test kit ----

/// A signal that interrupts a test's wait for a message is not the end of
/// the wait. A socket read with a read timeout is never restarted after a
/// signal (signal(7)), whatever SA_RESTART says, and is woken even by a
/// SIGCHLD nobody handles when the thread that started the child had it
/// blocked at the time (glibc blocks every signal in a thread while it
/// creates a thread or spawns a process): then the read fails with EINTR.
/// The tests of this binary start chinwagctl, chinwagd and systemd-analyze
/// all the time, and `Wire::recv` took that EINTR for the end of the
/// connection ("a message within the wait" after 1.74 s in a CI run; "the
/// read failed (Interrupted)" here, 1 run in 15 beside two busy loops).
#[test]
fn a_signal_does_not_end_a_wait_for_a_message() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: a handler that does nothing, for a signal nothing else in
    // this process uses; the struct is zeroed, then filled.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        // SAFETY: both only name the calling thread.
        let ids = unsafe { (libc::pthread_self(), libc::gettid()) };
        tx.send(ids).unwrap();
        Wire::<Acc>::new(client).recv()
    });
    let (thread, tid) = rx.recv().unwrap();
    // Once it sleeps in its read (the only place it can sleep), interrupt it.
    let stat = format!("/proc/self/task/{tid}/stat");
    eventually("the reader to wait in its read", || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('S'))
        })
    });
    // SAFETY: the thread is alive until it has its message, sent below.
    assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
    // Give an EINTR the time to end the wait, if it does, before the answer.
    thread::sleep(Duration::from_millis(100));
    server.write_all(&Acc::HelloAck.to_bytes()).unwrap();
    assert_eq!(reader.join().expect("the reader waited on"), Acc::HelloAck);
}
