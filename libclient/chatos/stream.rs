//! A private connection once ESTABLISHED: raw bytes relayed by the server.
//! Owns its socket; it reaches the client only weakly, to send
//! CLOSE_CONNECTION, so a stream never keeps a freed client alive.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Weak;
use std::time::{Duration, Instant};

use chinwag_proto::eintr;

use parking_lot::Mutex;

use super::Chatos;
use crate::core::{Error, ErrorKind, Result};

/// SO_RCVTIMEO cannot be zero, so a poll waits this long at most.
const POLL_WAIT: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Ends {
    write_shut: bool,
    read_eof: bool,
    closed: bool,
}

/// Both directions may be used at once from different threads; reads are
/// serialised with each other, and so are writes.
pub struct Stream {
    sock: TcpStream,
    peer: String,
    connect_id: i64,
    client: Weak<Chatos>,
    read_lock: Mutex<()>,
    write_lock: Mutex<()>,
    ends: Mutex<Ends>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(crate) fn new(
        sock: TcpStream,
        peer: String,
        connect_id: i64,
        client: Weak<Chatos>,
    ) -> Self {
        Stream {
            sock,
            peer,
            connect_id,
            client,
            read_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            ends: Mutex::new(Ends::default()),
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn connect_id(&self) -> i64 {
        self.connect_id
    }

    fn closed(&self) -> Error {
        Error::new(ErrorKind::Closed, "the private connection is closed")
    }

    /// Read what is available into `buf`, waiting at most `timeout`
    /// (`None`: without limit, zero: poll). The peer's end of stream is
    /// `CW_CLOSED`; a read never returns `Ok(0)`.
    pub fn read(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "zero-length buffer"));
        }
        if self.ends.lock().closed {
            return Err(self.closed());
        }
        let _g = self.read_lock.lock();
        // A signal restarts nothing: the wait after one is what is left
        // of `timeout`, not all of it again.
        let read = match timeout {
            Some(t) => eintr::retry_until(
                Instant::now() + t.max(POLL_WAIT),
                |left| self.sock.set_read_timeout(Some(left)),
                || (&self.sock).read(buf),
            ),
            None => self
                .sock
                .set_read_timeout(None)
                .and_then(|()| eintr::retry(|| (&self.sock).read(buf))),
        };
        match read {
            Ok(0) => {
                self.ends.lock().read_eof = true;
                Err(Error::new(ErrorKind::Closed, "the peer finished sending"))
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Error::new(
                    ErrorKind::Timeout,
                    "nothing to read before the time limit",
                ))
            }
            Err(e) => {
                if self.ends.lock().closed {
                    return Err(self.closed());
                }
                Err(Error::new(ErrorKind::Io, format!("read failed: {e}")))
            }
        }
    }

    /// Write all of `data`, blocking until the relay has taken it.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        {
            let ends = self.ends.lock();
            if ends.closed || ends.write_shut {
                return Err(self.closed());
            }
        }
        let _g = self.write_lock.lock();
        (&self.sock).write_all(data).map_err(|e| {
            if self.ends.lock().closed {
                self.closed()
            } else {
                Error::new(ErrorKind::Io, format!("write failed: {e}"))
            }
        })?;
        (&self.sock)
            .flush()
            .map_err(|e| Error::new(ErrorKind::Io, format!("{e}")))
    }

    /// Tell the peer nothing more will be written; reading goes on.
    pub fn shutdown_write(&self) -> Result<()> {
        let mut ends = self.ends.lock();
        if ends.closed {
            return Err(self.closed());
        }
        if !ends.write_shut {
            ends.write_shut = true;
            let _g = self.write_lock.lock();
            self.sock
                .shutdown(Shutdown::Write)
                .map_err(|e| Error::new(ErrorKind::Io, format!("shutdown failed: {e}")))?;
        }
        Ok(())
    }

    /// Close both directions. When the conversation has not ended in both
    /// directions, the server is asked to tear the connection down
    /// (CLOSE_CONNECTION), so the peer learns of it as an event.
    /// Idempotent; blocked readers and writers wake with `CW_CLOSED`.
    pub fn close(&self) {
        let finished = {
            let mut ends = self.ends.lock();
            if ends.closed {
                return;
            }
            ends.closed = true;
            ends.write_shut && ends.read_eof
        };
        if !finished {
            if let Some(client) = self.client.upgrade() {
                if let Err(e) = client.close_private(self.connect_id, &self.peer) {
                    log::debug!("CLOSE_CONNECTION not sent: {}", e.message);
                }
            }
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}
