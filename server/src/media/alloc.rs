//! One relayed call: its two legs, the UDP socket of its accounts legs, and
//! what a unit of voice becomes on its way from one leg to the other (the
//! re-framing between accounts voice packets and babel VoiceData, with no
//! transcoding). Only the hub opens, answers and closes an allocation
//! (through `Relay`); the workers and the babel leg threads only read its
//! routing and move packets.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chinwag_proto::accounts::{decode_voice, MAX_VOICE};
use chinwag_proto::babel::Frame;
use chinwag_proto::voice::{opus_samples, VoicePacket};
use parking_lot::{Mutex, RwLock};

use crate::hub::{CallId, Side};
use crate::metrics::RelayDrop;
use crate::net::Outbound;

/// Samples per channel of a packet whose TOC byte does not tell (20 ms at
/// 48 kHz, babel's frame: NOTES.md).
const DEFAULT_SAMPLES: u32 = 960;

/// What kind of party a leg carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// accounts: datagrams on the call's UDP socket.
    Udp,
    /// A babel caller, which the relay dials at this address.
    Dial(SocketAddr),
    /// A babel callee, which connects to the relay from this address
    /// (unspecified: a user of another node, whose address its node tells;
    /// then kept in the leg's `peer`).
    Accept(IpAddr),
}

/// The connection of a babel leg, once it is up.
pub struct BabelEnd {
    pub out: Arc<Outbound>,
    pub stream: Arc<std::net::TcpStream>,
}

/// How units are framed on their way *to* a leg.
#[derive(Debug, Default)]
struct Framing {
    /// Towards accounts (from babel): the relay's own numbering.
    next_seq: u16,
    timestamp: u32,
    /// Towards babel (from accounts): the newest seq sent, so an older
    /// packet is dropped (babel numbers packets in arrival order).
    last_seq: Option<u16>,
}

pub struct Leg {
    pub kind: Kind,
    /// accounts: the only address datagrams are taken from and sent to;
    /// a babel callee of another node: the address it connects from.
    pub peer: RwLock<Option<SocketAddr>>,
    /// babel: the connection, once it is up.
    pub babel: Mutex<Option<BabelEnd>>,
    framing: Mutex<Framing>,
}

