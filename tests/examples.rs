//! The examples are tests: each C example is compiled against include/ and
//! the built library and run against an in-process chinwagd on 127.0.0.1,
//! and so are the Python examples through examples/python/chinwag.py. Every
//! process runs under a time limit.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chinwag::{Client, Dialect, Event};
use common::{
    build_c_example, expect_line, fnv1a, lines_of, output_within, require, start, wait_within, ROOT,
};

const LIMIT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(10);

fn server() -> (chinwagd::Server, u16) {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.chatos_addr().port();
    (srv, port)
}

fn rust_client(port: u16, name: &str) -> Client {
    let c = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_CHATOS).unwrap();
    c.login(name, Some(STEP)).unwrap();
    c
}

/// The next event matching `pick`, skipping others.
fn wait_event<T>(c: &Client, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = c
            .next_event(Some(left))
            .expect("event before the time limit");
        if let Some(v) = pick(ev) {
            return v;
        }
    }
}

#[test]
fn c_chat_example() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("chat");
    let (_srv, port) = server();
    let mut carol = start(Command::new(&exe).args(["127.0.0.1", &port.to_string(), "carol"]));
    let (lines, stdin) = (&carol.lines, &mut carol.stdin);
    expect_line(lines, "logged in as carol", STEP);

    let dave = rust_client(port, "dave");
    dave.send_message("hello carol").unwrap();
    expect_line(lines, "<dave> hello carol", STEP);
    dave.send_private("carol", "just you").unwrap();
    expect_line(lines, "*dave* just you", STEP);

    writeln!(stdin, "/msg dave hi dave").unwrap();
    let got = wait_event(&dave, |ev| match ev {
        Event::PrivateMessage { from, text, .. } => Some((from, text)),
        _ => None,
    });
    assert_eq!(got, ("carol".to_string(), "hi dave".to_string()));

    writeln!(stdin, "hello everyone").unwrap();
    let got = wait_event(&dave, |ev| match ev {
        Event::Message { from, text } if from == "carol" => Some(text),
        _ => None,
    });
    assert_eq!(got, "hello everyone");

    // chat.c refuses private connections.
    dave.request_private("carol").unwrap();
    let refused = wait_event(&dave, |ev| match ev {
        Event::PrivateRefused { peer } => Some(peer),
        _ => None,
    });
    assert_eq!(refused, "carol");

    writeln!(stdin, "/quit").unwrap();
    expect_line(lines, "-- bye", STEP);
    carol.succeeds("chat", STEP);
}

#[test]
fn c_sendfile_example_moves_one_mebibyte() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("sendfile");
    let (_srv, port) = server();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let input = dir.join("sendfile-in.bin");
    let output = dir.join("sendfile-out.bin");
    let _ = std::fs::remove_file(&output);
    let data: Vec<u8> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        (0..1 << 20).map(|_| rng.gen()).collect()
    };
    std::fs::write(&input, &data).unwrap();
    let digest = format!("{:016x}", fnv1a(&data));

    let port_s = port.to_string();
    let mut recv = Command::new(&exe)
        .args(["recv", "127.0.0.1", &port_s, "rita", "sam"])
        .arg(&output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let recv_lines = lines_of(&mut recv);
    expect_line(&recv_lines, "ready", STEP);
    let send = output_within(
        Command::new(&exe)
            .args(["send", "127.0.0.1", &port_s, "sam", "rita"])
            .arg(&input),
        LIMIT,
    );
    assert!(
        send.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&send.stderr)
    );
    let said = String::from_utf8_lossy(&send.stdout);
    assert!(
        said.contains(&format!(
            "sent 1048576 bytes fnv1a64 {digest}, receiver agrees"
        )),
        "{said}"
    );
    let line = expect_line(&recv_lines, "received", STEP);
    assert_eq!(line, format!("received 1048576 bytes fnv1a64 {digest} OK"));
    let r = wait_within(recv, STEP);
    assert!(
        r.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        std::fs::read(&output).unwrap() == data,
        "the saved file differs"
    );
}

