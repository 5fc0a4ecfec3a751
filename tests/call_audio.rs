//! Calls that carry sound, end to end through the C API: two library
//! clients against an in-process chinwagd on 127.0.0.1 place and answer a
//! call the library carries (babel: peer-to-peer TCP; accounts: UDP between
//! the peers, directly or through a seeded lossy forwarder), then both push
//! stepped tones with cw_call_send_pcm and pull with cw_call_recv_pcm in
//! real time, and each checks the other's frequency track. Also: raw
//! payloads on a library call, the first-receive rule, statistics, mute,
//! hang-up and the end of a call with its client, and bad arguments.

mod common;
mod ffi_common;

use std::net::UdpSocket;
use std::ptr;
use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R};
use chinwag::ffi::*;
use common::forwarder::Lossy;
use common::signal::{
    assert_carries, first_channel, stepped_tones, to_channels, DOWN, STEP_MS, UP,
};
use common::{account_email, account_password, befriend};
use ffi_common::{cs, last_error, text, C};

const STEP: Duration = Duration::from_secs(20);
const MS: i32 = 20_000;
const FRAME: usize = CW_FRAME_SAMPLES;
/// Ticks of 20 ms after the signal, for the tail to arrive.
const TAIL_TICKS: usize = 40;

struct CallH(*mut cw_call);
unsafe impl Send for CallH {}
unsafe impl Sync for CallH {}
impl Drop for CallH {
    fn drop(&mut self) {
        unsafe { cw_call_free(self.0) }
    }
}

impl CallH {
    fn channels(&self) -> usize {
        unsafe { cw_call_channels(self.0) as usize }
    }
    fn send_pcm(&self, pcm: &[i16]) -> R {
        unsafe { cw_call_send_pcm(self.0, pcm.as_ptr(), pcm.len() / self.channels()) }
    }
    fn recv_pcm(&self, frames: usize) -> Result<Vec<i16>, R> {
        let mut out = vec![0i16; frames * self.channels()];
        match unsafe { cw_call_recv_pcm(self.0, out.as_mut_ptr(), frames) } {
            R::CW_OK => Ok(out),
            r => Err(r),
        }
    }
    fn stats(&self) -> cw_audio_stats {
        let mut s = cw_audio_stats::default();
        assert_eq!(unsafe { cw_call_stats(self.0, &mut s) }, R::CW_OK);
        s
    }
    fn send_voice(&self, data: &[u8]) -> R {
        unsafe { cw_call_send_voice(self.0, data.as_ptr(), data.len()) }
    }
    fn recv_voice(&self, ms: i32) -> Result<Vec<u8>, R> {
        let mut buf = vec![0u8; CW_BABEL_MAX_VOICE];
        let mut got = 0usize;
        match unsafe { cw_call_recv_voice(self.0, buf.as_mut_ptr(), buf.len(), ms, &mut got) } {
            R::CW_OK => Ok(buf[..got].to_vec()),
            r => Err(r),
        }
    }
}

/// An owned event.
struct Ev(*mut cw_event);
impl Drop for Ev {
    fn drop(&mut self) {
        unsafe { cw_event_free(self.0) }
    }
}
impl Ev {
    fn peer(&self) -> String {
        text(unsafe { cw_event_peer(self.0) }).unwrap_or_default()
    }
    fn port(&self) -> u16 {
        unsafe { cw_event_port(self.0) }
    }
}

/// The next event of kind `want`, skipping others; a failed call fails.
fn wait_for(c: &C, want: K) -> Ev {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut ev = ptr::null_mut();
        let r = unsafe { cw_client_next_event(c.0, left.as_millis() as i32, &mut ev) };
        assert_eq!(r, R::CW_OK, "waiting for {want:?}: {}", last_error());
        let ev = Ev(ev);
        let kind = unsafe { cw_event_kind(ev.0) };
        if kind == want {
            return ev;
        }
        assert_ne!(
            kind,
            K::CW_EVENT_CALL_FAILED,
            "{:?}",
            text(unsafe { cw_event_text(ev.0) })
        );
    }
}

fn take_call(c: &C) -> CallH {
    let ev = wait_for(c, K::CW_EVENT_CALL_ESTABLISHED);
    let mut call = ptr::null_mut();
    assert_eq!(unsafe { cw_event_take_call(ev.0, &mut call) }, R::CW_OK);
    CallH(call)
}

