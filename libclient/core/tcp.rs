//! TCP for the dialects that use it (chatos, babel, accounts, and babel's
//! peer-to-peer calls): dialling, whole writes under one lock, the first
//! frame read before a reader exists, and the reader thread that decodes
//! frames for a dialect. It never interprets a frame itself.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::{eintr, Decode, DecodeError, Decoder};
use parking_lot::{Mutex, MutexGuard};

use super::{end, sealed, spawn, Error, ErrorKind, Event, Result, CONNECT_TIMEOUT};

/// A write to the server that makes no progress for this long fails, so a
/// stalled server never hangs the application's thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 8192;

/// Resolve `host` and connect to the first address that answers.
pub(crate) fn dial(host: &str, port: u16, whom: &str) -> Result<TcpStream> {
    let failed = |what: String| Error::new(ErrorKind::ConnectFailed, what);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| failed(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = String::from("no address");
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            // The resolved address only when it says more than host:port.
            Err(e) if addr.to_string() == format!("{host}:{port}") => last = e.to_string(),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(failed(format!(
        "cannot connect to {whom} at {host}:{port}: {last}"
    )))
}

/// Why no first frame came.
pub(crate) enum Silence {
    TimedOut,
    Eof,
    Malformed(DecodeError),
    Io(io::Error),
}

/// Read until the first whole frame, waiting at most `limit`; bytes after
/// it stay in the returned decoder. The read timeout is cleared after.
pub(crate) fn first_frame<T: Decode>(
    sock: &TcpStream,
    limit: Duration,
) -> std::result::Result<(T, Decoder<T>), Silence> {
    let deadline = Instant::now() + limit;
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 512];
    let result = loop {
        match decoder.next_message() {
            Ok(Some(frame)) => break Ok(frame),
            Ok(None) => {}
            Err(e) => break Err(Silence::Malformed(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(Silence::TimedOut);
        }
        match eintr::retry_until(
            deadline,
            |left| sock.set_read_timeout(Some(left)),
            || (&*sock).read(&mut chunk),
        ) {
            Ok(0) => break Err(Silence::Eof),
            Ok(n) => decoder.push(&chunk[..n]),
            // The deadline is checked above.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(Silence::Io(e)),
        }
    };
    sock.set_read_timeout(None).map_err(Silence::Io)?;
    result.map(|frame| (frame, decoder))
}

/// Why a server's greeting (the first frame after connecting) did not
/// come: `waited` says what was awaited, as in "no HelloConnect".
pub(crate) fn greeting_failed(dialect: &str, waited: &str, why: Silence) -> Error {
    let (code, what) = match why {
        Silence::Malformed(e) => (
            ErrorKind::Protocol,
            format!("malformed frame from server: {e}"),
        ),
        Silence::TimedOut => (ErrorKind::ConnectFailed, format!("{waited} in time")),
        Silence::Eof => (
            ErrorKind::ConnectFailed,
            "the server closed the connection".into(),
        ),
        Silence::Io(e) => (ErrorKind::ConnectFailed, format!("reading: {e}")),
    };
    Error::new(code, format!("{dialect} handshake: {what}"))
}

/// The client's connection to its server.
pub(crate) struct Tcp {
    sock: TcpStream,
    server: SocketAddr,
    write_lock: Mutex<()>,
    /// A write making no progress this long fails ([`WRITE_TIMEOUT`]).
    write_timeout: Duration,
}

impl Tcp {
    pub(crate) fn connect(host: &str, port: u16) -> Result<Tcp> {
        if host.is_empty() || port == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "empty host or port 0",
            ));
        }
        let sock = dial(host, port, "the server")?;
        let io_err = |e: io::Error| Error::new(ErrorKind::Io, format!("socket setup: {e}"));
        let server = sock.peer_addr().map_err(io_err)?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(io_err)?;
        Ok(Tcp {
            sock,
            server,
            write_lock: Mutex::new(()),
            write_timeout: WRITE_TIMEOUT,
        })
    }

    pub(crate) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    /// Hold this while writing with `write_locked`, to do something in the
    /// same critical section as the write (accounts queues its waiter).
    pub(crate) fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock()
    }

    /// Write bytes whole.
    pub(crate) fn write(&self, core: &super::Core, bytes: &[u8]) -> Result<()> {
        let _g = self.write_lock.lock();
        self.write_locked(core, bytes)
    }

    /// Write bytes whole; the caller holds `lock_writes`.
    pub(crate) fn write_locked(&self, core: &super::Core, bytes: &[u8]) -> Result<()> {
        if core.is_dead() {
            return Err(Error::closed());
        }
        // Signals neither fail the write nor stretch its time-out.
        eintr::write_all_within(
            self.write_timeout,
            |left| self.sock.set_write_timeout(Some(left)),
            |b| (&self.sock).write(b),
            bytes,
        )
        .map_err(|e| {
            if core.is_dead() {
                Error::closed()
            } else {
                Error::new(ErrorKind::Io, format!("write to server failed: {e}"))
            }
        })
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// A dialect whose server sends frames over TCP.
pub(crate) trait Frames: sealed::Protocol + Sized {
    type Frame: Decode + Send + 'static;
    /// One frame from the server. `Err` ends the client with a protocol error.
    fn frame(self: &Arc<Self>, frame: Self::Frame) -> std::result::Result<(), String>;
    /// Every byte received so far has been decoded: nothing is half read.
    fn drained(&self) {}
}

/// Start the reader thread of `sock`, beginning with what the greeting
/// left in `decoder`.
pub(crate) fn start_reader<P: Frames>(
    p: &Arc<P>,
    sock: &TcpStream,
    decoder: Decoder<P::Frame>,
) -> Result<()> {
    let sock = sock
        .try_clone()
        .map_err(|e| Error::new(ErrorKind::Io, format!("socket setup: {e}")))?;
    spawn(p, "chinwag-reader", move |p| read_frames(p, sock, decoder))
}

fn read_frames<P: Frames>(p: &Arc<P>, mut sock: TcpStream, mut decoder: Decoder<P::Frame>) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let terminal = 'read: loop {
        loop {
            match decoder.next_message() {
                Ok(Some(frame)) => {
                    if let Err(why) = p.frame(frame) {
                        break 'read Event::Error {
                            code: ErrorKind::Protocol,
                            text: why,
                        };
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    break 'read Event::Error {
                        code: ErrorKind::Protocol,
                        text: format!("malformed frame from server: {e}"),
                    }
                }
            }
        }
        if decoder.buffered() == 0 {
            p.drained();
        }
        match eintr::retry(|| sock.read(&mut chunk)) {
            Ok(0) => {
                break Event::Disconnected {
                    code: ErrorKind::Closed,
                    text: "the server closed the connection".into(),
                }
            }
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) => {
                break Event::Disconnected {
                    code: ErrorKind::Io,
                    text: format!("connection to the server failed: {e}"),
                }
            }
        }
        p.core().checkpoint();
    };
    end(&**p, terminal);
}

