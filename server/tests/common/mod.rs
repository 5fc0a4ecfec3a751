//! Shared by the server's TCP end-to-end tests: a raw client for any framed
//! dialect, checking bytes through the proto codecs, with bounded waits.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chinwag_proto::{Decode, Decoder};

/// A fresh directory for one test's files, unique across runs and processes.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cw-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How long a test waits for something that must happen: only a failing
/// test waits it out, so it is far longer than anything takes on a loaded
/// machine (10 s was not enough for a registration's Argon2 hash with the
/// suite at `nice -n 19` beside two busy loops).
pub const WAIT: Duration = Duration::from_secs(60);

/// Processes with time limits and this machine's speed now, shared with
/// the library's tests.
#[path = "../../../tests/common/tools.rs"]
#[allow(clippy::duplicate_mod)]
mod tools;

#[allow(unused_imports)]
pub use tools::{alone, process_cpu, stretch};

/// The login deadline of a test server whose tests do not check it: long
/// enough for a client to register and log in (an Argon2 hash each) on a
/// loaded machine, where the product's 10 s once was not.
pub const LOGIN_TIMEOUT_MS: u64 = 60_000;

/// How long a test waits for a chinwagd process to say where it listens
/// (it may open a PostgreSQL store on a loaded machine after a kill -9).
pub const START_WAIT: Duration = WAIT;

pub struct Wire<T> {
    pub s: TcpStream,
    pub dec: Decoder<T>,
    /// Why the last `try_recv` gave nothing (for `recv`'s failure message).
    nothing: &'static str,
    error: Option<std::io::Error>,
}

impl<T: Decode + Debug> Wire<T> {
    pub fn new(s: TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Self::raw(s)
    }

    /// Over `s` exactly as it is (no socket option changed).
    pub fn raw(s: TcpStream) -> Self {
        Wire {
            s,
            dec: Decoder::new(),
            nothing: "",
            error: None,
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next message, or None if nothing arrives within `wait` or the
    /// connection ends. Bytes the codec refuses fail the test.
    pub fn try_recv(&mut self, wait: Duration) -> Option<T> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(m) = self
                .dec
                .next_message()
                .expect("the server sent valid bytes")
            {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.nothing = "nothing arrived within the wait";
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => {
                    self.nothing = "the server closed the connection (EOF)";
                    return None;
                }
                Ok(n) => self.dec.push(&buf[..n]),
                // A signal, even one nobody handles, ends a read that has a
                // timeout with EINTR (signal(7)): wait on for what is left.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.nothing = "nothing arrived within the wait";
                    return None;
                }
                Err(e) => {
                    self.nothing = "the read failed";
                    self.error = Some(e);
                    return None;
                }
            }
        }
    }

    pub fn recv(&mut self) -> T {
        match self.try_recv(WAIT) {
            Some(m) => m,
            None => panic!(
                "a message within the wait: {} ({:?}; {} bytes waiting in the decoder)",
                self.nothing,
                self.error.take(),
                self.dec.buffered()
            ),
        }
    }

    pub fn expect_silence(&mut self) {
        if let Some(m) = self.try_recv(Duration::from_millis(250)) {
            panic!("expected nothing, got {m:?}");
        }
    }

    /// The server closes the connection: EOF (or reset) within the wait,
    /// with no complete message before it.
    pub fn expect_closed(&mut self) {
        let dec = &mut self.dec;
        wait_closed(&mut self.s, "the connection", |bytes| {
            dec.push(bytes);
            if let Ok(Some(m)) = dec.next_message() {
                panic!("expected the connection to close, got {m:?}");
            }
        });
    }
}

/// Read until the peer closes `s` (EOF or reset), handing whatever arrives
/// meanwhile to `on_bytes`. A read timeout means "not closed yet": the wait
/// goes on, and the test fails once `WAIT` has passed.
pub fn wait_closed(s: &mut TcpStream, what: &str, mut on_bytes: impl FnMut(&[u8])) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what} is still open after {WAIT:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => on_bytes(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return
            }
            Err(e) => panic!("{what}: read failed: {e}"),
        }
    }
}

/// The peer closes `s` within the wait without sending a single byte.
pub fn expect_eof(s: &mut TcpStream, what: &str) {
    wait_closed(s, what, |bytes| {
        panic!("expected {what} to close, got bytes {bytes:?}")
    });
}

/// chinwagd's flags for loopback listeners on ports the kernel picks
/// ([`Chinwagd::spawn`] reads them back).
pub const ALL_PORTS_FREE: [&str; 10] = [
    "--bind",
    "127.0.0.1",
    "--chatos-port",
    "0",
    "--babel-port",
    "0",
    "--accounts-port",
    "0",
    "--rooms-port",
    "0",
];