impl Leg {
    pub fn new(kind: Kind, peer: Option<SocketAddr>, seq: u16, timestamp: u32) -> Leg {
        Leg {
            kind,
            peer: RwLock::new(peer.map(canonical)),
            babel: Mutex::new(None),
            framing: Mutex::new(Framing {
                next_seq: seq,
                timestamp,
                last_seq: None,
            }),
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so both spellings compare equal.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Packets per one-second window, counted with two atomics (a window that
/// changes under a race may let a few more through: a bound, not a meter).
#[derive(Default)]
pub struct Rate {
    window: AtomicU64,
    count: AtomicU64,
}

impl Rate {
    pub fn admit(&self, now_ms: u64, per_second: u32) -> bool {
        let w = now_ms / 1000;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != w
            && self
                .window
                .compare_exchange(seen, w, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < u64::from(per_second)
    }
}

/// One unit of voice, where it must go.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// A datagram for an accounts party, from the call's UDP socket.
    Udp(SocketAddr, Vec<u8>),
    /// A VoiceData frame (its bytes) for a babel party.
    Babel(Vec<u8>),
    Drop(RelayDrop),
}

/// The relay's allocation for one call.
pub struct Alloc {
    pub id: CallId,
    /// [caller, callee].
    pub legs: [Leg; 2],
    /// The socket of its accounts legs (one for both), if any.
    pub udp: Option<std::net::UdpSocket>,
    pub rate: Rate,
    /// When a packet last went through (ms on the relay's clock); from the
    /// answer on, the idle timeout counts from here.
    pub last_ms: AtomicU64,
    pub answered: AtomicBool,
    pub closed: AtomicBool,
    /// Handed to a worker and not yet drained (see `Relay`).
    pub scheduled: AtomicBool,
}

pub fn index(side: Side) -> usize {
    match side {
        Side::Caller => 0,
        Side::Callee => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Caller => Side::Callee,
        Side::Callee => Side::Caller,
    }
}

impl Alloc {
    /// A new allocation, not answered yet, last used at `now_ms`.
    pub fn new(id: CallId, legs: [Leg; 2], udp: Option<std::net::UdpSocket>, now_ms: u64) -> Alloc {
        Alloc {
            id,
            legs,
            udp,
            rate: Rate::default(),
            last_ms: AtomicU64::new(now_ms),
            answered: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
        }
    }

    pub fn leg(&self, side: Side) -> &Leg {
        &self.legs[index(side)]
    }

    /// The side whose accounts party sends from `from`, if any.
    pub fn udp_side(&self, from: SocketAddr) -> Option<Side> {
        let from = canonical(from);
        [Side::Caller, Side::Callee].into_iter().find(|s| {
            let leg = self.leg(*s);
            leg.kind == Kind::Udp && *leg.peer.read() == Some(from)
        })
    }

    /// A datagram from the accounts party of `side`: what it becomes.
    pub fn unit_from_udp(&self, side: Side, datagram: &[u8]) -> Out {
        let to = self.leg(other(side));
        match to.kind {
            // accounts to accounts: the very bytes of any voice datagram
            // (seed 000: the magic, then the audio), libchinwag's media and
            // reports or an application's own layout after the magic
            // (`cw_call_send_voice`, `cw_voice_packet_encode`), as the
            // direct path would carry them.
            Kind::Udp => {
                if VoicePacket::decode(datagram).is_err() && decode_voice(datagram).is_err() {
                    return Out::Drop(RelayDrop::Malformed);
                }
                match *to.peer.read() {
                    Some(peer) => Out::Udp(peer, datagram.to_vec()),
                    None => Out::Drop(RelayDrop::Unbridged),
                }
            }
            Kind::Dial(_) | Kind::Accept(_) => {
                let Ok(packet) = VoicePacket::decode(datagram) else {
                    return Out::Drop(RelayDrop::Malformed);
                };
                let VoicePacket::Media { seq, opus, .. } = packet else {
                    // Receiver reports have no babel form.
                    return Out::Drop(RelayDrop::Unbridged);
                };
                let mut f = to.framing.lock();
                if f.last_seq
                    .is_some_and(|last| seq.wrapping_sub(last) as i16 <= 0)
                {
                    return Out::Drop(RelayDrop::Unbridged);
                }
                f.last_seq = Some(seq);
                Out::Babel(voice_data(opus))
            }
        }
    }

    /// The Opus packet of a VoiceData from the babel party of `side`: what
    /// it becomes.
    pub fn unit_from_babel(&self, side: Side, opus: &[u8]) -> Out {
        let to = self.leg(other(side));
        match to.kind {
            Kind::Udp => {
                if opus.is_empty() || opus.len() > MAX_VOICE {
                    return Out::Drop(RelayDrop::Malformed);
                }
                let Some(peer) = *to.peer.read() else {
                    return Out::Drop(RelayDrop::Unbridged);
                };
                let mut f = to.framing.lock();
                let packet = VoicePacket::Media {
                    seq: f.next_seq,
                    timestamp: f.timestamp,
                    opus,
                };
                f.next_seq = f.next_seq.wrapping_add(1);
                f.timestamp = f
                    .timestamp
                    .wrapping_add(opus_samples(opus).unwrap_or(DEFAULT_SAMPLES));
                Out::Udp(peer, packet.to_bytes())
            }
            // babel to babel: the same Opus packet in a new frame.
            Kind::Dial(_) | Kind::Accept(_) => Out::Babel(voice_data(opus)),
        }
    }

    /// The babel connection of the leg a unit from `side` goes to.
    pub fn babel_out(&self, side: Side) -> Option<Arc<Outbound>> {
        self.leg(other(side))
            .babel
            .lock()
            .as_ref()
            .map(|e| e.out.clone())
    }
}

fn voice_data(opus: &[u8]) -> Vec<u8> {
    Frame::VoiceData {
        data: opus.to_vec(),
    }
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(caller: Kind, callee: Kind) -> Alloc {
        let peer =
            |k: Kind, port| (k == Kind::Udp).then(|| SocketAddr::from(([10, 0, 0, 1], port)));
        let a = Alloc::new(
            1,
            [
                Leg::new(caller, peer(caller, 1000), 0, 0),
                Leg::new(callee, peer(callee, 2000), 65_535, u32::MAX - 100),
            ],
            None,
            0,
        );
        a.answered.store(true, Ordering::Relaxed);
        a
    }

    fn media(seq: u16, opus: &[u8]) -> Vec<u8> {
        VoicePacket::Media {
            seq,
            timestamp: 7,
            opus,
        }
        .to_bytes()
    }

    const BABEL: Kind = Kind::Dial(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        9,
    ));

    #[test]
    fn accounts_voice_becomes_voicedata_in_order_and_reports_stay_behind() {
        let a = alloc(BABEL, Kind::Udp);
        let from = SocketAddr::from(([10, 0, 0, 1], 2000));
        assert_eq!(a.udp_side(from), Some(Side::Callee));
        assert_eq!(a.udp_side(SocketAddr::from(([10, 0, 0, 1], 2001))), None);
        let opus = [0x78, 1, 2];
        let want = Frame::VoiceData {
            data: opus.to_vec(),
        }
        .to_bytes();
        assert_eq!(
            a.unit_from_udp(Side::Callee, &media(5, &opus)),
            Out::Babel(want.clone())
        );
        // Older (or the same) seq: babel has no numbers to reorder by.
        for old in [5, 4, 65_000] {
            assert_eq!(
                a.unit_from_udp(Side::Callee, &media(old, &opus)),
                Out::Drop(RelayDrop::Unbridged)
            );
        }
        assert_eq!(
            a.unit_from_udp(Side::Callee, &media(7, &opus)),
            Out::Babel(want)
        );
        let report = VoicePacket::Report(chinwag_proto::voice::Report {
            loss_pct: 0,
            no_media: false,
            lost: 0,
            jitter_us: 0,
            sent_ms: 1,
            echo: None,
        })
        .to_bytes();
        assert_eq!(
            a.unit_from_udp(Side::Callee, &report),
            Out::Drop(RelayDrop::Unbridged)
        );
        assert_eq!(
            a.unit_from_udp(Side::Callee, b"CWVC\x01junk"),
            Out::Drop(RelayDrop::Malformed)
        );
    }

    #[test]
    fn babel_voice_becomes_numbered_timed_media_packets() {
        let a = alloc(
            Kind::Udp,
            Kind::Accept(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        );
        let to = SocketAddr::from(([10, 0, 0, 1], 1000));
        // 20 ms stereo CELT (config 31), then a 40 ms packet (code 1).
        let p20 = [31 << 3 | 0x04, 9, 9];
        let p40 = [31 << 3 | 0x04 | 1, 9];
        let mut stamps = Vec::new();
        for p in [&p20[..], &p40[..], &p20[..]] {
            let Out::Udp(at, bytes) = a.unit_from_babel(Side::Callee, p) else {
                panic!()
            };
            assert_eq!(at, to);
            let VoicePacket::Media {
                seq,
                timestamp,
                opus,
            } = VoicePacket::decode(&bytes).unwrap()
            else {
                panic!()
            };
            assert_eq!(opus, p, "the Opus packet is untouched");
            stamps.push((seq, timestamp));
        }
        // Numbered and timed on from the leg's start, wrapping.
        assert_eq!(stamps, vec![(0, 0), (1, 960), (2, 960 + 1920)]);
        assert_eq!(
            a.unit_from_babel(Side::Callee, &[]),
            Out::Drop(RelayDrop::Malformed)
        );
        assert_eq!(
            a.unit_from_babel(Side::Callee, &vec![0; MAX_VOICE + 1]),
            Out::Drop(RelayDrop::Malformed)
        );
    }

    #[test]
    fn accounts_to_accounts_is_the_very_bytes_and_waits_for_the_answer() {
        let a = alloc(Kind::Udp, Kind::Udp);
        *a.leg(Side::Callee).peer.write() = None;
        let p = media(1, &[1]);
        assert_eq!(
            a.unit_from_udp(Side::Caller, &p),
            Out::Drop(RelayDrop::Unbridged)
        );
        *a.leg(Side::Callee).peer.write() = Some(SocketAddr::from(([10, 0, 0, 2], 3)));
        assert_eq!(
            a.unit_from_udp(Side::Caller, &p),
            Out::Udp(SocketAddr::from(([10, 0, 0, 2], 3)), p.clone())
        );
        // An application's own layout after the magic passes too (up to
        // 1275 bytes, as `cw_voice_packet_encode` makes it); what is no
        // voice datagram at all does not.
        let to_b = Out::Udp(SocketAddr::from(([10, 0, 0, 2], 3)), b"CWVCwarm".to_vec());
        assert_eq!(a.unit_from_udp(Side::Caller, b"CWVCwarm"), to_b);
        let mut big = b"CWVC".to_vec();
        big.resize(4 + MAX_VOICE, 7);
        assert!(matches!(a.unit_from_udp(Side::Caller, &big), Out::Udp(..)));
        big.push(7);
        for junk in [&b"XWVCwarm"[..], b"CWV", &big] {
            assert_eq!(
                a.unit_from_udp(Side::Caller, junk),
                Out::Drop(RelayDrop::Malformed)
            );
        }
        // The wrap of the relay's own numbering towards accounts.
        let b = alloc(Kind::Udp, Kind::Udp);
        assert_eq!(b.leg(Side::Callee).framing.lock().next_seq, 65_535);
    }

    #[test]
    fn the_rate_is_per_second_window() {
        let r = Rate::default();
        assert!((0..5).all(|_| r.admit(1_000, 5)));
        assert!(!r.admit(1_999, 5));
        assert!(r.admit(2_000, 5), "a new second");
    }
}
