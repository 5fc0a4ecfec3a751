//! The babel workloads (seed 001): a login with its contact-list fan-out
//! (N users online, the N+1th logs in: its own list, and everyone's
//! AddContact), and call set-up latency (CallRequest to the callee, its
//! CallRefused back), beside a direct loopback hop measured in the same run.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame};
use mio::{Events, Interest, Poll, Token};

use crate::hist::Hist;
use crate::refs;
use crate::report::{Report, Unit};
use crate::server::Start;
use crate::Ctx;

const WAIT: Duration = Duration::from_secs(30);

/// A babel client on a blocking socket (the measured ones).
struct Blocking {
    s: TcpStream,
    dec: Decoder,
}

impl Blocking {
    /// Connect and read the server's HelloConnect.
    fn connect(addr: SocketAddr) -> Result<Blocking, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("babel connect: {e}"))?;
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(WAIT)).ok();
        let mut c = Blocking {
            s,
            dec: Decoder::new(),
        };
        match c.recv()? {
            Frame::HelloConnect => Ok(c),
            other => Err(format!("babel: expected HelloConnect, got {other:?}")),
        }
    }

    fn send(&mut self, f: &Frame) -> Result<(), String> {
        self.s
            .write_all(&f.to_bytes())
            .map_err(|e| format!("babel send: {e}"))
    }

    fn recv(&mut self) -> Result<Frame, String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.dec.next_frame().map_err(|e| format!("babel: {e}"))? {
                return Ok(f);
            }
            let n = crate::wait::read(&self.s, &mut buf).map_err(|e| format!("babel recv: {e}"))?;
            if n == 0 {
                return Err("babel: the server closed the connection".into());
            }
            self.dec.push(&buf[..n]);
        }
    }

    fn login(addr: SocketAddr, name: &str) -> Result<(Blocking, Vec<String>), String> {
        let mut c = Blocking::connect(addr)?;
        c.send(&Frame::Login { name: name.into() })?;
        match c.recv()? {
            Frame::LoginSuccess => {}
            other => return Err(format!("babel login {name}: {other:?}")),
        }
        match c.recv()? {
            Frame::AddContact { contacts } => Ok((c, contacts)),
            other => Err(format!(
                "babel login {name}: expected the contact list, got {other:?}"
            )),
        }
    }
}

/// The N users already online: non-blocking sockets on one poll, whose
/// AddContact frames are counted per name.
struct Crowd {
    poll: Poll,
    conns: Vec<(mio::net::TcpStream, Decoder)>,
    buf: Vec<u8>,
}