/// A chinwagd process started by a test (or by the benchmark, which
/// includes this file). Its listeners bind port 0; the addresses it got
/// are read from its `listening:` line (docs/operations.md, "Start-up"),
/// so no port is ever guessed free and then rebound, and nothing else
/// listening somewhere can be taken for it.
pub struct Chinwagd {
    pub child: std::process::Child,
    pub chatos: std::net::SocketAddr,
    pub babel: std::net::SocketAddr,
    pub accounts: std::net::SocketAddr,
    /// The rooms dialect's UDP socket.
    pub rooms: std::net::SocketAddr,
    /// The metrics endpoint, when `metrics_addr` is set.
    pub metrics: Option<std::net::SocketAddr>,
    /// The node-to-node listener, when `cluster_addr` is set.
    pub cluster: Option<std::net::SocketAddr>,
}

/// A [`Chinwagd`] killed (SIGKILL) and reaped when dropped, so that a test
/// that fails midway leaves no server behind (one still held its admin
/// socket and failed the next run's start-up).
pub struct Reaped(pub Chinwagd);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Chinwagd;
    fn deref(&self) -> &Chinwagd {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Chinwagd {
        &mut self.0
    }
}

/// Every listener of a `listening:` line, by name: the text after
/// `listening: ` is `NAME ADDR` pairs joined by `, `.
pub fn parse_listening(line: &str) -> Option<Vec<(String, std::net::SocketAddr)>> {
    let (_, pairs) = line.split_once("listening: ")?;
    pairs
        .trim_end()
        .split(", ")
        .map(|pair| {
            let (name, addr) = pair.split_once(' ')?;
            Some((name.to_owned(), addr.parse().ok()?))
        })
        .collect()
}

impl Chinwagd {
    /// Start `cmd` (the chinwagd binary with its arguments, every port 0)
    /// and wait for its listeners; the test fails if it does not start.
    pub fn spawn(cmd: &mut std::process::Command) -> Chinwagd {
        let log = child_log().unwrap_or_else(|| "info".into());
        Chinwagd::try_spawn(cmd, &log, child_log().is_some()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start `cmd` logging at `log` (a `RUST_LOG` value; the `listening:`
    /// line is kept whatever it says) and wait, up to [`START_WAIT`], for its
    /// `listening:` line. Its stderr is read to the end by a thread of its
    /// own, so logging never blocks it; `echo` copies it to ours. Err, with
    /// its last words, when it ends first, or is stopped after the wait.
    pub fn try_spawn(
        cmd: &mut std::process::Command,
        log: &str,
        echo: bool,
    ) -> Result<Chinwagd, String> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .env("RUST_LOG", format!("{log},chinwagd::listening=info"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("chinwagd does not start: {e}"))?;
        let err = child.stderr.take().expect("piped stderr");
        // Lines until the `listening:` one (its errors, if it ends first),
        // then that one; the channel closes when its stderr does.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut told = false;
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("chinwagd: {line}");
                }
                if !told {
                    told = line.contains("listening: ");
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + START_WAIT;
        // Its last words, if it ends first (the last 5 lines only).
        let mut said = std::collections::VecDeque::new();
        let failed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => match parse_listening(&line) {
                    Some(listeners) => {
                        return Chinwagd::from_listeners(child, &listeners, &line);
                    }
                    None => {
                        if said.len() == 5 {
                            said.pop_front();
                        }
                        said.push_back(line);
                    }
                },
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    break format!("chinwagd exited at start-up ({status})");
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!("chinwagd did not say where it listens within {START_WAIT:?}");
                }
            }
        };
        Err(format!("{failed}: {}", Vec::from(said).join(" | ")))
    }

    fn from_listeners(
        mut child: std::process::Child,
        listeners: &[(String, std::net::SocketAddr)],
        line: &str,
    ) -> Result<Chinwagd, String> {
        let find = |name: &str| listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
        let (Some(chatos), Some(babel), Some(accounts), Some(rooms)) = (
            find("chatos"),
            find("babel"),
            find("accounts"),
            find("rooms"),
        ) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("a dialect is missing from {line:?}"));
        };
        Ok(Chinwagd {
            chatos,
            babel,
            accounts,
            rooms,
            metrics: find("metrics"),
            cluster: find("cluster"),
            child,
        })
    }
}

