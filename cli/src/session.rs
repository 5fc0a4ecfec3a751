//! One connection and what the user does with it: the `/` commands of each
//! dialect, and how each incoming event is shown. Knows nothing of the
//! terminal: it returns lines of text, and `main` prints them.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chinwag::client::RoomMode;
use chinwag::{Client, Dialect, Event, Side, Stream};
use parking::Mutex;

use crate::audio::{self, CallAudio, Devices};
use crate::clock::utc;

/// A std mutex that shrugs off poisoning: a panicked printer thread must
/// not take the session down with it.
mod parking {
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Mutex(std::sync::Mutex::new(v))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// How long a command waits for the server.
const WAIT: Option<Duration> = Some(Duration::from_secs(10));
/// Bytes per read or write of a file over a private connection.
const CHUNK: usize = 64 * 1024;

/// Where the text of one command or event goes.
pub type Lines = Vec<String>;

/// What `/help` says, per command: (usage, dialects, meaning).
const COMMANDS: &[(&str, &str, &str)] = &[
    ("/help", "all", "this list"),
    ("/quit", "all", "leave"),
    ("/login NAME", "chatos babel rooms", "log in as NAME"),
    (
        "/register EMAIL PSEUDO [PASSWORD]",
        "accounts",
        "create an account (no PASSWORD: asked for, not shown)",
    ),
    (
        "/login EMAIL [PASSWORD]",
        "accounts",
        "log in to an account (no PASSWORD: asked for, not shown)",
    ),
    (
        "/who",
        "all",
        "who is online (babel contacts, room members, accounts friends)",
    ),
    (
        "/msg NAME TEXT",
        "chatos accounts",
        "a private message (accounts: stored)",
    ),
    ("/to NAME", "accounts", "plain lines now go to NAME"),
    ("/friend NAME", "accounts", "ask NAME to be your friend"),
    (
        "/accept NAME",
        "chatos accounts rooms",
        "accept a private connection, a friend request, or an invitation into room NAME",
    ),
    ("/refuse NAME", "chatos accounts rooms", "refuse the same"),
    (
        "/friends",
        "accounts",
        "your friends and who asks to be one",
    ),
    (
        "/history NAME [BEFORE]",
        "accounts",
        "the conversation with NAME, with times",
    ),
    ("/rooms", "rooms", "the private rooms"),
    (
        "/create ROOM [central|p2p] [MAX]",
        "rooms",
        "create a private room and enter it",
    ),
    ("/join ROOM", "rooms", "enter a private room"),
    ("/leave", "rooms", "back to the public room"),
    ("/invite NAME", "rooms", "invite NAME into your room"),
    ("/members [ROOM]", "rooms", "who is in a room"),
    (
        "/sendfile NAME PATH",
        "chatos",
        "send a file over a private connection",
    ),
    (
        "/call NAME [--mic DEV] [--speaker DEV]",
        "accounts babel",
        "ring NAME; the call has sound (default devices unless named)",
    ),
    (
        "/answer NAME [--mic DEV] [--speaker DEV]",
        "accounts babel",
        "answer NAME's call, with sound",
    ),
    ("/decline NAME", "accounts babel", "decline NAME's call"),
    ("/hangup NAME", "accounts babel", "end the call with NAME"),
    ("/calls", "accounts babel", "the calls going on or ringing"),
    (
        "/devices",
        "accounts babel",
        "the microphones and speakers (DEV above)",
    ),
    (
        "/mute [mic|speaker]",
        "accounts babel",
        "in the current call, mute your microphone (or the speaker)",
    ),
    ("/unmute [mic|speaker]", "accounts babel", "undo /mute"),
    (
        "/volume [mic|speaker] N",
        "accounts babel",
        "the current call's speaker (or microphone) volume, 0 to 200 %",
    ),
    (
        "/stats",
        "accounts babel",
        "the current call's audio: packets, loss, delay",
    ),
];

/// A call not established yet.
struct Pending {
    /// "ringing", "calling you" or "answering".
    stage: &'static str,
    /// The devices it will use once established.
    devices: Devices,
}

/// Every command word, for completion.
pub fn command_words() -> BTreeSet<&'static str> {
    COMMANDS
        .iter()
        .map(|(usage, _, _)| usage.split(' ').next().unwrap_or(usage))
        .collect()
}