/// Signals for the tests (tests/common/storm.rs, shared with the
/// integration tests).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/storm.rs"]
mod storm;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    use storm::{catch_without_restart, pester};

    /// A write to a server that never reads fails after the write time-out
    /// even while signals keep interrupting it (SIGUSR2, caught without
    /// SA_RESTART, sent only to the writing thread): std's `write_all`
    /// retried each EINTR with the socket's whole time-out again, so the
    /// application's call hung for as long as the signals lasted.
    #[test]
    fn a_stalled_write_fails_in_time_under_a_stream_of_signals() {
        // No other test sends SIGUSR2.
        catch_without_restart(libc::SIGUSR2);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_server, _) = l.accept().unwrap();
        let limit = Duration::from_millis(300);
        sock.set_write_timeout(Some(limit)).unwrap();
        let tcp = Arc::new(Tcp {
            server: sock.peer_addr().unwrap(),
            sock,
            write_lock: Mutex::new(()),
            write_timeout: limit,
        });
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let writer = {
            let tcp = tcp.clone();
            std::thread::spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
                // More than both sockets' buffers can hold.
                tcp.write(&super::super::Core::new(8), &vec![7u8; 64 << 20])
            })
        };
        let tid = tid_rx.recv().unwrap();
        // Signals until the write ends: with the bug, it ended only once
        // they stopped (here after `storm`). Compared with the storm's
        // length, not a few seconds: on a loaded machine the 64 MiB and
        // the thread's turns took 4.8 s once.
        let storm = Duration::from_secs(30);
        pester(tid, libc::SIGUSR2, storm, || !writer.is_finished());
        let took = started.elapsed();
        let e = writer.join().unwrap().unwrap_err();
        assert_eq!(e.code, ErrorKind::Io, "{e:?}");
        assert!(
            took < storm,
            "a 300 ms write time-out took {took:?}: as long as the signals lasted"
        );
    }
}
