//! The `chinwag` terminal client end to end, each in a pseudo-terminal
//! (rexpect) as a person would use it, against an in-process chinwagd on
//! 127.0.0.1: chat between two clients (with a line half typed while a
//! message arrives, and name completion), a file over a chatos private
//! connection, and the login and main commands of every dialect. Every
//! wait is bounded by rexpect's timeout.

use std::process::Command;

use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};

/// How long any one expected output may take.
const TIMEOUT_MS: u64 = 15_000;

fn server() -> chinwagd::Server {
    chinwagd::Server::start(chinwagd::Config::ephemeral()).expect("chinwagd starts")
}

fn cli(dialect: &str, port: u16, downloads: Option<&std::path::Path>) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chinwag"));
    cmd.args(["--port", &port.to_string(), dialect]);
    if let Some(d) = downloads {
        cmd.arg("--downloads").arg(d);
    }
    let mut p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(true),
    )
    .expect("the client starts in a pty");
    p.exp_string("/help lists the commands").unwrap();
    p
}

/// Type a line and wait for `reply` in what follows.
fn says(p: &mut PtySession, line: &str, reply: &str) {
    p.send_line(line).unwrap();
    p.exp_string(reply)
        .unwrap_or_else(|e| panic!("after {line:?}, no {reply:?}: {e}"));
}

fn quit(mut p: PtySession) {
    p.send_line("/quit").unwrap();
    p.exp_string("bye").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn two_chatos_clients_chat_and_a_half_typed_line_survives() {
    let srv = server();
    let port = srv.chatos_addr().port();
    let mut ann = cli("chatos", port, None);
    let mut bob = cli("chatos", port, None);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    says(&mut ann, "/help", "/sendfile NAME PATH");

    says(&mut ann, "hello bob", "<ann> hello bob"); // chatos echoes to the sender
    bob.exp_string("<ann> hello bob").unwrap();

    // bob is typing when ann's message arrives: it shows above the line,
    // and bob's line goes out whole.
    bob.send("half a ").unwrap();
    bob.flush().unwrap();
    bob.exp_string("half a ").unwrap();
    ann.send_line("interrupting").unwrap();
    bob.exp_string("<ann> interrupting").unwrap();
    // ... and the half-typed line is drawn again under it, intact.
    bob.exp_string("> half a ").unwrap();
    says(&mut bob, "line", "<bob> half a line");
    ann.exp_string("<bob> half a line").unwrap();

    // Private messages; ann completes bob's name with Tab.
    says(&mut bob, "/msg ann psst", "-> ann: psst");
    ann.exp_string("*bob* psst").unwrap();
    ann.send("/msg bo").unwrap();
    ann.send("\t").unwrap();
    ann.send_line("back").unwrap();
    ann.exp_string("-> bob: back").unwrap();
    bob.exp_string("*ann* back").unwrap();
    says(&mut ann, "/nonsense", "unknown command");
    quit(ann);
    quit(bob);
}

#[test]
fn a_file_goes_over_a_chatos_private_connection() {
    let srv = server();
    let port = srv.chatos_addr().port();
    let dir = std::env::temp_dir().join(format!("cw-cli-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("payload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();

    let mut ann = cli("chatos", port, None);
    let mut bob = cli("chatos", port, Some(&inbox));
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    says(
        &mut ann,
        &format!("/sendfile bob {}", src.display()),
        "asked bob for a private connection",
    );
    bob.exp_string("ann asks for a private connection").unwrap();
    says(&mut bob, "/accept ann", "accepted ann");
    bob.exp_string("received 300000 bytes from ann into")
        .unwrap();
    ann.exp_string("sent 300000 bytes").unwrap();
    let got: Vec<_> = std::fs::read_dir(&inbox).unwrap().collect();
    assert_eq!(got.len(), 1);
    let path = got[0].as_ref().unwrap().path();
    assert_eq!(std::fs::read(&path).unwrap(), data, "{}", path.display());
    quit(ann);
    quit(bob);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn accounts_register_login_friends_messages_and_history_with_times() {
    let srv = server();
    let port = srv.accounts_addr().port();
    let mut ann = cli("accounts", port, None);
    let mut bob = cli("accounts", port, None);
    says(
        &mut ann,
        "/register ann@example.org ann password1",
        "registered ann",
    );
    says(
        &mut ann,
        "/login ann@example.org password1",
        "logged in as ann",
    );
    says(
        &mut bob,
        "/register bob@example.org bob password2",
        "registered bob",
    );
    says(
        &mut bob,
        "/login bob@example.org password2",
        "logged in as bob",
    );
    says(&mut ann, "/friend bob", "asked bob to be your friend");
    bob.exp_string("ann asks to be your friend").unwrap();
    says(&mut bob, "/accept ann", "accepted ann");
    ann.exp_string("bob is now your friend").unwrap();
    says(&mut ann, "/who", "friends: bob");
    // A plain line goes to the conversation chosen with /to.
    says(&mut bob, "/to ann", "plain lines now go to ann");
    says(&mut bob, "hi ann", "-> ann: hi ann");
    // Shown with the time the server stored it.
    ann.exp_string("] *bob* hi ann").unwrap();
    says(&mut ann, "/history bob", "history with bob");
    ann.exp_string("] bob: hi ann").unwrap();
    says(&mut ann, "/login ann@example.org wrong", "!");
    quit(ann);
    quit(bob);
}

#[test]
fn babel_login_contacts_and_a_call_placed_answered_and_hung_up() {
    let srv = server();
    let port = srv.babel_addr().port();
    let mut ann = cli("babel", port, None);
    let mut bob = cli("babel", port, None);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    ann.exp_string("bob is online").unwrap();
    says(&mut ann, "/who", "online: bob");
    says(&mut ann, "a line", "babel carries calls, not text");
    says(&mut ann, "/call bob", "ringing bob");
    bob.exp_string("ann is calling").unwrap();
    says(&mut bob, "/answer ann", "answering ann");
    bob.exp_string("in a call with ann").unwrap();
    ann.exp_string("in a call with bob").unwrap();
    says(&mut ann, "/calls", "babel call with bob");
    says(&mut ann, "/hangup bob", "hung up on bob");
    bob.exp_string("call with ann ended").unwrap();
    quit(ann);
    quit(bob);
}

#[test]
fn rooms_login_create_list_join_talk_invite_and_leave() {
    let srv = server();
    let port = srv.rooms_addr().port();
    let mut ann = cli("rooms", port, None);
    let mut bob = cli("rooms", port, None);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    says(&mut ann, "/create den", "created den");
    says(&mut bob, "/rooms", "den (central, 1 in it)");
    says(&mut bob, "/join den", "you are in den");
    says(&mut bob, "/members den", "in den:");
    ann.send_line("in the den").unwrap();
    bob.exp_string("in the den").unwrap();
    says(&mut bob, "/leave", "back in the public room");
    // Seed 003 §2.2: a private room down to one member closes, and that
    // member is told and moved back to the public room.
    ann.exp_string("den closed with you its last member")
        .unwrap();
    says(&mut ann, "/create den", "created den");
    says(&mut ann, "/invite bob", "invited bob");
    bob.exp_string("ann invites you into den").unwrap();
    says(&mut bob, "/accept den", "accepted den");
    quit(ann);
    quit(bob);
}