pub struct Session {
    pub client: Client,
    pub dialect: Dialect,
    /// Names seen (peers, contacts, friends, members): completion.
    pub names: Mutex<BTreeSet<String>>,
    /// Accounts: where a plain line goes.
    to: Mutex<Option<String>>,
    /// Chatos: files waiting for their private connection, by peer.
    outgoing: Mutex<HashMap<String, PathBuf>>,
    /// Calls going on, oldest first: the last is the current call.
    calls: Mutex<Vec<CallAudio>>,
    /// Calls ringing (either way) or being answered, by peer.
    pending: Mutex<HashMap<String, Pending>>,
    /// Where received files are written.
    downloads: PathBuf,
}

fn fail(e: chinwag::ffi::Failure) -> Lines {
    vec![format!("! {} ({:?})", e.message, e.code)]
}

fn mode_name(m: RoomMode) -> &'static str {
    match m {
        RoomMode::Centralised => "central",
        RoomMode::Decentralised => "p2p",
    }
}

impl Session {
    pub fn new(client: Client, downloads: PathBuf) -> Arc<Session> {
        Arc::new(Session {
            dialect: client.dialect(),
            client,
            names: Mutex::new(BTreeSet::new()),
            to: Mutex::new(None),
            outgoing: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            downloads,
        })
    }

