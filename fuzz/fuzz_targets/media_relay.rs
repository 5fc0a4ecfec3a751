//! The server's media relay (server/src/media/alloc.rs) fed what a party of
//! a relayed call may send: arbitrary datagrams from an accounts party and
//! arbitrary VoiceData payloads from a babel party, on calls of every shape
//! (accounts-accounts, accounts-babel, babel-accounts, babel-babel), and the
//! per-call packet rate under any clock. After every unit: no panic, and
//! what goes out is well formed for the leg it goes to: accounts
//! datagrams forwarded byte for byte or re-framed as one media packet
//! (numbered one more than the last, the Opus unchanged, within the
//! largest packet), babel VoiceData frames carrying the very Opus bytes and
//! never an older accounts packet; the rate never admits more than its
//! bound in one window.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chinwag_proto::babel::{Frame, MAX_VOICE as MAX_BABEL_VOICE};
use chinwag_proto::voice::{VoicePacket, MAX_MEDIA_PACKET};
use chinwagd::hub::Side;
use chinwagd::media::alloc::{Alloc, Kind, Leg, Out};
use libfuzzer_sys::fuzz_target;

#[path = "../common/input.rs"]
mod input;
use input::Input;

const MAX_STEPS: usize = 300;

fn kind(b: u8) -> Kind {
    match b % 3 {
        0 => Kind::Udp,
        1 => Kind::Dial(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)),
        _ => Kind::Accept(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

fn peer(k: Kind, port: u16) -> Option<SocketAddr> {
    (k == Kind::Udp).then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn index(side: Side) -> usize {
    match side {
        Side::Caller => 0,
        Side::Callee => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let kinds = [kind(input.or0()), kind(input.or0())];
    let seq0 = u16::from_be_bytes([input.or0(), input.or0()]);
    let ts0 = u32::from_be_bytes([input.or0(), input.or0(), input.or0(), input.or0()]);
    // A leg whose party has not been heard from yet has no peer address.
    let bridged = input.or0();
    let peers = [
        peer(kinds[0], 1000).filter(|_| bridged & 1 == 0),
        peer(kinds[1], 2000).filter(|_| bridged & 2 == 0),
    ];
    let a = Alloc::new(
        1,
        [
            Leg::new(kinds[0], peers[0], seq0, ts0),
            Leg::new(kinds[1], peers[1], seq0, ts0),
        ],
        None,
        0,
    );
    // Per destination leg: the last seq numbered towards accounts, the last
    // accounts seq passed towards babel.
    let mut numbered: [Option<u16>; 2] = [None, None];
    let mut passed: [Option<u16>; 2] = [None, None];
    let per_second = u32::from(input.or0() % 8);
    let mut clock = 0u64;
    let mut window = (u64::MAX, 0u64);
    for _ in 0..MAX_STEPS {
        let Some(op) = input.byte() else { break };
        let side = if op & 0x80 == 0 {
            Side::Caller
        } else {
            Side::Callee
        };
        let to = 1 - index(side);
        let len = usize::from(input.or0()) * 6 + usize::from(input.or0() % 6);
        match op % 4 {
            // A datagram: raw, or a media packet with these bytes as Opus.
            0 | 1 => {
                let datagram = if op % 4 == 0 {
                    input.take(len).to_vec()
                } else {
                    let seq = u16::from_be_bytes([input.or0(), input.or0()]);
                    let opus = input.take(len).to_vec();
                    VoicePacket::Media {
                        seq,
                        timestamp: 0,
                        opus: &opus,
                    }
                    .to_bytes()
                };
                let decoded = VoicePacket::decode(&datagram).ok();
                match a.unit_from_udp(side, &datagram) {
                    Out::Udp(p, bytes) => {
                        assert_eq!(kinds[to], Kind::Udp);
                        assert_eq!(Some(p), peers[to]);
                        assert_eq!(bytes, datagram, "forwarded unchanged");
                    }
                    Out::Babel(bytes) => {
                        let Some(VoicePacket::Media { seq, opus, .. }) = decoded else {
                            panic!("a babel frame from no media packet");
                        };
                        if let Some(last) = passed[to] {
                            assert!(seq.wrapping_sub(last) as i16 > 0, "{seq} after {last}");
                        }
                        passed[to] = Some(seq);
                        let frame = Frame::decode_exact(&bytes).expect("a whole frame");
                        assert_eq!(
                            frame,
                            Frame::VoiceData {
                                data: opus.to_vec()
                            }
                        );
                    }
                    Out::Drop(_) => {}
                }
            }
            // A VoiceData payload from a babel party.
            2 => {
                // The largest payload babel's decoder lets through, or bytes.
                let opus = if input.or0() == 0xff {
                    vec![0x55; MAX_BABEL_VOICE]
                } else {
                    input.take(len).to_vec()
                };
                match a.unit_from_babel(side, &opus) {
                    Out::Udp(p, bytes) => {
                        assert_eq!(kinds[to], Kind::Udp);
                        assert_eq!(Some(p), peers[to]);
                        assert!(bytes.len() <= MAX_MEDIA_PACKET);
                        let Ok(VoicePacket::Media {
                            seq, opus: inner, ..
                        }) = VoicePacket::decode(&bytes)
                        else {
                            panic!("an undecodable media packet: {bytes:?}");
                        };
                        assert_eq!(inner, &opus[..]);
                        let want = numbered[to].map_or(seq0, |s| s.wrapping_add(1));
                        assert_eq!(seq, want, "numbered in order");
                        numbered[to] = Some(seq);
                    }
                    Out::Babel(bytes) => {
                        assert_ne!(kinds[to], Kind::Udp);
                        let frame = Frame::decode_exact(&bytes).expect("a whole frame");
                        assert_eq!(frame, Frame::VoiceData { data: opus });
                    }
                    Out::Drop(_) => {}
                }
            }
            // The call's rate at a clock that moves on (or jumps anywhere).
            _ => {
                let step = u64::from(input.or0());
                clock = if step == 0xff {
                    u64::from_be_bytes(std::array::from_fn(|_| input.or0()))
                } else {
                    clock.wrapping_add(step * 7)
                };
                let w = clock / 1000;
                if window.0 != w {
                    window = (w, 0);
                }
                if a.rate.admit(clock, per_second) {
                    window.1 += 1;
                    assert!(window.1 <= u64::from(per_second), "over the rate");
                }
            }
        }
    }
});
