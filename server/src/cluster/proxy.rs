//! chatos private connections between nodes (docs/scaling.md): a
//! LOGIN_PRIVATE whose connect id another node issued is proxied to that
//! node's `cluster_addr`, which takes the proxied socket as that end of
//! the relay.
//!
//! The handshake, from the proxying node, before any relayed byte:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `CWP1` |
//! | 8 | connect id (big-endian) |
//! | 16 | the client's address as the proxying node saw it (IPv6, IPv4-mapped) |
//! | 8 | Unix time in seconds (big-endian) |
//! | 1 + n | the proxying node's name (length, bytes; at most 64) |
//! | 32 | HMAC-SHA256 of all the above, keyed with the cluster secret |
//!
//! No answer follows: the issuing node goes on as with a local
//! LOGIN_PRIVATE (ESTABLISHED, then the relay), or closes the socket. A
//! handshake older or newer than [`SKEW`] is refused; replaying a fresh
//! one gains nothing, a connect id being single use.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::metrics::DropReason;
use crate::Shared;

const MAGIC: &[u8; 4] = b"CWP1";
const MAC_LEN: usize = 32;
/// The longest node name (config.rs: at most 64).
const MAX_NODE: usize = 64;
/// A handshake's clock may differ from this node's by this much.
pub const SKEW: Duration = Duration::from_secs(60);
/// Time to send a whole handshake, either way.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound handshakes being read at once; more are closed at accept.
pub const MAX_HANDSHAKES: usize = 64;
/// The shortest secret accepted.
pub const MIN_SECRET: usize = 16;

/// What a handshake says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub connect_id: i64,
    pub ip: IpAddr,
    pub node: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The handshake's bytes, signed at Unix time `at`.
pub fn encode(secret: &[u8], hello: &Hello, at: u64) -> Vec<u8> {
    let node = hello.node.as_bytes();
    let node = &node[..node.len().min(MAX_NODE)];
    let mut out = Vec::with_capacity(4 + 8 + 16 + 8 + 1 + node.len() + MAC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&hello.connect_id.to_be_bytes());
    out.extend_from_slice(&v6(hello.ip));
    out.extend_from_slice(&at.to_be_bytes());
    out.push(node.len() as u8);
    out.extend_from_slice(node);
    let mut m = mac(secret);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Why an inbound handshake was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Io(io::ErrorKind),
    Magic,
    NodeName,
    Mac,
    Stale,
}

/// Read and check one handshake from `r` (the caller bounds the time).
/// Reads exactly the handshake's bytes: what follows is the client's.
pub fn read(r: &mut impl Read, secret: &[u8], now: u64) -> Result<Hello, Refused> {
    let io = |e: io::Error| Refused::Io(e.kind());
    let mut head = [0u8; 4 + 8 + 16 + 8 + 1];
    r.read_exact(&mut head).map_err(io)?;
    if &head[..4] != MAGIC {
        return Err(Refused::Magic);
    }
    let len = head[36] as usize;
    if len == 0 || len > MAX_NODE {
        return Err(Refused::NodeName);
    }
    let mut node = vec![0u8; len];
    r.read_exact(&mut node).map_err(io)?;
    let mut tag = [0u8; MAC_LEN];
    r.read_exact(&mut tag).map_err(io)?;
    let mut m = mac(secret);
    m.update(&head);
    m.update(&node);
    // Constant-time comparison.
    m.verify_slice(&tag).map_err(|_| Refused::Mac)?;
    let at = u64::from_be_bytes(head[28..36].try_into().expect("8 bytes"));
    if at.abs_diff(now) > SKEW.as_secs() {
        return Err(Refused::Stale);
    }
    let id = i64::from_be_bytes(head[4..12].try_into().expect("8 bytes"));
    let ip6 = Ipv6Addr::from(<[u8; 16]>::try_from(&head[12..28]).expect("16 bytes"));
    let ip = match ip6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip6),
    };
    let node = String::from_utf8(node).map_err(|_| Refused::NodeName)?;
    Ok(Hello {
        connect_id: id,
        ip,
        node,
    })
}