    fn learn<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let mut known = self.names.lock();
        for n in names {
            if !n.is_empty() && !n.starts_with('#') {
                known.insert(n.clone());
            }
        }
    }

    /// Run one line the user typed. `None`: the user leaves.
    pub fn line(self: &Arc<Self>, line: &str) -> Option<Lines> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Some(vec![]);
        }
        if !line.starts_with('/') {
            return Some(self.say(line));
        }
        let mut words = line.splitn(2, ' ');
        let cmd = words.next().unwrap_or_default();
        let rest = words.next().unwrap_or("").trim();
        let args: Vec<&str> = rest.split_whitespace().collect();
        if let Some(why) = self.not_here(cmd, &args) {
            return Some(vec![why]);
        }
        let r = match (cmd, args.as_slice()) {
            ("/quit", _) => return None,
            ("/help", _) => self.help(),
            ("/login", [name]) => self.done(
                self.client.login(name, WAIT),
                format!("logged in as {name}"),
            ),
            ("/login", [email, password]) => self.login_password(email, password),
            ("/register", [email, pseudo, password]) => self.register(email, pseudo, password),
            ("/who", []) => self.who(),
            ("/msg", [to, ..]) => {
                let text = rest[to.len()..].trim_start();
                self.private(to, text)
            }
            ("/to", [name]) => {
                *self.to.lock() = Some(name.to_string());
                vec![format!("plain lines now go to {name}")]
            }
            ("/friend", [name]) => self.done(
                self.client.request_friend(name, WAIT),
                format!("asked {name} to be your friend"),
            ),
            ("/accept", [name]) => self.answer(name, true),
            ("/refuse", [name]) => self.answer(name, false),
            ("/friends", []) => self.friends(),
            ("/history", [name]) => self.history(name, 0),
            ("/history", [name, before]) => match before.parse() {
                Ok(b) => self.history(name, b),
                Err(_) => vec!["! BEFORE is a message id".into()],
            },
            ("/rooms", []) => match self.client.room_list() {
                Ok(rooms) if rooms.is_empty() => vec!["no private rooms".into()],
                Ok(rooms) => rooms
                    .iter()
                    .map(|r| format!("  {} ({}, {} in it)", r.name, mode_name(r.mode), r.clients))
                    .collect(),
                Err(e) => fail(e),
            },
            ("/create", [room, more @ ..]) => self.create(room, more),
            ("/join", [room]) => {
                self.done(self.client.room_join(room), format!("you are in {room}"))
            }
            ("/leave", []) => self.done(self.client.room_leave(), "back in the public room".into()),
            ("/invite", [name]) => {
                self.done(self.client.room_invite(name), format!("invited {name}"))
            }
            ("/members", []) => self.members(""),
            ("/members", [room]) => self.members(room),
            ("/sendfile", [name, path]) => self.send_file(name, path),
            ("/call", [name, opts @ ..]) => self.call(name, opts),
            ("/answer", [name, opts @ ..]) => self.answer_call(name, opts),
            ("/decline", [name]) => {
                self.pending.lock().remove(*name);
                self.done(
                    self.client.refuse_call(name),
                    format!("declined {name}'s call"),
                )
            }
            ("/hangup", [name]) => self.hangup(name),
            ("/calls", []) => self.list_calls(),
            ("/devices", []) => audio::list_devices(),
            ("/mute", side) => self.mute(side, true),
            ("/unmute", side) => self.mute(side, false),
            ("/volume", [n]) => self.volume(Side::Speaker, n),
            ("/volume", [side, n]) => match audio::side(side) {
                Some(side) => self.volume(side, n),
                None => vec!["! /volume [mic|speaker] N".into()],
            },
            ("/stats", []) => self.on_current(CallAudio::stats),
            _ => vec![format!(
                "! unknown command or wrong arguments: {line} (try /help)"
            )],
        };
        Some(r)
    }

    fn login_password(&self, email: &str, password: &str) -> Lines {
        match self.client.login_password(email, password, WAIT) {
            Ok((pseudo, id)) => vec![format!("logged in as {pseudo} (account {id})")],
            Err(e) => fail(e),
        }
    }

    fn register(&self, email: &str, pseudo: &str, password: &str) -> Lines {
        self.done(
            self.client.register(email, pseudo, password, WAIT),
            format!("registered {pseudo}; now /login {email}"),
        )
    }

    /// Accounts' `/login EMAIL` and `/register EMAIL PSEUDO` typed without
    /// their password: the prompt to ask for it with. The terminal then
    /// reads it unseen and hands it to [`Session::with_password`].
    pub fn password_prompt(&self, line: &str) -> Option<&'static str> {
        if self.dialect != Dialect::CW_DIALECT_ACCOUNTS {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["/login", _] | ["/register", _, _] => Some("password: "),
            _ => None,
        }
    }

    /// Run a line [`Session::password_prompt`] asked a password for. The
    /// password is taken whole (spaces too), never split into words.
    pub fn with_password(&self, line: &str, password: &str) -> Lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["/login", email] => self.login_password(email, password),
            ["/register", email, pseudo] => self.register(email, pseudo, password),
            _ => vec![format!("! no password is asked for {line}")],
        }
    }

    /// `line` as the editor's history keeps it: accounts' passwords left
    /// out (`/login EMAIL`, `/register EMAIL PSEUDO`), so that the up
    /// arrow never shows one; recalled, such a line asks for it again.
    pub fn for_history<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        if self.dialect == Dialect::CW_DIALECT_ACCOUNTS {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["/login", email, _] => return format!("/login {email}").into(),
                ["/register", email, pseudo, _] => {
                    return format!("/register {email} {pseudo}").into()
                }
                _ => {}
            }
        }
        line.into()
    }

    /// Why `cmd` cannot run in this dialect, in the terminal's words (the
    /// library's would name its own functions): a command of other
    /// dialects only, or accounts' `/login` without its email and password
    /// (the terminal asks for a missing password before it gets here).
    fn not_here(&self, cmd: &str, args: &[&str]) -> Option<String> {
        let me = self.dialect.name();
        let mut usages = COMMANDS
            .iter()
            .filter(|(usage, _, _)| usage.split(' ').next() == Some(cmd));
        let mine = usages
            .clone()
            .find(|(_, dialects, _)| *dialects == "all" || dialects.split(' ').any(|d| d == me));
        match mine {
            // Babel's own word on these: /answer for a call.
            None if matches!(cmd, "/accept" | "/refuse") => None,
            None if usages.next().is_some() => Some(format!(
                "! {cmd} is not a command of the {me} dialect (/help lists them)"
            )),
            Some((usage, _, _))
                if cmd == "/login"
                    && self.dialect == Dialect::CW_DIALECT_ACCOUNTS
                    && args.len() != 2 =>
            {
                Some(format!(
                    "! {usage} (an account first: /register EMAIL PSEUDO [PASSWORD])"
                ))
            }
            _ => None,
        }
    }

    fn done(&self, r: Result<(), chinwag::ffi::Failure>, ok: String) -> Lines {
        match r {
            Ok(()) => vec![ok],
            Err(e) => fail(e),
        }
    }

    fn help(&self) -> Lines {
        let me = self.dialect.name();
        let mine: Vec<_> = COMMANDS
            .iter()
            .filter(|(_, dialects, _)| *dialects == "all" || dialects.split(' ').any(|d| d == me))
            .collect();
        let width = mine
            .iter()
            .map(|(usage, _, _)| usage.len())
            .max()
            .unwrap_or(0);
        let mut out = vec![format!("commands ({me}; a plain line is a message):")];
        for (usage, _, what) in mine {
            out.push(format!("  {usage:<width$} {what}"));
        }
        out
    }

    /// A plain line: a message in the dialect's sense.
    fn say(&self, text: &str) -> Lines {
        match self.dialect {
            Dialect::CW_DIALECT_ACCOUNTS => {
                // Not in the match: `private` takes this lock again.
                let to = self.to.lock().clone();
                match to {
                    Some(to) => self.private(&to, text),
                    None => vec!["! no conversation yet: /to NAME or /msg NAME TEXT".into()],
                }
            }
            Dialect::CW_DIALECT_BABEL => {
                vec!["! babel carries calls, not text: /call NAME".into()]
            }
            _ => match self.client.send_message(text) {
                Ok(()) => vec![],
                Err(e) => fail(e),
            },
        }
    }

    fn private(&self, to: &str, text: &str) -> Lines {
        if text.is_empty() {
            return vec!["! nothing to send".into()];
        }
        self.learn([&to.to_string()]);
        let r = match self.dialect {
            Dialect::CW_DIALECT_ACCOUNTS => {
                *self.to.lock() = Some(to.to_string());
                self.client.send_to_friend(to, text, WAIT)
            }
            _ => self.client.send_private(to, text),
        };
        match r {
            Ok(()) => vec![format!("-> {to}: {text}")],
            Err(e) => fail(e),
        }
    }

    fn who(&self) -> Lines {
        let (what, list) = match self.dialect {
            Dialect::CW_DIALECT_BABEL => ("online", self.client.contacts()),
            Dialect::CW_DIALECT_ROOMS => {
                let room = self
                    .client
                    .room_current()
                    .map(|(r, _)| r)
                    .unwrap_or_default();
                ("in this room", self.client.room_members(&room))
            }
            Dialect::CW_DIALECT_ACCOUNTS => ("friends", self.client.list_friends(WAIT)),
            _ => {
                let seen: Vec<String> = self.names.lock().iter().cloned().collect();
                return vec![format!(
                    "chatos cannot list who is online; seen so far: {}",
                    seen.join(" ")
                )];
            }
        };
        match list {
            Ok(names) => {
                self.learn(&names);
                vec![format!("{what}: {}", names.join(" "))]
            }
            Err(e) => fail(e),
        }
    }

    fn friends(&self) -> Lines {
        let (friends, asking) = match (
            self.client.list_friends(WAIT),
            self.client.list_requests(WAIT),
        ) {
            (Ok(f), Ok(r)) => (f, r),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        self.learn(friends.iter().chain(&asking));
        vec![
            format!("friends: {}", friends.join(" ")),
            format!("asking you: {}", asking.join(" ")),
        ]
    }

    fn history(&self, name: &str, before: u64) -> Lines {
        let me = self.client.account_id().ok();
        match self.client.history(name, before, WAIT) {
            Ok(page) if page.is_empty() => vec![format!("no messages with {name}")],
            Ok(page) => {
                let mut out = vec![format!(
                    "history with {name} (older: /history {name} {}):",
                    page[0].id
                )];
                for e in page {
                    let who = if Some(e.sender_id) == me { "me" } else { name };
                    let when = e.stamp.map(utc).unwrap_or_else(|| "time unknown".into());
                    out.push(format!("  [{when}] {who}: {}", e.text));
                }
                out
            }
            Err(e) => fail(e),
        }
    }

    /// `/accept` and `/refuse`: what is pending depends on the dialect.
    fn answer(&self, name: &str, yes: bool) -> Lines {
        let verb = if yes { "accepted" } else { "refused" };
        let r = match self.dialect {
            Dialect::CW_DIALECT_CHATOS if yes => self.client.accept_private(name),
            Dialect::CW_DIALECT_CHATOS => self.client.refuse_private(name),
            Dialect::CW_DIALECT_ACCOUNTS if yes => self.client.accept_friend(name, WAIT),
            Dialect::CW_DIALECT_ACCOUNTS => self.client.refuse_friend(name, WAIT),
            Dialect::CW_DIALECT_ROOMS => self.client.room_answer_invitation(name, yes),
            _ => return vec!["! nothing to accept in babel: /answer NAME for a call".into()],
        };
        self.done(r, format!("{verb} {name}"))
    }

    fn create(&self, room: &str, more: &[&str]) -> Lines {
        let mode = match more.first().copied() {
            None | Some("central") => RoomMode::Centralised,
            Some("p2p") => RoomMode::Decentralised,
            Some(other) => return vec![format!("! mode is central or p2p, not {other}")],
        };
        let max = match more.get(1).map(|m| m.parse::<u8>()) {
            None => 254,
            Some(Ok(m)) => m,
            Some(Err(_)) => return vec!["! MAX is 2 to 254".into()],
        };
        match self.client.room_create(room, mode, max) {
            Ok(id) => vec![format!(
                "created {room} (id {id}, {}); you are in it",
                mode_name(mode)
            )],
            Err(e) => fail(e),
        }
    }

    fn members(&self, room: &str) -> Lines {
        match self.client.room_members(room) {
            Ok(names) => {
                self.learn(&names);
                let label = if room.is_empty() {
                    "the public room"
                } else {
                    room
                };
                vec![format!("in {label}: {}", names.join(" "))]
            }
            Err(e) => fail(e),
        }
    }

    fn send_file(&self, name: &str, path: &str) -> Lines {
        if let Err(e) = File::open(path) {
            return vec![format!("! cannot read {path}: {e}")];
        }
        self.outgoing
            .lock()
            .insert(name.to_string(), PathBuf::from(path));
        match self.client.request_private(name) {
            Ok(()) => vec![format!(
                "asked {name} for a private connection to send {path}"
            )],
            Err(e) => {
                self.outgoing.lock().remove(name);
                fail(e)
            }
        }
    }

    /// `/call`: ring `name` for a call the library carries, with sound.
    fn call(&self, name: &str, opts: &[&str]) -> Lines {
        self.signal_call(name, opts, "ringing", |c| c.place_voice_call(name, ""))
    }

    /// `/answer`: answer `name`'s ringing call, with sound.
    fn answer_call(&self, name: &str, opts: &[&str]) -> Lines {
        self.signal_call(name, opts, "answering", |c| c.answer_voice_call(name, ""))
    }

    /// Note the call's devices, then `signal` it; the devices are noted
    /// first because the call may be established (an event, on the
    /// events thread) before `signal` returns.
    fn signal_call(
        &self,
        name: &str,
        opts: &[&str],
        stage: &'static str,
        signal: impl FnOnce(&Client) -> Result<(), chinwag::ffi::Failure>,
    ) -> Lines {
        let devices = match Devices::parse(opts) {
            Ok(d) => d,
            Err(e) => return vec![format!("! {e}")],
        };
        let before = self
            .pending
            .lock()
            .insert(name.to_string(), Pending { stage, devices });
        match signal(&self.client) {
            Ok(()) => vec![format!("{stage} {name}...")],
            Err(e) => {
                let mut pending = self.pending.lock();
                match before {
                    Some(p) => pending.insert(name.to_string(), p),
                    None => pending.remove(name),
                };
                fail(e)
            }
        }
    }

    /// The established call with `peer`, taken out of the session (so it
    /// is dropped, and hung up, outside the lock).
    fn take_call(&self, peer: &str) -> Option<CallAudio> {
        let mut calls = self.calls.lock();
        let i = calls.iter().position(|c| c.call.peer() == peer)?;
        Some(calls.remove(i))
    }

    fn hangup(&self, name: &str) -> Lines {
        self.pending.lock().remove(name);
        let r = self.client.hangup_call(name);
        let held = self.take_call(name);
        match (r, held) {
            // Not known to the client any more, yet held here: it ended
            // and its event is on the way; dropping it is enough.
            (Ok(()), _) | (Err(_), Some(_)) => vec![format!("hung up on {name}")],
            (Err(e), None) => fail(e),
        }
    }

    fn list_calls(&self) -> Lines {
        let mut out: Lines = self
            .calls
            .lock()
            .iter()
            .map(|c| format!("  {}", c.describe()))
            .collect();
        let mut pending: Vec<_> = self
            .pending
            .lock()
            .iter()
            .map(|(peer, p)| format!("  {peer}: {}", p.stage))
            .collect();
        pending.sort();
        out.extend(pending);
        if out.is_empty() {
            out.push("no calls".into());
        }
        out
    }

    /// `f` on the current call: the one established last.
    fn on_current(&self, f: impl FnOnce(&CallAudio) -> Lines) -> Lines {
        match self.calls.lock().last() {
            Some(c) => f(c),
            None => vec!["! no call going on".into()],
        }
    }

    fn mute(&self, side: &[&str], muted: bool) -> Lines {
        let side = match side {
            [] => Side::Microphone,
            [s] => match audio::side(s) {
                Some(side) => side,
                None => return vec!["! /mute or /unmute [mic|speaker]".into()],
            },
            _ => return vec!["! /mute or /unmute [mic|speaker]".into()],
        };
        self.on_current(|c| {
            c.call.set_muted(side, muted);
            let peer = c.call.peer();
            vec![match (side, muted) {
                (Side::Microphone, true) => format!("microphone muted: {peer} hears silence"),
                (Side::Microphone, false) => format!("microphone on: {peer} hears you"),
                (Side::Speaker, true) => format!("speaker muted: you do not hear {peer}"),
                (Side::Speaker, false) => format!("speaker on: you hear {peer}"),
            }]
        })
    }

    fn volume(&self, side: Side, n: &str) -> Lines {
        let max = audio::percent(chinwag::call::MAX_VOLUME);
        let Some(pct) = n.parse::<u32>().ok().filter(|p| *p <= max) else {
            return vec![format!("! the volume is 0 to {max} (%)")];
        };
        self.on_current(|c| {
            c.call.set_volume(side, pct as f32 / 100.0);
            let what = match side {
                Side::Microphone => "microphone",
                Side::Speaker => "speaker",
            };
            vec![format!(
                "{what} volume {pct}% in the call with {}",
                c.call.peer()
            )]
        })
    }

    /// How an event shows; some also change the session's state.
    pub fn event(self: &Arc<Self>, ev: Event) -> Lines {
        if let Some(p) = ev.peer() {
            self.learn([&p.to_string()]);
        }
        let line = match ev {
            Event::Message { from, text } => format!("<{from}> {text}"),
            Event::PrivateMessage {
                from, text, stamp, ..
            } => match stamp {
                Some(s) => format!("[{}] *{from}* {text}", utc(s)),
                None => format!("*{from}* {text}"),
            },
            Event::Overflow { dropped } => format!("-- {dropped} events were lost"),
            Event::Error { text, .. } | Event::Disconnected { text, .. } => {
                format!("-- disconnected: {text} (/quit to leave)")
            }
            Event::PrivateRequest { from } => {
                format!("-- {from} asks for a private connection: /accept {from} or /refuse {from}")
            }
            Event::PrivateRefused { peer } => {
                self.outgoing.lock().remove(&peer);
                format!("-- {peer} refused the private connection")
            }
            Event::PrivateFailed { peer, text, .. } => {
                self.outgoing.lock().remove(&peer);
                format!("-- private connection with {peer} failed: {text}")
            }
            Event::PrivateClosed { peer } => format!("-- private connection with {peer} closed"),
            Event::PrivateEstablished { peer, stream, .. } => match stream {
                Some(s) => self.transfer(peer, s),
                None => format!("-- private connection with {peer} open"),
            },
            Event::ContactAdded { name } => format!("-- {name} is online"),
            Event::ContactRemoved { name } => format!("-- {name} went offline"),
            Event::CallIncoming { peer, .. } => {
                self.pending.lock().insert(
                    peer.clone(),
                    Pending {
                        stage: "calling you",
                        devices: Devices::default(),
                    },
                );
                format!("-- {peer} is calling: /answer {peer} or /decline {peer}")
            }
            Event::CallAccepted { peer, .. } => format!("-- {peer} answered"),
            Event::CallEstablished { peer, call } => match call {
                Some(call) => {
                    let devices = self.pending.lock().remove(&peer).map(|p| p.devices);
                    let (audio, note) = CallAudio::start(call, &devices.unwrap_or_default());
                    self.calls.lock().push(audio);
                    format!("-- in a call with {peer}; {note}; /hangup {peer} to end it")
                }
                None => format!("-- in a call with {peer}"),
            },
            Event::CallFailed { peer, text, .. } => {
                self.pending.lock().remove(&peer);
                drop(self.take_call(&peer));
                format!("-- call with {peer} failed: {text}")
            }
            Event::CallEnded { peer, .. } => {
                self.pending.lock().remove(&peer);
                drop(self.take_call(&peer));
                format!("-- call with {peer} ended")
            }
            Event::FriendRequest { from } => {
                format!("-- {from} asks to be your friend: /accept {from} or /refuse {from}")
            }
            Event::FriendAccepted { peer } => format!("-- {peer} is now your friend"),
            Event::FriendRefused { peer } => format!("-- {peer} refused your friend request"),
            Event::RoomInvitation { from, room, mode } => format!(
                "-- {from} invites you into {room} ({}): /accept {room} or /refuse {room}",
                mode_name(mode)
            ),
            Event::RoomClosed { room } => {
                format!("-- {room} closed with you its last member: back in the public room")
            }
        };
        vec![line]
    }

    /// A private connection opened: send the file waiting for `peer`, or
    /// receive one into the download folder, on a thread of its own.
    fn transfer(self: &Arc<Self>, peer: String, stream: Stream) -> String {
        let file = self.outgoing.lock().remove(&peer);
        let note = match &file {
            Some(path) => format!("sending {} to {peer}", path.display()),
            None => format!("receiving a file from {peer}"),
        };
        let me = self.clone();
        let _ = thread::Builder::new()
            .name("chinwag-file".into())
            .spawn(move || {
                let said = match file {
                    Some(path) => send_over(&stream, &path),
                    None => me.receive_over(&stream),
                };
                // Printed like an event, above the line being typed.
                crate::PRINTER.say(vec![said]);
            });
        format!("-- private connection with {peer}: {note}")
    }

    fn receive_over(&self, stream: &Stream) -> String {
        let path = self
            .downloads
            .join(download_name(stream.peer(), stream.connect_id()));
        let mut out = match File::create(&path) {
            Ok(f) => f,
            Err(e) => return format!("! cannot write {}: {e}", path.display()),
        };
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf, Some(Duration::from_secs(60))) {
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        return format!("! writing {}: {e}", path.display());
                    }
                    total += n as u64;
                }
                Err(e) if e.code == chinwag::ErrorKind::Closed => break,
                Err(e) => return format!("! receiving from {}: {}", stream.peer(), e.message),
            }
        }
        let _ = stream.shutdown_write();
        format!(
            "-- received {total} bytes from {} into {}",
            stream.peer(),
            path.display()
        )
    }
}