fn babel_client(port: u16, name: &str) -> C {
    let c = C::connect_to("127.0.0.1", port, cw_dialect::CW_DIALECT_BABEL);
    let n = cs(name);
    assert_eq!(unsafe { cw_client_login(c.0, n.as_ptr(), MS) }, R::CW_OK);
    c
}

fn accounts_client(port: u16, name: &str) -> C {
    let c = C::connect_to("127.0.0.1", port, cw_dialect::CW_DIALECT_ACCOUNTS);
    let (e, p) = (cs(&account_email(name)), cs(&account_password(name)));
    let r = unsafe { cw_client_login_password(c.0, e.as_ptr(), p.as_ptr(), MS) };
    assert_eq!(r, R::CW_OK, "{}", last_error());
    c
}

/// `caller` rings `callee_name` for a call the library carries, the callee
/// answers the same way; both take their call. Also returns the caller's
/// voice port as the callee was told it.
fn establish(caller: &C, callee: &C, callee_name: &str) -> (CallH, CallH, u16) {
    let name = cs(callee_name);
    let r = unsafe { cw_client_place_voice_call(caller.0, name.as_ptr(), ptr::null()) };
    assert_eq!(r, R::CW_OK, "{}", last_error());
    let ring = wait_for(callee, K::CW_EVENT_CALL_INCOMING);
    let who = cs(&ring.peer());
    let r = unsafe { cw_client_answer_voice_call(callee.0, who.as_ptr(), ptr::null()) };
    assert_eq!(r, R::CW_OK, "{}", last_error());
    let b = take_call(callee);
    let a = take_call(caller);
    (a, b, ring.port())
}

