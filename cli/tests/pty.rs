//! The `chinwag` terminal client end to end, each in a pseudo-terminal
//! (rexpect) as a person would use it, against an in-process chinwagd on
//! 127.0.0.1: chat between two clients (with a line half typed while a
//! message arrives, and name completion), a file over a chatos private
//! connection, the login and main commands of every dialect, and calls
//! with sound on devices that ALSA makes of files (no sound card needed),
//! or with no device at all. Every wait is bounded by rexpect's timeout
//! or a deadline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chinwag::call::DEVICE_SUPPORT;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};

/// Devices made of files, and tones with their Goertzel power: shared
/// with the library's tests.
#[path = "../../tests/common/alsa.rs"]
mod alsa;
#[path = "../../tests/common/signal.rs"]
mod signal;

/// How long any one expected output may take: far longer than anything
/// takes on a loaded machine (15 s was not, once); only a failure waits it.
const TIMEOUT_MS: u64 = 60_000;

/// A server whose login deadline is a minute: a client connects when it
/// starts and must log in within it, and on a loaded machine the other
/// client's registration and login (an Argon2 hash each) took longer than
/// the product's 10 s. The deadline is not what these tests check.
fn server() -> chinwagd::Server {
    let mut cfg = chinwagd::Config::ephemeral();
    cfg.login_timeout_ms = 60_000;
    chinwagd::Server::start(cfg).expect("chinwagd starts")
}

fn command(dialect: &str, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chinwag"));
    cmd.args(["--port", &port.to_string(), dialect]);
    cmd
}

fn cli(dialect: &str, port: u16, downloads: Option<&Path>) -> PtySession {
    let mut cmd = command(dialect, port);
    if let Some(d) = downloads {
        cmd.arg("--downloads").arg(d);
    }
    start(cmd)
}

/// A client whose sound devices are `sound`'s.
fn cli_sound(dialect: &str, port: u16, sound: &Sound) -> PtySession {
    let mut cmd = command(dialect, port);
    cmd.env("ALSA_CONFIG_PATH", &sound.conf);
    start(cmd)
}

fn start(cmd: Command) -> PtySession {
    start_with(cmd, true)
}