/// The name a file received from `peer` is saved under, in the download
/// folder: `PEER-ID.bin`. A name may hold `/` (`../x` is a valid login), so
/// each `/` (and any control character) becomes `_`: the file lands in
/// the folder and nowhere else.
fn download_name(peer: &str, connect_id: i64) -> String {
    let peer: String = peer
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    format!("{peer}-{connect_id}.bin")
}

fn send_over(stream: &Stream, path: &PathBuf) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("! cannot read {}: {e}", path.display()),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return format!("! reading {}: {e}", path.display()),
        };
        if let Err(e) = stream.write(&buf[..n]) {
            return format!("! sending to {}: {}", stream.peer(), e.message);
        }
        total += n as u64;
    }
    let _ = stream.shutdown_write();
    // Wait for the receiver to finish (it closes its side) so the
    // connection is not torn down under it.
    let mut sink = [0u8; 64];
    while stream
        .read(&mut sink, Some(Duration::from_secs(60)))
        .is_ok()
    {}
    format!(
        "-- sent {total} bytes of {} to {}",
        path.display(),
        stream.peer()
    )
}

#[cfg(test)]
mod tests {
    use super::download_name;

    #[test]
    fn a_download_is_named_inside_the_folder_whatever_the_peer_is_called() {
        assert_eq!(download_name("ann", 7), "ann-7.bin");
        assert_eq!(download_name("../../x", -2), ".._.._x--2.bin");
        assert_eq!(download_name("/etc/passwd", 1), "_etc_passwd-1.bin");
        assert_eq!(download_name("a\nb", 1), "a_b-1.bin");
    }
}