/// One side of a conversation in real time: every 20 ms push the next
/// 20 ms of `says` (then silence) and pull 20 ms; returns the first
/// channel of what was pulled.
fn talk(call: &CallH, says: &[i16], ticks: usize) -> Vec<i16> {
    let ch = call.channels();
    let pcm = to_channels(says, ch);
    let mut heard = Vec::with_capacity(ticks * FRAME * ch);
    let mut chunk = vec![0i16; FRAME * ch];
    let start = Instant::now();
    for k in 0..ticks {
        chunk.fill(0);
        let from = (k * FRAME * ch).min(pcm.len());
        let to = (from + FRAME * ch).min(pcm.len());
        chunk[..to - from].copy_from_slice(&pcm[from..to]);
        assert_eq!(call.send_pcm(&chunk), R::CW_OK, "{}", last_error());
        heard.extend(call.recv_pcm(FRAME).expect("a full buffer"));
        // Real-time pacing, as an audio callback would run.
        let next = start + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    first_channel(&heard, ch)
}

/// Both sides talk at once; returns what each heard.
fn converse(a: &CallH, b: &CallH) -> (Vec<i16>, Vec<i16>) {
    let (up, down) = (stepped_tones(&UP, STEP_MS), stepped_tones(&DOWN, STEP_MS));
    let ticks = up.len() / FRAME + TAIL_TICKS;
    std::thread::scope(|s| {
        let ta = s.spawn(|| talk(a, &up, ticks));
        let tb = s.spawn(|| talk(b, &down, ticks));
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

/// `recv_pcm` on a call that is over drains, then gives CW_CLOSED.
fn wait_closed(call: &CallH) {
    let deadline = Instant::now() + STEP;
    loop {
        match call.recv_pcm(FRAME) {
            Ok(_) => {}
            Err(R::CW_CLOSED) => return,
            Err(r) => panic!("recv_pcm: {r:?}"),
        }
        assert!(Instant::now() < deadline, "the call did not close");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mean_abs(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / x.len().max(1) as f64
}

#[test]
fn babel_call_carries_pcm_both_ways() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port();
    let (al, bo) = (babel_client(port, "al"), babel_client(port, "bo"));
    let (a, b, _) = establish(&al, &bo, "bo");
    assert_eq!((a.channels(), b.channels()), (2, 2), "babel is stereo");
    assert_eq!(text(unsafe { cw_call_peer(a.0) }).as_deref(), Some("bo"));

    let (al_heard, bo_heard) = converse(&a, &b);
    assert_carries(&bo_heard, &UP, &DOWN, 0.9, "bo hears al");
    assert_carries(&al_heard, &DOWN, &UP, 0.9, "al hears bo");
    // TCP loses nothing: once the last frames have landed, every packet
    // sent was received.
    let deadline = Instant::now() + STEP;
    let (sa, sb) = loop {
        let (sa, sb) = (a.stats(), b.stats());
        if sa.packets_sent == sb.packets_received && sb.packets_sent == sa.packets_received {
            break (sa, sb);
        }
        assert!(Instant::now() < deadline, "packets missing: {sa:?} {sb:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((sa.packets_lost, sb.packets_lost), (0, 0));
    assert_eq!(sa.rtt_ms, -1.0, "babel carries no reports");
    assert!(sa.bytes_sent > 0 && sa.send_bitrate > 0, "{sa:?}");

    // Muted, al's side sends silence: what bo hears at the end is quiet.
    assert_eq!(
        unsafe { cw_call_set_muted(a.0, cw_audio_side::CW_AUDIO_MICROPHONE as i32, 1) },
        R::CW_OK
    );
    let up = stepped_tones(&UP, STEP_MS);
    let bo_heard = std::thread::scope(|s| {
        s.spawn(|| talk(&a, &up, 30));
        s.spawn(|| talk(&b, &[], 30)).join().unwrap()
    });
    let tail = &bo_heard[bo_heard.len() - 10 * FRAME..];
    assert!(
        mean_abs(tail) < 50.0,
        "muted yet audible: {}",
        mean_abs(tail)
    );

    // Bad arguments are refused, not trusted.
    unsafe {
        assert_eq!(
            cw_call_send_pcm(ptr::null(), ptr::null(), 0),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_call_send_pcm(a.0, ptr::null(), 960), R::CW_NULL_ARGUMENT);
        assert_eq!(cw_call_send_pcm(a.0, ptr::null(), 0), R::CW_OK);
        assert_eq!(
            cw_call_recv_pcm(a.0, ptr::null_mut(), CW_PCM_MAX_FRAMES + 1),
            R::CW_INVALID_ARGUMENT
        );
        assert_eq!(cw_call_channels(ptr::null()), 0);
        assert_eq!(cw_call_set_muted(a.0, 7, 1), R::CW_INVALID_ARGUMENT);
        assert_eq!(
            cw_call_set_volume(a.0, cw_audio_side::CW_AUDIO_SPEAKER as i32, 0.5),
            R::CW_OK
        );
        assert_eq!(cw_call_stats(a.0, ptr::null_mut()), R::CW_NULL_ARGUMENT);
    }

    // Hang up: the peer hears of it and its call closes once drained.
    assert_eq!(unsafe { cw_call_hangup(a.0) }, R::CW_OK);
    assert_eq!(wait_for(&bo, K::CW_EVENT_CALL_ENDED).peer(), "al");
    wait_closed(&b);
    assert_eq!(a.send_pcm(&[0; 1920]), R::CW_CLOSED);
}

#[test]
fn accounts_call_carries_pcm_both_ways_over_udp() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    befriend(&srv, "cy", "di");
    let port = srv.accounts_addr().port();
    let (cy, di) = (accounts_client(port, "cy"), accounts_client(port, "di"));
    let (a, b, _) = establish(&cy, &di, "di");
    assert_eq!((a.channels(), b.channels()), (1, 1), "accounts is mono");

    let (cy_heard, di_heard) = converse(&a, &b);
    assert_carries(&di_heard, &UP, &DOWN, 0.9, "di hears cy");
    assert_carries(&cy_heard, &DOWN, &UP, 0.9, "cy hears di");
    let sa = a.stats();
    assert_eq!(sa.packets_lost, 0, "{sa:?}");
    assert!(sa.expected_loss_pct > 0, "FEC is on: {sa:?}");
    // Receiver reports go both ways once a second: the round trip is
    // measured from their echoes.
    let deadline = Instant::now() + STEP;
    while a.stats().rtt_ms < 0.0 || b.stats().rtt_ms < 0.0 {
        assert!(Instant::now() < deadline, "no RTT: {:?}", a.stats());
        let _ = (a.recv_pcm(FRAME), b.recv_pcm(FRAME));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.stats().rtt_ms < 1000.0 && a.stats().remote_loss_pct == 0);

    // Hang up by name on the callee's side: the server tells the caller.
    let cy_name = cs("cy");
    assert_eq!(
        unsafe { cw_client_hangup_call(di.0, cy_name.as_ptr()) },
        R::CW_OK
    );
    assert_eq!(wait_for(&cy, K::CW_EVENT_CALL_ENDED).peer(), "di");
    wait_closed(&a);
    wait_closed(&b);
}

#[test]
fn accounts_call_survives_ten_percent_loss() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    befriend(&srv, "ed", "fa");
    let port = srv.accounts_addr().port();
    let (ed, fa) = (accounts_client(port, "ed"), accounts_client(port, "fa"));
    let lossy = Lossy::start(0.10, 7);
    unsafe {
        assert_eq!(
            cw_client_set_voice_ports(ed.0, 0, lossy.caller_port),
            R::CW_OK
        );
        assert_eq!(
            cw_client_set_voice_ports(fa.0, 0, lossy.callee_port),
            R::CW_OK
        );
    }
    let (a, b, told) = establish(&ed, &fa, "fa");
    assert_eq!(
        told, lossy.caller_port,
        "the signalling names the forwarder"
    );

    let (ed_heard, fa_heard) = converse(&a, &b);
    assert_carries(&fa_heard, &UP, &DOWN, 0.8, "fa hears ed through 10 % loss");
    assert_carries(&ed_heard, &DOWN, &UP, 0.8, "ed hears fa through 10 % loss");
    let (sa, sb) = (a.stats(), b.stats());
    eprintln!("ed: {sa:?}\nfa: {sb:?}");
    assert!(lossy.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(sa.packets_lost > 0 && sb.packets_lost > 0, "loss is seen");
    assert!(
        sa.frames_concealed_fec + sb.frames_concealed_fec > 0,
        "FEC rebuilt lost frames"
    );

    // The caller's client closes: its call ends with it, and the callee
    // hears of it from the server.
    unsafe { cw_client_close(ed.0) };
    wait_closed(&a);
    assert_eq!(wait_for(&fa, K::CW_EVENT_CALL_ENDED).peer(), "ed");
    wait_closed(&b);
}

#[test]
fn accounts_call_takes_raw_payloads_and_ignores_strangers() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    befriend(&srv, "gu", "ha");
    let port = srv.accounts_addr().port();
    let (gu, ha) = (accounts_client(port, "gu"), accounts_client(port, "ha"));
    let (a, b, gu_port) = establish(&gu, &ha, "ha");

    // The application's own codec: the bytes after the magic, as they are.
    assert_eq!(a.send_voice(b"my codec frame"), R::CW_OK);
    let got = loop {
        let p = b.recv_voice(MS).expect("a payload");
        // A library peer also sends receiver reports (kind 2, 23 bytes).
        if !(p.len() == 23 && p[0] == 2) {
            break p;
        }
    };
    assert_eq!(got, b"my codec frame");
    assert_eq!(a.send_voice(&[0u8; CW_VOICE_MAX_FRAME + 1]), R::CW_TOO_LONG);
    // The first receive decided: ha takes voice raw, gu decoded.
    assert_eq!(b.recv_pcm(FRAME), Err(R::CW_INVALID_ARGUMENT));
    assert!(a.recv_pcm(FRAME).is_ok());
    assert_eq!(a.recv_voice(0), Err(R::CW_INVALID_ARGUMENT));

    // Datagrams from anywhere but the peer's socket are dropped (here:
    // well-formed media among them, which would otherwise play).
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk = vec![
        b"CWVC\x01\x00\x07\x00\x00\x00\x00".to_vec(),
        vec![],
        vec![0xff; 3000],
    ];
    junk.extend((0..200u32).map(|i| {
        let mut d = b"CWVC".to_vec();
        d.extend((0..i % 40).map(|k| (k * 37 + i) as u8));
        d
    }));
    for d in &junk {
        let _ = stranger.send_to(d, ("127.0.0.1", gu_port));
    }
    let up = stepped_tones(&UP, STEP_MS);
    let ticks = up.len() / FRAME + TAIL_TICKS;
    let (gu_heard, ha_heard) = std::thread::scope(|s| {
        let ta = s.spawn(|| talk(&a, &[], ticks));
        // ha pushes PCM while taking voice raw: sending is independent.
        let tb = s.spawn(|| talk_raw(&b, &up, ticks));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(ha_heard > 0, "ha got gu's frames raw");
    assert_carries(&gu_heard, &UP, &DOWN, 0.7, "gu hears ha after the junk");
    assert_eq!(unsafe { cw_call_hangup(b.0) }, R::CW_OK);
    assert_eq!(wait_for(&gu, K::CW_EVENT_CALL_ENDED).peer(), "ha");
}

/// With `call_relay = "all"` the server's relay carries the call: an
/// application's own payloads (the magic, then its bytes) pass it as the
/// direct path would, and so does the library's decoded voice.
#[test]
fn accounts_call_through_the_servers_relay_carries_raw_payloads_and_pcm() {
    let srv = chinwagd::Server::start(chinwagd::Config {
        call_relay: "all".into(),
        ..chinwagd::Config::ephemeral()
    })
    .unwrap();
    befriend(&srv, "ik", "jo");
    let port = srv.accounts_addr().port();
    let (ik, jo) = (accounts_client(port, "ik"), accounts_client(port, "jo"));
    let (a, b, _) = establish(&ik, &jo, "jo");
    assert_eq!(srv.relayed_calls(), 1, "the call goes through the relay");

    assert_eq!(a.send_voice(b"my codec frame"), R::CW_OK);
    // The receiver reports keep coming (kind 2, 23 bytes): the payload must
    // come among them within the wait.
    let deadline = Instant::now() + STEP;
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = b
            .recv_voice(left.as_millis() as i32)
            .expect("a payload through the relay");
        if !(p.len() == 23 && p[0] == 2) {
            break p;
        }
    };
    assert_eq!(got, b"my codec frame");
    let up = stepped_tones(&UP, STEP_MS);
    let ticks = up.len() / FRAME + TAIL_TICKS;
    let (ik_heard, jo_heard) = std::thread::scope(|s| {
        let ta = s.spawn(|| talk(&a, &[], ticks));
        let tb = s.spawn(|| talk_raw(&b, &up, ticks));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(jo_heard > 0, "jo got ik's frames raw through the relay");
    assert_carries(&ik_heard, &UP, &DOWN, 0.9, "ik hears jo through the relay");
    assert_eq!(unsafe { cw_call_hangup(b.0) }, R::CW_OK);
    assert_eq!(wait_for(&ik, K::CW_EVENT_CALL_ENDED).peer(), "jo");
}

/// Push PCM in real time and count the raw payloads that arrive meanwhile.
fn talk_raw(call: &CallH, says: &[i16], ticks: usize) -> usize {
    let mut chunk = vec![0i16; FRAME];
    let mut got = 0;
    let start = Instant::now();
    for k in 0..ticks {
        chunk.fill(0);
        let from = (k * FRAME).min(says.len());
        let to = (from + FRAME).min(says.len());
        chunk[..to - from].copy_from_slice(&says[from..to]);
        assert_eq!(call.send_pcm(&chunk), R::CW_OK);
        while call.recv_voice(0).is_ok() {
            got += 1;
        }
        let next = start + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    got
}

#[test]
fn voice_calls_are_refused_where_they_cannot_be() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let chat = C::connect_to(
        "127.0.0.1",
        srv.chatos_addr().port(),
        cw_dialect::CW_DIALECT_CHATOS,
    );
    let bob = cs("bob");
    unsafe {
        assert_eq!(
            cw_client_place_voice_call(chat.0, bob.as_ptr(), ptr::null()),
            R::CW_UNSUPPORTED
        );
        assert_eq!(cw_client_set_voice_ports(chat.0, 0, 0), R::CW_UNSUPPORTED);
    }
    befriend(&srv, "io", "ju");
    let io = accounts_client(srv.accounts_addr().port(), "io");
    unsafe {
        assert_eq!(
            cw_client_answer_voice_call(io.0, bob.as_ptr(), ptr::null()),
            R::CW_NO_SUCH_CALL
        );
        assert_eq!(
            cw_client_place_voice_call(io.0, cs("io").as_ptr(), ptr::null()),
            R::CW_INVALID_ARGUMENT
        );
    }
    // ju is offline: the server answers 142 and the bound socket goes.
    let ju = cs("ju");
    assert_eq!(
        unsafe { cw_client_place_voice_call(io.0, ju.as_ptr(), ptr::null()) },
        R::CW_OK
    );
    let mut ev = ptr::null_mut();
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline);
        assert_eq!(unsafe { cw_client_next_event(io.0, MS, &mut ev) }, R::CW_OK);
        let ev = Ev(ev);
        if unsafe { cw_event_kind(ev.0) } == K::CW_EVENT_CALL_FAILED {
            assert_eq!(ev.peer(), "ju");
            break;
        }
    }
    assert_eq!(
        unsafe { cw_client_hangup_call(io.0, ju.as_ptr()) },
        R::CW_NO_SUCH_CALL
    );
}