/// `strip`: take the escape sequences out of what the test reads (false to
/// see every byte the client writes to its terminal).
fn start_with(cmd: Command, strip: bool) -> PtySession {
    let mut p = spawn_with_options(
        cmd,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(strip),
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

/// ann and bob, each in a client of `dialect` on `port`, logged in.
fn ann_and_bob(dialect: &str, port: u16) -> (PtySession, PtySession) {
    let mut ann = cli(dialect, port, None);
    let mut bob = cli(dialect, port, None);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    (ann, bob)
}

fn quit(mut p: PtySession) {
    p.send_line("/quit").unwrap();
    p.exp_string("bye").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn a_server_that_is_not_there_is_named_once_and_the_client_fails() {
    // Nothing listens on this freshly released port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = command("chatos", port).output().expect("the client runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(
        err.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "the address once: {err}"
    );
    assert!(err.starts_with("chinwag: cannot connect to"), "{err}");
}

#[test]
fn two_chatos_clients_chat_and_a_half_typed_line_survives() {
    let srv = server();
    let port = srv.chatos_addr().port();
    let (mut ann, mut bob) = ann_and_bob("chatos", port);
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

/// `name` (logged in on `port`) sends `data` as a file to bob, who accepts
/// it into `dir`/inbox (`dir` made afresh, the file sent from
/// `dir`/payload.bin); both clients quit. Returns the inbox.
fn file_to_bob(name: &str, port: u16, dir: &Path, data: &[u8]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let src = dir.join("payload.bin");
    std::fs::write(&src, data).unwrap();
    let mut sender = cli("chatos", port, None);
    let mut bob = cli("chatos", port, Some(&inbox));
    says(
        &mut sender,
        &format!("/login {name}"),
        &format!("logged in as {name}"),
    );
    says(&mut bob, "/login bob", "logged in as bob");
    says(
        &mut sender,
        &format!("/sendfile bob {}", src.display()),
        "asked bob for a private connection",
    );
    bob.exp_string(&format!("{name} asks for a private connection"))
        .unwrap();
    says(
        &mut bob,
        &format!("/accept {name}"),
        &format!("accepted {name}"),
    );
    let bytes = data.len();
    bob.exp_string(&format!("received {bytes} bytes from {name} into"))
        .unwrap();
    sender.exp_string(&format!("sent {bytes} bytes")).unwrap();
    quit(sender);
    quit(bob);
    inbox
}

#[test]
fn a_file_goes_over_a_chatos_private_connection() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("cw-cli-file-{}", std::process::id()));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let inbox = file_to_bob("ann", srv.chatos_addr().port(), &dir, &data);
    let got: Vec<_> = std::fs::read_dir(&inbox).unwrap().collect();
    assert_eq!(got.len(), 1);
    let path = got[0].as_ref().unwrap().path();
    assert_eq!(std::fs::read(&path).unwrap(), data, "{}", path.display());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_another_user_sends_is_shown_and_never_drives_the_terminal() {
    let srv = server();
    let port = srv.chatos_addr().port();
    // Every byte bob's terminal gets, escape sequences included.
    let mut bob = start_with(command("chatos", port), false);
    says(&mut bob, "/login bob", "logged in as bob");
    let eve =
        chinwag::Client::connect_with("127.0.0.1", port, chinwag::Dialect::CW_DIALECT_CHATOS, 0)
            .unwrap();
    eve.login("eve", Some(Duration::from_secs(10))).unwrap();
    // Retitle the window, clear the screen, and a line break posing as
    // a message from bob.
    eve.send_message("\x1b]0;owned\x07\x1b[2Jhi\n<bob> give eve your password\r")
        .unwrap();
    eve.send_private("bob", "\x1b[31mred\x1b[0m\x08").unwrap();
    let before = bob
        .exp_string("<eve> ^[]0;owned^G^[[2Jhi^J<bob> give eve your password^M")
        .unwrap();
    let private = bob.exp_string("*eve* ^[[31mred^[[0m^H").unwrap();
    for seen in [&before, &private] {
        assert!(!seen.contains("owned"), "{seen:?}");
        assert!(
            !seen.contains("\x1b[2J") && !seen.contains("\x1b[31m"),
            "{seen:?}"
        );
    }
    eve.close();
    quit(bob);
}

#[test]
fn a_command_of_another_dialect_is_named_in_the_terminal_s_words() {
    let srv = server();
    let mut rooms = cli("rooms", srv.rooms_addr().port(), None);
    says(&mut rooms, "/login ann", "logged in as ann");
    // Not the library's "(use send_to_friend)".
    says(
        &mut rooms,
        "/msg bob hi",
        "! /msg is not a command of the rooms dialect (/help lists them)",
    );
    says(
        &mut rooms,
        "/call bob",
        "! /call is not a command of the rooms dialect",
    );
    quit(rooms);
    let mut accounts = cli("accounts", srv.accounts_addr().port(), None);
    // Not the library's "(use login_password)"; `/login EMAIL` alone asks
    // for the password (below).
    says(
        &mut accounts,
        "/login",
        "! /login EMAIL [PASSWORD] (an account first: /register EMAIL PSEUDO [PASSWORD])",
    );
    quit(accounts);
}

#[test]
fn accounts_passwords_asked_for_show_as_stars_and_stay_out_of_the_history() {
    const PW: &str = "hunter2 secret";
    let srv = server();
    let port = srv.accounts_addr().port();
    let mut ann = cli("accounts", port, None);
    says(&mut ann, "/register ann@example.org ann", "password: ");
    ann.send_line(PW).unwrap();
    let shown = ann.exp_string("registered ann").unwrap();
    assert!(!shown.contains("hunter2"), "{shown:?}");
    assert!(shown.contains(&"*".repeat(PW.len())), "{shown:?}");
    says(&mut ann, "/login ann@example.org", "password: ");
    ann.send_line(PW).unwrap();
    let shown = ann.exp_string("logged in as ann").unwrap();
    assert!(!shown.contains("hunter2"), "{shown:?}");
    // Typed on the command line, a password is not kept either: the line
    // recalled with the up arrow is the one without it, so it asks again.
    says(&mut ann, "/login ann@example.org typed-pw", "!");
    ann.send("\x1b[A").unwrap();
    ann.send_line("").unwrap();
    let shown = ann.exp_string("password: ").unwrap();
    assert!(!shown.contains("typed-pw"), "{shown:?}");
    // Given up on (Ctrl-C): nothing is sent.
    ann.send_control('c').unwrap();
    ann.exp_string("! no password given: nothing sent").unwrap();
    quit(ann);

    // --login EMAIL at start asks for the password too.
    let mut cmd = command("accounts", port);
    cmd.args(["--login", "ann@example.org"]);
    let mut again = start(cmd);
    again.exp_string("password: ").unwrap();
    again.send_line(PW).unwrap();
    let shown = again.exp_string("logged in as ann").unwrap();
    assert!(!shown.contains("hunter2"), "{shown:?}");
    quit(again);
}

#[test]
fn a_line_that_is_not_utf8_is_dropped_and_the_client_carries_on() {
    let srv = server();
    let port = srv.chatos_addr().port();
    let (mut ann, mut bob) = ann_and_bob("chatos", port);
    // A Latin-1 'é' (0xe9) inside a line, as a terminal not set to UTF-8
    // sends it.
    let mut tty = bob.process().get_file_handle().unwrap();
    tty.write_all(b"caf\xe9 au lait\r").unwrap();
    tty.flush().unwrap();
    bob.exp_string("not UTF-8").unwrap();
    says(&mut bob, "still here", "<bob> still here");
    // Nothing of the bad line went out, not even the rest of it.
    let before = ann.exp_string("<bob> still here").unwrap();
    assert!(
        !before.contains("caf") && !before.contains("au lait"),
        "{before:?}"
    );
    quit(ann);
    quit(bob);
}

#[test]
fn a_file_from_a_peer_whose_name_has_slashes_lands_in_the_download_folder() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("cw-cli-slash-{}", std::process::id()));
    // "../eve" is a valid name (printable ASCII), and names a place
    // outside bob's download folder if taken as a path.
    let inbox = file_to_bob(
        "../eve",
        srv.chatos_addr().port(),
        &dir,
        b"not where you think",
    );
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&dir),
        ["inbox", "payload.bin"],
        "nothing beside the folder"
    );
    let got = names(&inbox);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with(".._eve-"), "{got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Accounts: ann and bob register, log in and become friends.