/// GET `path` from a metrics endpoint: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// "name{labels}" -> value, from the exposition text.
pub fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// `CHINWAG_TEST_CHILD_LOG=debug` (any `RUST_LOG` value): chinwagd processes
/// started by tests log at that level and their lines are echoed to stderr.
fn child_log() -> Option<String> {
    std::env::var("CHINWAG_TEST_CHILD_LOG").ok()
}

/// Wait until `started` moves off zero: a background load is running.
pub fn wait_started(started: &std::sync::atomic::AtomicUsize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while started.load(std::sync::atomic::Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "{what} never started");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Log `clients` clients in from four threads while some load runs.
/// `login(i)` logs client i in, checks its first frames, and says whether
/// it then heard the load: more than half must have, or the load did not
/// really overlap the logins and the test proved nothing.
pub fn logins_under_load(clients: usize, login: impl Fn(usize) -> bool + Send + Sync + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const THREADS: usize = 4;
    let login = std::sync::Arc::new(login);
    let heard = std::sync::Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (login, heard) = (login.clone(), heard.clone());
            std::thread::spawn(move || {
                for i in (t..clients).step_by(THREADS) {
                    if login(i) {
                        heard.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let heard = heard.load(Ordering::Relaxed);
    assert!(
        heard > clients / 2,
        "only {heard} of {clients} clients heard the load after logging in"
    );
}

// ---- raw clients of each TCP dialect, logged in (bridge.rs, cluster.rs) ----

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::Frame as Babel;
use chinwag_proto::chatos::Command;

/// A chatos user logged in as `name`.
pub fn chatos(addr: std::net::SocketAddr, name: &str) -> Wire<Command> {
    let mut c = Wire::<Command>::new(TcpStream::connect(addr).unwrap());
    c.send_bytes(&Command::Login { login: name.into() }.to_bytes());
    assert_eq!(c.recv(), Command::LoginAccepted, "{name} logs in");
    c
}

/// An accounts connection past its greeting.
pub fn accounts(addr: std::net::SocketAddr) -> Wire<Acc> {
    let mut a = Wire::<Acc>::new(TcpStream::connect(addr).unwrap());
    a.send_bytes(&Acc::Hello.to_bytes());
    assert_eq!(a.recv(), Acc::HelloAck);
    a
}

/// Register `pseudo` (email `pseudo@example.org`, password "correct horse").
pub fn register(addr: std::net::SocketAddr, pseudo: &str) {
    let mut a = accounts(addr);
    a.send_bytes(
        &Acc::Register {
            email: format!("{pseudo}@example.org"),
            pseudo: pseudo.into(),
            password: "correct horse".into(),
        }
        .to_bytes(),
    );
    assert_eq!(a.recv(), Acc::Registered);
}

/// Log in as `pseudo`, registered by [`register`].
pub fn login(addr: std::net::SocketAddr, pseudo: &str) -> Wire<Acc> {
    let mut a = accounts(addr);
    a.send_bytes(
        &Acc::Login {
            email: format!("{pseudo}@example.org"),
            password: "correct horse".into(),
        }
        .to_bytes(),
    );
    let got = a.recv();
    assert!(matches!(got, Acc::LoginOk { .. }), "{pseudo}: {got:?}");
    a
}

pub fn send(w: &mut Wire<Acc>, f: Acc) {
    w.send_bytes(&f.to_bytes());
}

/// 140: call `pseudo`, voice at `port` of this connection's own address.
pub fn call(w: &mut Wire<Acc>, pseudo: &str, port: u16) {
    send(
        w,
        Acc::Call {
            pseudo: pseudo.into(),
            addr: String::new(),
            port,
        },
    );
}

/// A babel user logged in as `name`, and the contact list it was given.
pub fn babel(addr: std::net::SocketAddr, name: &str) -> (Wire<Babel>, Vec<String>) {
    let mut b = Wire::<Babel>::new(TcpStream::connect(addr).unwrap());
    assert_eq!(b.recv(), Babel::HelloConnect);
    b.send_bytes(&Babel::Login { name: name.into() }.to_bytes());
    assert_eq!(b.recv(), Babel::LoginSuccess);
    let Babel::AddContact { contacts } = b.recv() else {
        panic!("AddContact after LoginSuccess")
    };
    (b, contacts)
}

/// A babel client whose contact list at login was `contacts` reads its
/// AddContact frames until `name` is in the list (presence from another
/// node may come after the login's list).
pub fn babel_waits_for_contact(b: &mut Wire<Babel>, contacts: &[String], name: &str) {
    if contacts.iter().any(|c| c == name) {
        return;
    }
    loop {
        match b.recv() {
            Babel::AddContact { contacts } if contacts.iter().any(|c| c == name) => return,
            Babel::AddContact { .. } | Babel::DelContact { .. } => {}
            other => panic!("AddContact {name} expected, got {other:?}"),
        }
    }
}

/// The next babel frame that is not an AddContact (presence from another
/// node may come at any time).
pub fn babel_recv_past_contacts(b: &mut Wire<Babel>) -> Babel {
    loop {
        match b.recv() {
            Babel::AddContact { .. } => {}
            other => return other,
        }
    }
}

/// Two accounts users registered through `reg`, friends, logged in through
/// the given listeners (one server, or two nodes of a cluster).
pub fn friends(
    reg: std::net::SocketAddr,
    (x, at_x): (&str, std::net::SocketAddr),
    (y, at_y): (&str, std::net::SocketAddr),
) -> (Wire<Acc>, Wire<Acc>) {
    register(reg, x);
    register(reg, y);
    let mut a = login(at_x, x);
    let mut b = login(at_y, y);
    send(&mut a, Acc::FriendRequest { pseudo: y.into() });
    assert_eq!(a.recv(), Acc::FriendRequestSent { pseudo: y.into() });
    // Across nodes (cluster.rs): stored, then the poke makes y's node deliver it.
    assert_eq!(b.recv(), Acc::FriendRequested { pseudo: x.into() });
    send(&mut b, Acc::AcceptFriend { pseudo: x.into() });
    assert_eq!(a.recv(), Acc::FriendAccepted { pseudo: y.into() });
    (a, b)
}

// ---- voice through the media relay ----

/// A babel caller's listener for its voice connection.
pub fn listen() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

pub fn accept_within(l: &std::net::TcpListener) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "nobody connected");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

pub fn udp() -> (std::net::UdpSocket, u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// The next datagram and where it came from, within the wait.
pub fn datagram(s: &std::net::UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            return (buf[..n].to_vec(), from);
        }
        assert!(Instant::now() < deadline, "no datagram");
    }
}

pub fn media(seq: u16, opus: &[u8]) -> Vec<u8> {
    chinwag_proto::voice::VoicePacket::Media {
        seq,
        timestamp: u32::from(seq) * 960,
        opus,
    }
    .to_bytes()
}

/// A babel user's call to an accounts user through a media relay, answered,
/// with voice already flowing.
pub struct BabelToAccounts {
    /// The relay's address the accounts callee was told.
    pub relay: std::net::SocketAddr,
    /// The babel caller's voice connection (the relay dialled it).
    pub peer: Wire<Babel>,
    /// The accounts callee's voice socket.
    pub voice: std::net::UdpSocket,
    /// The next voice sequence number of the callee.
    pub seq: u16,
    /// The callee's packets the relay carried to the caller before the
    /// voice checked: [`babel_calls_accounts`]'s probes (one when it returns,
    /// more as [`voice_both_ways`] finds them).
    pub probes: u64,
}

/// `babel`, logged in as `caller`, calls `callee` (logged in on `acc`): the
/// callee is told a relay's address (never the caller's end point) and
/// answers; the relay dials the caller, who greets; voice flows.
pub fn babel_calls_accounts(
    babel: &mut Wire<Babel>,
    caller: &str,
    acc: &mut Wire<Acc>,
    callee: &str,
) -> BabelToAccounts {
    let (l, port) = listen();
    babel.send_bytes(
        &Babel::CallRequest {
            contact: callee.into(),
            host: String::new(),
            port,
        }
        .to_bytes(),
    );
    let Acc::IncomingCall {
        pseudo,
        addr,
        port: relay_port,
    } = acc.recv()
    else {
        panic!("143")
    };
    assert_eq!(pseudo, caller);
    assert_ne!(relay_port, port, "never the caller's own end point");
    let relay = std::net::SocketAddr::new(addr.parse().unwrap(), relay_port);
    let (voice, vport) = udp();
    send(
        acc,
        Acc::AnswerCall {
            pseudo: caller.into(),
            addr: String::new(),
            port: vport,
        },
    );
    // The relay dials the caller; the caller, the accepting side, greets first.
    let mut peer = Wire::<Babel>::new(accept_within(&l));
    peer.send_bytes(&Babel::ConnectionEstablished.to_bytes());
    // Voice sent before the relay has read the greeting is dropped (it
    // speaks only after ConnectionEstablished): send until one is there.
    let mut seq = 0u16;
    loop {
        voice.send_to(&media(seq, &PROBE), relay).unwrap();
        seq += 1;
        if peer.try_recv(Duration::from_millis(50)).is_some() {
            break;
        }
        assert!(seq < 200, "the relay never carried voice to the caller");
    }
    BabelToAccounts {
        relay,
        peer,
        voice,
        seq,
        probes: 1,
    }
}

/// `acc`, logged in as `caller`, calls `callee` (logged in on `babel`): the
/// callee is told a relay's address (never the caller's end point) and
/// answers by connecting to it; the relay greets it and the caller hears
/// the answer with the relay's UDP address. No voice has gone yet.
pub fn accounts_calls_babel(
    acc: &mut Wire<Acc>,
    caller: &str,
    babel: &mut Wire<Babel>,
    callee: &str,
) -> BabelToAccounts {
    let (voice, vport) = udp();
    call(acc, callee, vport);
    let (contact, host, port) = match babel.recv() {
        Babel::CallRequest {
            contact,
            host,
            port,
        } => (contact, host, port),
        other => panic!("CallRequest expected, got {other:?}"),
    };
    assert_eq!(contact, caller);
    assert_ne!(port, vport, "never the caller's own end point");
    let at = std::net::SocketAddr::new(host.parse().unwrap(), port);
    let mut peer = Wire::<Babel>::new(TcpStream::connect(at).unwrap());
    assert_eq!(peer.recv(), Babel::ConnectionEstablished);
    let Acc::CallAccepted {
        pseudo,
        addr,
        port: relay_port,
    } = acc.recv()
    else {
        panic!("141")
    };
    assert_eq!(pseudo, callee);
    BabelToAccounts {
        relay: std::net::SocketAddr::new(addr.parse().unwrap(), relay_port),
        peer,
        voice,
        seq: 1,
        probes: 0,
    }
}

/// The Opus bytes of the packets [`babel_calls_accounts`] sends until the
/// relay carries one: on a loaded machine more than one may be on its way
/// when the first arrives, and they arrive after it.
const PROBE: [u8; 2] = [0xfc, 0xff];

/// Five voice packets each way, checked byte for byte (accounts to babel,
/// then babel to accounts, from the relay's socket). Returns the sequence
/// numbers and timestamps the relay gave the babel side's packets.
pub fn voice_both_ways(c: &mut BabelToAccounts) -> Vec<(u16, u32)> {
    use chinwag_proto::voice::VoicePacket;
    for seq in c.seq..c.seq + 5 {
        let opus = [0xfc, seq as u8, 0xaa, 0x55];
        c.voice.send_to(&media(seq, &opus), c.relay).unwrap();
        // Past the probes still on their way (sent before these, so first).
        let got = loop {
            match c.peer.recv() {
                Babel::VoiceData { data } if data == PROBE => c.probes += 1,
                other => break other,
            }
        };
        assert_eq!(
            got,
            Babel::VoiceData {
                data: opus.to_vec()
            }
        );
    }
    c.seq += 5;
    let mut seqs = Vec::new();
    for i in 0..5u8 {
        let opus = vec![0xfc, i, 0x11, 0x22, 0x33];
        c.peer
            .send_bytes(&Babel::VoiceData { data: opus.clone() }.to_bytes());
        let (d, from) = datagram(&c.voice);
        assert_eq!(from, c.relay, "the relay's socket, never the caller's");
        let Ok(VoicePacket::Media {
            seq,
            timestamp,
            opus: got,
        }) = VoicePacket::decode(&d)
        else {
            panic!("a voice packet")
        };
        assert_eq!(got, &opus[..]);
        seqs.push((seq, timestamp));
    }
    seqs
}

/// The /proc directories of a process's threads named `comm` (the test
/// of an idle thread's stack and the benchmark's idle workload).
pub fn tasks_named(pid: u32, comm: &str) -> Vec<std::path::PathBuf> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .map(|t| t.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|name| name.trim_end() == comm)
        })
        .collect()
}

/// "start-end perms ..." of a /proc/PID/maps line.
pub fn map_range(line: &str) -> Option<(u64, u64)> {
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        u64::from_str_radix(lo, 16).ok()?,
        u64::from_str_radix(hi, 16).ok()?,
    ))
}

/// The stack pointer of /proc/PID/task/TID/syscall: "NR ARG1..ARG6 SP PC"
/// while in a system call; "-1 SP PC" (not in one) and "running" give None.
pub fn syscall_sp(text: &str) -> Option<u64> {
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 9 || f[0] == "-1" {
        return None;
    }
    u64::from_str_radix(f[7].strip_prefix("0x")?, 16).ok()
}