#[test]
fn python_echo_bot_example() {
    if !require("python3") {
        return;
    }
    let (_srv, port) = server();
    let lib = common::lib_dir().join(common::shared_lib_name());
    let mut bot = Command::new("python3")
        .arg(Path::new(ROOT).join("examples/python/echo_bot.py"))
        .args(["127.0.0.1", &port.to_string(), "pybot"])
        .env("CHINWAG_LIB", &lib)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut bot);
    let ready = expect_line(&lines, "ready as pybot", STEP);
    assert!(ready.contains(env!("CARGO_PKG_VERSION")), "{ready}");

    let me = rust_client(port, "tester");
    me.send_private("pybot", "ping").unwrap();
    let echo = wait_event(&me, |ev| match ev {
        Event::PrivateMessage { from, text, .. } if from == "pybot" => Some(text),
        _ => None,
    });
    assert_eq!(echo, "echo: ping");

    // A private connection: the bot digests what it receives.
    me.request_private("pybot").unwrap();
    let stream = wait_event(&me, |ev| match ev {
        Event::PrivateEstablished { stream, .. } => stream,
        _ => None,
    });
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    stream.write(&data).unwrap();
    stream.shutdown_write().unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf, Some(STEP)) {
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.code == chinwag::Code::CW_CLOSED => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(answer, fnv1a(&data).to_be_bytes());
    stream.close();
    expect_line(
        &lines,
        &format!("262144 bytes fnv1a64 {:016x}", fnv1a(&data)),
        STEP,
    );

    me.send_private("pybot", "quit").unwrap();
    expect_line(&lines, "bye", STEP);
    let out = wait_within(bot, STEP);
    assert!(
        out.status.success(),
        "bot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_babel_call_example() {
    if !require("python3") {
        return;
    }
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port();
    let lib = common::lib_dir().join(common::shared_lib_name());
    let out = output_within(
        Command::new("python3")
            .arg(Path::new(ROOT).join("examples/python/babel_call.py"))
            .args(["127.0.0.1", &port.to_string(), "pyann", "pybo"])
            .env("CHINWAG_LIB", &lib)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        LIMIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "babel_call.py: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "duplicate refused: ",
        "username already used",
        "contacts: pyann sees pybo",
        "call: pyann rings from 127.0.0.1:",
        "voice: 10 payloads one way, 1 the other",
        "hung up: pybo saw the call end",
        "refused: pybo refused the call",
        "offline: nobody-here is not connected",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }
    assert_eq!(said.lines().last(), Some("ok"), "{said}");
}

#[test]
fn python_rooms_chat_example() {
    if !require("python3") {
        return;
    }
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.rooms_addr().port();
    let lib = common::lib_dir().join(common::shared_lib_name());
    let out = output_within(
        Command::new("python3")
            .arg(Path::new(ROOT).join("examples/python/rooms_chat.py"))
            .args(["127.0.0.1", &port.to_string(), "pyal", "pybo", "pycy"])
            .env("CHINWAG_LIB", &lib)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        LIMIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rooms_chat.py: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "duplicate refused: ",
        "name taken",
        "public: pybo got 'hello, public room' from #",
        "invitations: pybo accepted, pycy refused",
        "rooms: [Room('club', CENTRALISED, 2)]",
        "closed: pybo is back in the public room",
        "peer to peer: pycy got 'and back' from pyal",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }
    assert_eq!(said.lines().last(), Some("ok"), "{said}");
}

#[test]
fn python_friends_example() {
    if !require("python3") {
        return;
    }
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.accounts_addr().port();
    let lib = common::lib_dir().join(common::shared_lib_name());
    let out = output_within(
        Command::new("python3")
            .arg(Path::new(ROOT).join("examples/python/friends.py"))
            .args(["127.0.0.1", &port.to_string(), "pyalice", "pybob"])
            .env("CHINWAG_LIB", &lib)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        LIMIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "friends.py: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "registered pyalice",
        "pyalice and pybob are friends",
        "pybob got 'hello from python' from pyalice",
        "call: pyalice rings from 127.0.0.1:",
        "voice packet delivered, call ended",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }
    assert_eq!(said.lines().last(), Some("ok"), "{said}");

    // The server kept what the script did: check from a Rust client.
    let c = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_ACCOUNTS).unwrap();
    let (pseudo, _) = c
        .login_password("pybob@example.org", "pybob example password", Some(STEP))
        .unwrap();
    assert_eq!(pseudo, "pybob");
    assert_eq!(c.list_friends(Some(STEP)).unwrap(), vec!["pyalice"]);
    let texts: Vec<String> = c
        .history("pyalice", 0, Some(STEP))
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, vec!["hello from python", "hello back"]);
}