/// Dial `addr` (within `timeout`) and send the handshake for `hello`.
pub fn dial(
    addr: SocketAddr,
    secret: &[u8],
    hello: &Hello,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    (&s).write_all(&encode(secret, hello, now_secs()))?;
    s.set_write_timeout(None)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Accept node-to-node connections on `listener` until `stop`: each reads
/// one handshake (within [`HANDSHAKE_TIMEOUT`]) and then serves as an end
/// of a private connection, on a thread of the thread budget. A bad
/// handshake is dropped and counted; so is a connection refused a thread
/// (closed at once, `thread_budget`).
pub fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    secret: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = chinwag_proto::eintr::retry(|| listener.accept().map(|(s, _)| s));
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = conn else { continue };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
            busy.fetch_sub(1, Ordering::SeqCst);
            shared.hub.metrics().dropped(DropReason::ProxyHandshake);
            continue;
        }
        let (shared2, secret, busy2) = (shared.clone(), secret.clone(), busy.clone());
        let builder = std::thread::Builder::new()
            .name("cw-proxy-in".into())
            .stack_size(crate::net::CONN_STACK);
        // Refused, the closure is dropped with the stream: closed.
        let spawned = shared
            .budget
            .spawn(builder, move || serve(stream, &shared2, &secret, &busy2));
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::SeqCst);
            shared.hub.metrics().dropped(DropReason::ThreadBudget);
            log::warn!("cluster: a proxied connection closed: {e}");
        }
    }
}

fn serve(stream: TcpStream, shared: &Arc<Shared>, secret: &[u8], busy: &AtomicUsize) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let hello = read(&mut &stream, secret, now_secs());
    busy.fetch_sub(1, Ordering::SeqCst);
    let hello = match hello {
        Ok(h) => h,
        Err(why) => {
            log::warn!("cluster: a bad proxy handshake from {peer:?}: {why:?}");
            shared.hub.metrics().dropped(DropReason::ProxyHandshake);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let label = format!("proxy from {} for {}", hello.node, hello.ip);
    let stream = Arc::new(stream);
    // As for a local end, this thread pumps one direction (from the
    // proxying node) and returns when that one ends; the other direction,
    // pumped into this socket by the other end's thread, carries on until
    // it ends too (half-close). The socket closes with its last handle.
    if let Err(crate::front::End::Protocol(why)) =
        crate::front::chatos::private_end(&stream, shared, hello.connect_id, hello.ip, &label, &[])
    {
        log::info!("{label}: {why}");
        let _ = stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    fn hello() -> Hello {
        Hello {
            connect_id: 0x0201_0203_0405_0607,
            ip: "127.0.0.9".parse().unwrap(),
            node: "b".into(),
        }
    }

    #[test]
    fn a_handshake_round_trips_and_reads_exactly_its_bytes() {
        let mut b = encode(SECRET, &hello(), 1000);
        b.extend_from_slice(b"client bytes");
        let mut r = &b[..];
        assert_eq!(read(&mut r, SECRET, 1000 + 59), Ok(hello()));
        assert_eq!(r, b"client bytes");
    }

    #[test]
    fn a_forged_stale_or_short_handshake_is_refused() {
        let b = encode(SECRET, &hello(), 1000);
        assert_eq!(
            read(&mut &b[..], b"another secret!!", 1000),
            Err(Refused::Mac)
        );
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(read(&mut &bad[..], SECRET, 1000).is_err(), "byte {i}");
        }
        assert_eq!(read(&mut &b[..], SECRET, 1061), Err(Refused::Stale));
        assert_eq!(read(&mut &b[..], SECRET, 939), Err(Refused::Stale));
        for n in 0..b.len() {
            assert!(read(&mut &b[..n], SECRET, 1000).is_err(), "prefix {n}");
        }
    }
}