impl Crowd {
    /// Log `names` in, `window` at a time; each waits for HelloConnect,
    /// then LoginSuccess. Everything else they receive is read and dropped.
    fn login(addr: SocketAddr, names: &[String], window: usize) -> Result<Crowd, String> {
        let mut crowd = Crowd {
            poll: Poll::new().map_err(|e| e.to_string())?,
            conns: Vec::with_capacity(names.len()),
            buf: vec![0u8; 64 * 1024],
        };
        let mut state = vec![0u8; names.len()]; // 0 greeting, 1 logging in, 2 in
        let (mut started, mut done, mut in_flight) = (0usize, 0usize, 0usize);
        let mut events = Events::with_capacity(1024);
        let deadline = Instant::now() + Duration::from_secs(120);
        while done < names.len() {
            while in_flight < window.max(1) && started < names.len() {
                let mut s = mio::net::TcpStream::connect(addr)
                    .map_err(|e| format!("babel connect: {e}"))?;
                s.set_nodelay(true).ok();
                crowd
                    .poll
                    .registry()
                    .register(&mut s, Token(started), Interest::READABLE)
                    .map_err(|e| e.to_string())?;
                crowd.conns.push((s, Decoder::new()));
                started += 1;
                in_flight += 1;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "babel: {done} of {} logged in after 120 s",
                    names.len()
                ));
            }
            crate::wait::poll(
                &mut crowd.poll,
                &mut events,
                Some(Duration::from_millis(100)),
            )
            .map_err(|e| e.to_string())?;
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for i in ready {
                let frames = crowd.read(i)?;
                for f in frames {
                    match (state[i], f) {
                        (0, Frame::HelloConnect) => {
                            state[i] = 1;
                            let bytes = Frame::Login {
                                name: names[i].clone(),
                            }
                            .to_bytes();
                            // A fresh socket's buffer takes a login at once.
                            crowd.conns[i]
                                .0
                                .write_all(&bytes)
                                .map_err(|e| format!("babel login: {e}"))?;
                        }
                        (1, Frame::LoginSuccess) => {
                            state[i] = 2;
                            done += 1;
                            in_flight -= 1;
                        }
                        (1, Frame::LoginFailed { reason }) => {
                            return Err(format!("babel login {}: {reason}", names[i]))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(crowd)
    }

    /// Every frame readable now on connection `i`.
    fn read(&mut self, i: usize) -> Result<Vec<Frame>, String> {
        let (s, dec) = &mut self.conns[i];
        let mut out = Vec::new();
        loop {
            match s.read(&mut self.buf) {
                Ok(0) => return Err("babel: the server closed a connection".into()),
                Ok(n) => dec.push(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("babel recv: {e}")),
            }
        }
        while let Some(f) = dec.next_frame().map_err(|e| format!("babel: {e}"))? {
            out.push(f);
        }
        Ok(out)
    }

    /// Read until every member saw `name` added (or `WAIT` passes); the
    /// time the last one did, from `since`.
    fn await_added(&mut self, name: &str, since: Instant) -> Result<Duration, String> {
        let mut missing = self.conns.len();
        let mut got = vec![false; self.conns.len()];
        let mut events = Events::with_capacity(1024);
        let mut last = since;
        let deadline = Instant::now() + WAIT;
        while missing > 0 {
            if Instant::now() > deadline {
                return Err(format!("babel: {missing} users never heard of {name}"));
            }
            crate::wait::poll(
                &mut self.poll,
                &mut events,
                Some(Duration::from_millis(100)),
            )
            .map_err(|e| e.to_string())?;
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for i in ready {
                let at = Instant::now();
                for f in self.read(i)? {
                    if let Frame::AddContact { contacts } = f {
                        if !got[i] && contacts.iter().any(|c| c == name) {
                            got[i] = true;
                            missing -= 1;
                            last = at;
                        }
                    }
                }
            }
        }
        Ok(last.duration_since(since))
    }
}

/// `babel-login`: `online` users in, then `newcomers` log in one after
/// another: each one's own list (LoginSuccess and AddContact of everyone),
/// and the time until all the others have its AddContact.
pub fn login_wl(ctx: &Ctx, online: usize, newcomers: usize) -> Result<Report, String> {
    let mut r = Report::new("babel-login");
    ctx.check_fds(online + newcomers)?;
    r.param("online", online);
    r.param("newcomers", newcomers);
    let mut target = ctx.spec.start_with(Start::default())?;
    let addr = target
        .babel
        .ok_or("the babel listener is unknown (a spawned server is needed)")?;
    let names = ctx.names("bb", online);
    let t = Instant::now();
    let mut crowd = Crowd::login(addr, &names, ctx.login_window)?;
    let crowd_s = t.elapsed().as_secs_f64();
    let meter = crate::Meter::start(&target);
    let (mut own, mut fan) = (Hist::default(), Hist::default());
    let mut kept = Vec::new();
    for k in 0..newcomers {
        let name = format!("nb{}-{k}", ctx.run_id);
        let mut c = Blocking::connect(addr)?;
        let t0 = Instant::now();
        c.send(&Frame::Login { name: name.clone() })?;
        match c.recv()? {
            Frame::LoginSuccess => {}
            other => return Err(format!("babel login {name}: {other:?}")),
        }
        let list = match c.recv()? {
            Frame::AddContact { contacts } => contacts,
            other => return Err(format!("babel {name}: expected the list, got {other:?}")),
        };
        own.record(t0.elapsed().as_nanos() as u64);
        if list.len() != online + k {
            r.problems.push(format!(
                "{name} was given {} contacts, {} were online",
                list.len(),
                online + k
            ));
        }
        fan.record(crowd.await_added(&name, t0)?.as_nanos() as u64);
        kept.push(c); // the earlier newcomers stay online (their frames are not read)
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    r.fig(
        "own_list_p50_ms",
        "Login to own contact list p50",
        ms(own.quantile(0.5)),
        Unit::Ms,
        None,
    );
    r.fig(
        "own_list_p99_ms",
        "Login to own contact list p99",
        ms(own.quantile(0.99)),
        Unit::Ms,
        None,
    );
    r.fig(
        "fanout_p50_ms",
        "Login to the last AddContact at the others, p50",
        ms(fan.quantile(0.5)),
        Unit::Ms,
        None,
    );
    r.fig(
        "fanout_p99_ms",
        "Login to the last AddContact at the others, p99",
        ms(fan.quantile(0.99)),
        Unit::Ms,
        None,
    );
    r.fig(
        "crowd_login_s",
        "time to log the first users in",
        crowd_s,
        Unit::Secs,
        None,
    );
    r.row("own_list_p50_ms", None);
    r.row("fanout_p50_ms", None);
    r.row("fanout_p99_ms", None);
    meter.finish(&target, &mut r);
    drop(kept);
    drop(crowd);
    target.stop();
    Ok(r)
}

/// `babel-call`: a caller rings a callee (CallRequest, relayed by the
/// server with the caller's address), the callee refuses (CallRefused,
/// relayed back); `calls` times, 1 ms apart, with `online` other users in.
pub fn call_wl(ctx: &Ctx, online: usize, calls: usize) -> Result<Report, String> {
    let mut r = Report::new("babel-call");
    r.param("calls", calls);
    r.param("online", online);
    let mut target = ctx.spec.start_with(Start::default())?;
    let addr = target
        .babel
        .ok_or("the babel listener is unknown (a spawned server is needed)")?;
    let crowd = Crowd::login(addr, &ctx.names("bc", online), ctx.login_window)?;
    let (caller_name, callee_name) = (format!("ca{}", ctx.run_id), format!("ce{}", ctx.run_id));
    let (mut caller, _) = Blocking::login(addr, &caller_name)?;
    let (mut callee, _) = Blocking::login(addr, &callee_name)?;
    let meter = crate::Meter::start(&target);
    let probe = refs::OneWayProbe::start(Duration::from_millis(1))
        .map_err(|e| format!("reference: {e}"))?;
    let (mut ring, mut refuse) = (Hist::default(), Hist::default());
    let mut next = Instant::now();
    for i in 0..calls {
        next += Duration::from_millis(1);
        refs::sleep_until(next);
        let t0 = Instant::now();
        caller.send(&Frame::CallRequest {
            contact: callee_name.clone(),
            host: String::new(),
            port: 40_000,
        })?;
        loop {
            match callee.recv()? {
                Frame::CallRequest { contact, .. } if contact == caller_name => break,
                Frame::AddContact { .. } | Frame::DelContact { .. } => {}
                other => return Err(format!("babel callee: {other:?}")),
            }
        }
        let t1 = Instant::now();
        callee.send(&Frame::CallRefused {
            contact: caller_name.clone(),
        })?;
        loop {
            match caller.recv()? {
                Frame::CallRefused { contact } if contact == callee_name => break,
                Frame::AddContact { .. } | Frame::DelContact { .. } => {}
                other => return Err(format!("babel caller: {other:?}")),
            }
        }
        if i >= calls / 10 {
            ring.record(t1.duration_since(t0).as_nanos() as u64);
            refuse.record(t1.elapsed().as_nanos() as u64);
        }
    }
    let reference = probe.finish().map_err(|e| format!("reference: {e}"))?;
    let us = |ns: u64| ns as f64 / 1e3;
    r.fig(
        "ring_p50_us",
        "CallRequest to the callee, p50",
        us(ring.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "ring_p99_us",
        "CallRequest to the callee, p99",
        us(ring.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.fig(
        "refuse_p50_us",
        "CallRefused back to the caller, p50",
        us(refuse.quantile(0.5)),
        Unit::Us,
        None,
    );
    crate::one_way_figures(&mut r, &reference);
    r.row("ring_p50_us", Some("ref_one_way_p50_us"));
    r.row("ring_p99_us", Some("ref_one_way_p99_us"));
    meter.finish(&target, &mut r);
    drop(crowd);
    target.stop();
    Ok(r)
}