#[test]
fn c_friend_bot_example() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("friend_bot");
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.accounts_addr().port();
    let me = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_ACCOUNTS).unwrap();
    me.register("rusty@example.org", "rusty", "rusty password", Some(STEP))
        .unwrap();
    me.login_password("rusty@example.org", "rusty password", Some(STEP))
        .unwrap();

    let mut child = Command::new(&exe)
        .args([
            "127.0.0.1",
            &port.to_string(),
            "cbot",
            "cbot password",
            "rusty",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    expect_line(&lines, "logged in as cbot (account ", STEP);
    expect_line(&lines, "friend request to rusty: ok", STEP);
    let from = wait_event(&me, |ev| match ev {
        Event::FriendRequest { from } => Some(from),
        _ => None,
    });
    assert_eq!(from, "cbot");
    me.accept_friend("cbot", Some(STEP)).unwrap();
    expect_line(&lines, "rusty is now a friend", STEP);

    me.send_to_friend("cbot", "hello bot", Some(STEP)).unwrap();
    expect_line(&lines, "<rusty> hello bot", STEP);
    let reply = wait_event(&me, |ev| match ev {
        Event::PrivateMessage { from, text, .. } if from == "cbot" => Some(text),
        _ => None,
    });
    assert_eq!(reply, "got: hello bot");

    // The bot answers calls with its voice end point.
    me.place_call("cbot", "", 5555).unwrap();
    expect_line(&lines, "call from rusty at 127.0.0.1:5555", STEP);
    let (addr, voice_port) = wait_event(&me, |ev| match ev {
        Event::CallAccepted { addr, port, .. } => Some((addr, port)),
        _ => None,
    });
    assert_eq!((addr.as_str(), voice_port), ("127.0.0.1", 40404));
    me.hangup_call("cbot").unwrap();
    expect_line(&lines, "rusty hung up", STEP);

    me.send_to_friend("cbot", "quit", Some(STEP)).unwrap();
    expect_line(&lines, "history with rusty: 3 messages", STEP);
    expect_line(&lines, "[rusty] hello bot", STEP);
    expect_line(&lines, "[me] got: hello bot", STEP);
    expect_line(&lines, "[rusty] quit", STEP);
    let out = wait_within(child, STEP);
    assert!(
        out.status.success(),
        "friend_bot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The payload pattern of babel_call.c: byte `j` of payload `i`.
fn babel_pattern(i: u64, j: u64) -> u8 {
    (i.wrapping_mul(131).wrapping_add(j * 7).wrapping_add(1) & 0xff) as u8
}

#[test]
fn c_babel_call_example() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("babel_call");
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port().to_string();
    let (frames, size) = (50u64, 160u64);
    let sent: Vec<u8> = (0..frames)
        .flat_map(|i| (0..size).map(move |j| babel_pattern(i, j)))
        .collect();
    let digest = format!("{:016x}", fnv1a(&sent));

    let mut answer = Command::new(&exe)
        .args(["127.0.0.1", &port, "cann", "answer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut answer);
    expect_line(&lines, "logged in as cann", STEP);
    expect_line(&lines, "waiting for a call", STEP);

    let call = output_within(
        Command::new(&exe).args([
            "127.0.0.1",
            &port,
            "cbob",
            "call",
            "cann",
            &frames.to_string(),
            &size.to_string(),
        ]),
        LIMIT,
    );
    let said = String::from_utf8_lossy(&call.stdout);
    assert!(
        call.status.success(),
        "caller: {said}\n{}",
        String::from_utf8_lossy(&call.stderr)
    );
    for line in [
        "logged in as cbob",
        "contact added: cann",
        "ringing cann",
        "call established with cann",
        &format!("sent 50 payloads, 8000 bytes, fnv1a64 {digest}"),
        "hung up",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }

    expect_line(&lines, "contact added: cbob", STEP);
    expect_line(&lines, "incoming call from cbob at 127.0.0.1:", STEP);
    expect_line(&lines, "call established with cbob", STEP);
    let got = expect_line(&lines, "received ", STEP);
    assert_eq!(
        got,
        format!("received 50 payloads, 8000 bytes, fnv1a64 {digest}, pattern OK")
    );
    expect_line(&lines, "call ended by cbob: ", STEP);
    let out = wait_within(answer, STEP);
    assert!(
        out.status.success(),
        "answerer: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nobody called "ghost" is online: the caller gives up after its
    // bounded wait and says so. (Same test: the tests run in parallel and
    // build_c_example writes one file per example.)
    let out = output_within(
        Command::new(&exe).args(["127.0.0.1", &port, "lonely", "call", "ghost"]),
        LIMIT,
    );
    assert!(!out.status.success(), "the call to nobody succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("waiting for the peer to be online"), "{err}");
}

/// The next text of a rooms client, skipping other events.
fn next_text(c: &Client) -> (String, String) {
    wait_event(c, |ev| match ev {
        Event::Message { from, text } => Some((from, text)),
        _ => None,
    })
}

/// The id a rooms_chat.c process printed at login ("-- logged in as NAME (#ID)").
fn printed_id(line: &str) -> u8 {
    let start = line.rfind("(#").expect("(#id)") + 2;
    line[start..line.len() - 1].parse().expect("a user id")
}

#[test]
fn c_rooms_chat_example() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("rooms_chat");
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.rooms_addr().port().to_string();
    let rob = Client::connect(
        "127.0.0.1",
        srv.rooms_addr().port(),
        Dialect::CW_DIALECT_ROOMS,
    )
    .unwrap();
    rob.login("rob", Some(STEP)).unwrap();
    let rob_id = rob.room_user_id().unwrap();

    // cara creates a room, rob joins it, and they exchange texts.
    let mut cara = start(Command::new(&exe).args(["127.0.0.1", &port, "cara", "create", "club"]));
    let cara_lines = &cara.lines;
    let cara_id = printed_id(&expect_line(cara_lines, "-- logged in as cara (#", STEP));
    expect_line(cara_lines, "-- created club (room ", STEP);
    rob.room_join("club").unwrap();
    rob.send_message("hello cara").unwrap();
    expect_line(cara_lines, &format!("<#{rob_id}> hello cara"), STEP);
    writeln!(cara.stdin, "hi rob").unwrap();
    assert_eq!(
        next_text(&rob),
        (format!("#{cara_id}"), "hi rob".to_string())
    );

    // rob moves to a room of its own and invites cara, who accepts.
    rob.room_create("den", chinwag::client::RoomMode::Centralised, 8)
        .unwrap();
    rob.room_invite("cara").unwrap();
    expect_line(
        cara_lines,
        "-- rob invites you into den (centralised)",
        STEP,
    );
    expect_line(cara_lines, "-- accepted: now in den", STEP);
    rob.send_message("welcome to den").unwrap();
    expect_line(cara_lines, &format!("<#{rob_id}> welcome to den"), STEP);

    // dora joins from the command line; texts reach both other members.
    let mut dora = start(Command::new(&exe).args(["127.0.0.1", &port, "dora", "join", "den"]));
    let dora_lines = &dora.lines;
    let dora_id = printed_id(&expect_line(dora_lines, "-- logged in as dora (#", STEP));
    expect_line(dora_lines, "-- joined den", STEP);
    writeln!(dora.stdin, "dora here").unwrap();
    expect_line(cara_lines, &format!("<#{dora_id}> dora here"), STEP);
    assert_eq!(
        next_text(&rob),
        (format!("#{dora_id}"), "dora here".to_string())
    );
    writeln!(cara.stdin, "thanks").unwrap();
    expect_line(dora_lines, &format!("<#{cara_id}> thanks"), STEP);
    assert_eq!(
        next_text(&rob),
        (format!("#{cara_id}"), "thanks".to_string())
    );

    // "/quit" and end of input both leave, with status 0.
    writeln!(cara.stdin, "/quit").unwrap();
    expect_line(&cara.lines, "-- bye", STEP);
    cara.succeeds("cara", STEP);
    let rest = dora.succeeds("dora", STEP);
    assert!(rest.iter().any(|l| l.contains("-- bye")), "dora: {rest:?}");
    // Both names are free again: close sent DECONNEXION.
    let again = Client::connect(
        "127.0.0.1",
        srv.rooms_addr().port(),
        Dialect::CW_DIALECT_ROOMS,
    )
    .unwrap();
    again.login("cara", Some(STEP)).unwrap();
}

/// How to run one side of `voice_call` (C or Python).
fn voice_call_cmd(c_exe: Option<&Path>) -> Command {
    match c_exe {
        Some(exe) => Command::new(exe),
        None => {
            let mut cmd = Command::new("python3");
            cmd.arg(Path::new(ROOT).join("examples/python/voice_call.py"))
                .env(
                    "CHINWAG_LIB",
                    common::lib_dir().join(common::shared_lib_name()),
                )
                .env("PYTHONDONTWRITEBYTECODE", "1");
            cmd
        }
    }
}

/// A call between two `voice_call` processes (the C example, or the
/// Python one when `c_exe` is None) in `dialect` ("babel" or "accounts"),
/// directly or through a seeded forwarder dropping `loss` of the UDP
/// datagrams: the caller says the rising tones, the callee the falling
/// ones, and each WAV file written must carry the other's track.
fn voice_call_example(c_exe: Option<&Path>, dialect: &str, tag: &str, loss: Option<f64>) {
    use common::signal::{assert_carries, first_channel, read_wav, stepped_tones, write_wav};
    use common::signal::{DOWN, STEP_MS, UP};
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("voice-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_wav(&dir.join("up.wav"), &stepped_tones(&UP, STEP_MS), 1);
    write_wav(&dir.join("down.wav"), &stepped_tones(&DOWN, STEP_MS), 1);
    let (caller, callee) = (format!("{tag}a"), format!("{tag}b"));
    let (port, who) = if dialect == "babel" {
        let p = srv.babel_addr().port();
        let who = |n: &str| vec![n.to_string()];
        (p, [who(&caller), who(&callee)])
    } else {
        common::befriend(&srv, &caller, &callee);
        let who = |n: &str| vec![common::account_email(n), common::account_password(n)];
        (srv.accounts_addr().port(), [who(&caller), who(&callee)])
    };
    let lossy = loss.map(|l| common::forwarder::Lossy::start(l, 11));
    let adv = |caller_side: bool| -> Vec<String> {
        lossy.as_ref().map_or(vec![], |f| {
            vec![if caller_side {
                f.caller_port
            } else {
                f.callee_port
            }
            .to_string()]
        })
    };
    let base = [
        "127.0.0.1".to_string(),
        port.to_string(),
        dialect.to_string(),
    ];
    let path = |n: &str| dir.join(n).to_str().unwrap().to_string();

    let mut answer = voice_call_cmd(c_exe)
        .args(&base)
        .args(&who[1])
        .arg("answer")
        .args([path("down.wav"), path("callee-heard.wav")])
        .args(adv(false))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answer_lines = lines_of(&mut answer);
    expect_line(&answer_lines, "ready", LIMIT);
    let call = output_within(
        voice_call_cmd(c_exe)
            .args(&base)
            .args(&who[0])
            .args(["call", &callee])
            .args([path("up.wav"), path("caller-heard.wav")])
            .args(adv(true)),
        LIMIT,
    );
    let said = String::from_utf8_lossy(&call.stdout);
    assert!(
        call.status.success(),
        "caller: {said}\n{}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(said.contains("hung up"), "{said}");
    let answered = wait_within(answer, LIMIT);
    assert!(
        answered.status.success(),
        "callee: {}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let channels = if dialect == "babel" { 2 } else { 1 };
    let min = if loss.is_some() { 0.8 } else { 0.9 };
    let (pcm, ch) = read_wav(&dir.join("callee-heard.wav"));
    assert_eq!(ch, channels);
    assert_carries(
        &first_channel(&pcm, ch),
        &UP,
        &DOWN,
        min,
        "the callee hears the caller",
    );
    let (pcm, ch) = read_wav(&dir.join("caller-heard.wav"));
    assert_carries(
        &first_channel(&pcm, ch),
        &DOWN,
        &UP,
        min,
        "the caller hears the callee",
    );
    if let Some(f) = &lossy {
        assert!(f.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
        let lost: u64 = said
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lost="))
            .and_then(|n| n.parse().ok())
            .expect("stats line");
        assert!(lost > 0, "the caller saw no loss: {said}");
    }
}

/// voice_call.c, compiled once for the tests that run it (in parallel).
fn voice_call_exe() -> &'static Path {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| build_c_example("voice_call"))
}

#[test]
fn c_voice_call_example_babel() {
    if require("cc") {
        voice_call_example(Some(voice_call_exe()), "babel", "cvb", None);
    }
}

#[test]
fn c_voice_call_example_accounts_through_loss() {
    if require("cc") {
        voice_call_example(Some(voice_call_exe()), "accounts", "cva", Some(0.1));
    }
}

#[test]
fn python_voice_call_example_babel() {
    if require("python3") {
        voice_call_example(None, "babel", "pvb", None);
    }
}

#[test]
fn python_voice_call_example_accounts() {
    if require("python3") {
        voice_call_example(None, "accounts", "pva", None);
    }
}

#[test]
fn python_voice_call_example_accounts_through_loss() {
    if require("python3") {
        voice_call_example(None, "accounts", "pvl", Some(0.1));
    }
}
