//! The `slow` workload: NATS-style slow consumer. 50 clients read everything
//! one of them broadcasts at 100 texts a second; the run is made twice,
//! without and then with one more client that has a small receive buffer
//! and never reads. Reports the fast receivers' latency in both runs, and
//! whether the server cut the slow one.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chinwag_proto::chatos::Command;

/// A logged-in chatos client that reads its login answer and nothing more.
pub struct SlowConsumer {
    sock: TcpStream,
}

impl SlowConsumer {
    pub fn login(addr: SocketAddr, name: &str, rcvbuf: usize) -> Result<SlowConsumer, String> {
        let e = |e: std::io::Error| format!("slow consumer: {e}");
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .map_err(e)?;
        // Before connecting, so the window it advertises stays small.
        s.set_recv_buffer_size(rcvbuf).map_err(e)?;
        s.connect_timeout(&addr.into(), Duration::from_secs(5))
            .map_err(e)?;
        let mut sock: TcpStream = s.into();
        sock.set_nodelay(true).map_err(e)?;
        sock.write_all(&Command::Login { login: name.into() }.to_bytes())
            .map_err(e)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(e)?;
        let mut one = [0u8; 1];
        crate::wait::read_exact(&sock, &mut one).map_err(e)?;
        if one != [1] {
            return Err(format!("slow consumer {name}: login refused"));
        }
        Ok(SlowConsumer { sock })
    }

    /// Read what the server left queued: Ok(bytes) once it has closed the
    /// connection, Err if it is still open after `wait`.
    pub fn drain_to_end(self, wait: Duration) -> Result<u64, u64> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(n);
            }
            let _ = self.sock.set_read_timeout(Some(left));
            match crate::wait::read(&self.sock, &mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(n),
            }
        }
    }
}