fn friends(ann: &mut PtySession, bob: &mut PtySession) {
    says(
        ann,
        "/register ann@example.org ann password1",
        "registered ann",
    );
    says(ann, "/login ann@example.org password1", "logged in as ann");
    says(
        bob,
        "/register bob@example.org bob password2",
        "registered bob",
    );
    says(bob, "/login bob@example.org password2", "logged in as bob");
    says(ann, "/friend bob", "asked bob to be your friend");
    bob.exp_string("ann asks to be your friend").unwrap();
    says(bob, "/accept ann", "accepted ann");
    ann.exp_string("bob is now your friend").unwrap();
}

#[test]
fn accounts_register_login_friends_messages_and_history_with_times() {
    let srv = server();
    let port = srv.accounts_addr().port();
    let mut ann = cli("accounts", port, None);
    let mut bob = cli("accounts", port, None);
    friends(&mut ann, &mut bob);
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

/// One client's sound devices, made by ALSA of files over its null
/// plugin: the default microphone (and `chinwag_mic`) captures
/// `capture.raw`, a tone; the default speaker (and `chinwag_play`) plays
/// into `played.raw`, 16-bit stereo at 48 kHz through a `plug`. Or, with
/// [`Sound::none`], no device at all. Removed when dropped.
struct Sound {
    dir: PathBuf,
    conf: PathBuf,
}

impl Sound {
    fn with(name: &str, config: &str) -> Sound {
        let dir = std::env::temp_dir().join(format!("cw-cli-sound-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = alsa::write_config(&dir, config);
        Sound { dir, conf }
    }

    /// Devices whose microphone captures `freq` Hz in `channels` channels
    /// (what the dialect's calls capture: 2 babel, 1 accounts).
    fn tone(name: &str, channels: usize, freq: f64) -> Sound {
        let sound = Sound::with(name, alsa::CALL_DEVICES);
        // 30 s: more than any test's call lasts.
        let mono = signal::stepped_tones(&[freq], 30_000);
        let raw: Vec<u8> = signal::to_channels(&mono, channels)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        std::fs::write(sound.dir.join("capture.raw"), raw).unwrap();
        sound
    }

    fn none(name: &str) -> Sound {
        Sound::with(name, alsa::NO_DEVICES)
    }

    /// Wait until the speaker has played `freq` Hz, clearly above `other`
    /// (the tone of this side's own microphone): the peer was heard.
    fn hears(&self, freq: f64, other: f64) {
        let deadline = Instant::now() + Duration::from_millis(TIMEOUT_MS);
        loop {
            let bytes = std::fs::read(self.dir.join("played.raw")).unwrap_or_default();
            let left: Vec<i16> = bytes
                .chunks_exact(4)
                .map(|f| i16::from_le_bytes([f[0], f[1]]))
                .collect();
            let (want, not) = (
                signal::windowed_power(&left, freq),
                signal::windowed_power(&left, other),
            );
            if left.len() >= signal::RATE / 2 && want > 100.0 * not.max(1.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the speaker did not play {freq} Hz: {} samples, power {want:e} vs {not:e} at {other} Hz",
                left.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sound {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a client says of a call's sound on `devices` ("microphone M,
/// speaker S"), or of a build without device support.
fn sound_on(devices: &str) -> String {
    if DEVICE_SUPPORT {
        format!("; sound: {devices};")
    } else {
        "no sound: this chinwag was built without device support".into()
    }
}

/// The numbers after `word` in `text`, in order.
fn numbers_after(text: &str, word: &str) -> Vec<u64> {
    text.split(word)
        .skip(1)
        .filter_map(|t| {
            let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Ask `/stats` until the current call has sent and received `n` packets
/// each way (with no devices, check it says 0 and stop).
fn stats_until(p: &mut PtySession, n: u64) {
    let deadline = Instant::now() + Duration::from_millis(TIMEOUT_MS);
    loop {
        p.send_line("/stats").unwrap();
        let (_, line) = p
            .exp_regex(r"sent \d+ packets \([^)]*\); received \d+ packets")
            .unwrap();
        let (sent, received) = (
            numbers_after(&line, "sent "),
            numbers_after(&line, "received "),
        );
        if sent[0] >= n && received[0] >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the call carried too little: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn babel_login_contacts_and_a_call_with_sound_placed_answered_and_hung_up() {
    let srv = server();
    let port = srv.babel_addr().port();
    // Babel calls capture two channels.
    let (ann_sound, bob_sound) = (
        Sound::tone("babel-ann", 2, 700.0),
        Sound::tone("babel-bob", 2, 1500.0),
    );
    let mut ann = cli_sound("babel", port, &ann_sound);
    let mut bob = cli_sound("babel", port, &bob_sound);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    ann.exp_string("bob is online").unwrap();
    says(&mut ann, "/who", "online: bob");
    says(&mut ann, "a line", "babel carries calls, not text");
    says(&mut ann, "/help", "/volume [mic|speaker] N");
    if DEVICE_SUPPORT {
        says(&mut ann, "/devices", "chinwag_mic");
        ann.exp_string("speakers:").unwrap();
        ann.exp_string("chinwag_play").unwrap();
    }
    says(&mut ann, "/stats", "no call going on");
    says(&mut ann, "/call bob", "ringing bob");
    bob.exp_string("ann is calling").unwrap();
    says(&mut bob, "/calls", "ann: calling you");
    says(
        &mut bob,
        "/answer ann --speaker chinwag_play --mic chinwag_mic",
        "answering ann",
    );
    bob.exp_string("in a call with ann").unwrap();
    bob.exp_string(&sound_on("microphone chinwag_mic, speaker chinwag_play"))
        .unwrap();
    ann.exp_string("in a call with bob").unwrap();
    ann.exp_string(&sound_on("microphone default, speaker default"))
        .unwrap();
    says(&mut ann, "/calls", "call with bob");
    if DEVICE_SUPPORT {
        // Each microphone's tone reaches the other's speaker.
        stats_until(&mut ann, 50);
        bob_sound.hears(700.0, 1500.0);
        ann_sound.hears(1500.0, 700.0);
    }
    says(&mut ann, "/mute", "microphone muted: bob hears silence");
    says(
        &mut ann,
        "/volume 50",
        "speaker volume 50% in the call with bob",
    );
    says(&mut ann, "/calls", "microphone muted, speaker volume 50%");
    says(&mut ann, "/unmute", "microphone on: bob hears you");
    says(
        &mut ann,
        "/mute speaker",
        "speaker muted: you do not hear bob",
    );
    says(&mut ann, "/volume mic 150", "microphone volume 150%");
    says(&mut ann, "/volume 201", "the volume is 0 to 200");
    says(&mut ann, "/hangup bob", "hung up on bob");
    bob.exp_string("call with ann ended").unwrap();
    says(&mut bob, "/calls", "no calls");
    quit(ann);
    quit(bob);
}

#[test]
fn accounts_a_call_with_sound_between_friends() {
    let srv = server();
    let port = srv.accounts_addr().port();
    // Accounts calls capture one channel.
    let (ann_sound, bob_sound) = (
        Sound::tone("acc-ann", 1, 700.0),
        Sound::tone("acc-bob", 1, 1500.0),
    );
    let mut ann = cli_sound("accounts", port, &ann_sound);
    let mut bob = cli_sound("accounts", port, &bob_sound);
    friends(&mut ann, &mut bob);

    says(
        &mut ann,
        "/call bob --mic nowhere --mic twice",
        "--mic given twice",
    );
    says(&mut ann, "/call bob", "ringing bob");
    says(&mut ann, "/calls", "bob: ringing");
    bob.exp_string("ann is calling").unwrap();
    // The call is established as the answer leaves, so what /answer says
    // and the call's line may come in either order: only the latter is
    // waited for.
    bob.send_line("/answer ann").unwrap();
    bob.exp_string("in a call with ann").unwrap();
    bob.exp_string(&sound_on("microphone default, speaker default"))
        .unwrap();
    ann.exp_string("bob answered").unwrap();
    ann.exp_string("in a call with bob").unwrap();
    ann.exp_string(&sound_on("microphone default, speaker default"))
        .unwrap();
    if DEVICE_SUPPORT {
        stats_until(&mut bob, 50);
        bob_sound.hears(700.0, 1500.0);
        ann_sound.hears(1500.0, 700.0);
    }
    says(&mut bob, "/hangup ann", "hung up on ann");
    ann.exp_string("call with bob ended").unwrap();
    says(&mut ann, "/stats", "no call going on");
    quit(ann);
    quit(bob);
}

#[test]
fn without_a_sound_card_a_call_connects_and_says_there_is_no_device() {
    let srv = server();
    let port = srv.babel_addr().port();
    let (ann_sound, bob_sound) = (Sound::none("none-ann"), Sound::none("none-bob"));
    let mut ann = cli_sound("babel", port, &ann_sound);
    let mut bob = cli_sound("babel", port, &bob_sound);
    says(&mut ann, "/login ann", "logged in as ann");
    says(&mut bob, "/login bob", "logged in as bob");
    ann.exp_string("bob is online").unwrap();
    says(&mut ann, "/call bob", "ringing bob");
    bob.exp_string("ann is calling").unwrap();
    says(&mut bob, "/answer ann --speaker studio", "answering ann");
    let (no_device, no_speaker) = if DEVICE_SUPPORT {
        (
            "no audio device: no usable speaker",
            "no audio device: no speaker named \"studio\"",
        )
    } else {
        (
            "built without device support",
            "built without device support",
        )
    };
    bob.exp_string("in a call with ann").unwrap();
    bob.exp_string(no_speaker).unwrap();
    ann.exp_string("in a call with bob").unwrap();
    ann.exp_string(no_device).unwrap();
    if DEVICE_SUPPORT {
        ann.exp_string("the call goes on without sound").unwrap();
    }
    // The call is there, silent.
    says(&mut ann, "/calls", "call with bob: no sound");
    says(&mut ann, "/stats", "call with bob: no sound");
    ann.exp_string("sent 0 packets").unwrap();
    says(&mut ann, "/mute", "microphone muted");
    says(&mut bob, "/hangup ann", "hung up on ann");
    ann.exp_string("call with bob ended").unwrap();
    quit(ann);
    quit(bob);
}

#[test]
fn rooms_login_create_list_join_talk_invite_and_leave() {
    let srv = server();
    let port = srv.rooms_addr().port();
    let (mut ann, mut bob) = ann_and_bob("rooms", port);
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
