//! The body of the accounts dialect's UDP voice packets (seed 000: "an int32
//! magic code, then" the audio), as libchinwag's call audio sends them: media
//! packets a receiver can put in a jitter buffer, and receiver reports that
//! drive the sender's FEC and give both ends loss, jitter and round-trip time.
//! Bytes only (docs/protocols/accounts.md, "Voice packets"): no clock, no I/O.

use crate::accounts::{MAX_VOICE, VOICE_MAGIC};
use crate::DecodeError;

/// What follows the magic: one byte saying which packet this is.
pub mod kind {
    pub const MEDIA: u8 = 0x01;
    pub const REPORT: u8 = 0x02;
}

/// magic + kind + seq:u16 + timestamp:u32.
pub const MEDIA_HEADER_LEN: usize = 4 + 1 + 2 + 4;
/// The largest media packet: its header and the largest Opus packet.
pub const MAX_MEDIA_PACKET: usize = MEDIA_HEADER_LEN + MAX_VOICE;
/// magic + kind + flags + loss + lost + jitter + sent + echo sent + echo held.
pub const REPORT_LEN: usize = 4 + 1 + 1 + 1 + 4 + 4 + 4 + 4 + 4;
/// Bit 0 of a report's flags: the echo fields are meaningful.
const FLAG_ECHO: u8 = 0x01;
/// Bit 1 of a report's flags: no media packet was expected since the
/// previous report (`loss_pct` is then 0 and measures nothing). The other
/// bits are reserved and must be zero, so every report has one encoding.
const FLAG_NO_MEDIA: u8 = 0x02;
/// A percentage.
const MAX_LOSS_PCT: u8 = 100;

/// The newest report of the peer's, handed back so the peer can measure the
/// round trip: `rtt = now - sent_ms - held_ms` on the peer's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// The `sent_ms` of the report being echoed, unchanged.
    pub sent_ms: u32,
    /// How long the echoing side held it before sending this report.
    pub held_ms: u32,
}

/// What a receiver tells the sender about the stream it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Packets lost since the previous report, in percent of those expected
    /// (0..=100); the sender sets its encoder's expected loss from it.
    pub loss_pct: u8,
    /// No media packet was expected since the previous report (none newer
    /// than those already counted arrived): `loss_pct` is 0 and says
    /// nothing about the path, which may be down one way (flag bit 1).
    pub no_media: bool,
    /// Packets lost since the stream began (never played, not even late).
    pub lost: u32,
    /// Interarrival jitter in microseconds (RFC 3550's running estimate).
    pub jitter_us: u32,
    /// The reporting side's clock in milliseconds (any origin; wraps).
    pub sent_ms: u32,
    pub echo: Option<Echo>,
}

/// A voice packet, borrowing its Opus bytes from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoicePacket<'a> {
    /// One Opus packet. `seq` counts packets (wrapping); `timestamp` counts
    /// 48 kHz samples per channel from any origin (wrapping), so a receiver
    /// can place the audio even after a silent (DTX) gap.
    Media {
        seq: u16,
        timestamp: u32,
        opus: &'a [u8],
    },
    Report(Report),
}

impl VoicePacket<'_> {
    /// Append the whole datagram, magic included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&VOICE_MAGIC.to_be_bytes());
        match self {
            VoicePacket::Media {
                seq,
                timestamp,
                opus,
            } => {
                out.push(kind::MEDIA);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&timestamp.to_be_bytes());
                out.extend_from_slice(opus);
            }
            VoicePacket::Report(r) => {
                out.push(kind::REPORT);
                let mut flags = 0;
                if r.echo.is_some() {
                    flags |= FLAG_ECHO;
                }
                if r.no_media {
                    flags |= FLAG_NO_MEDIA;
                }
                out.push(flags);
                out.push(r.loss_pct);
                out.extend_from_slice(&r.lost.to_be_bytes());
                out.extend_from_slice(&r.jitter_us.to_be_bytes());
                out.extend_from_slice(&r.sent_ms.to_be_bytes());
                let echo = r.echo.unwrap_or(Echo {
                    sent_ms: 0,
                    held_ms: 0,
                });
                out.extend_from_slice(&echo.sent_ms.to_be_bytes());
                out.extend_from_slice(&echo.held_ms.to_be_bytes());
            }
        }
    }

    /// The datagram as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_MEDIA_PACKET);
        self.encode(&mut out);
        out
    }

    /// Parse one whole datagram. Anything but exactly one well-formed packet
    /// is an error, and the caller drops the datagram.
    pub fn decode(packet: &[u8]) -> Result<VoicePacket<'_>, DecodeError> {
        let mut r = Reader(packet);
        let magic = r.u32()?;
        if magic != VOICE_MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        match r.u8()? {
            kind::MEDIA => {
                let seq = r.u16()?;
                let timestamp = r.u32()?;
                let opus = r.0;
                if opus.is_empty() {
                    // Even a silent Opus packet has its table-of-contents byte.
                    return Err(DecodeError::Truncated);
                }
                if opus.len() > MAX_VOICE {
                    return Err(DecodeError::TooLong {
                        field: "opus packet",
                        len: opus.len() as u64,
                        max: MAX_VOICE as u64,
                    });
                }
                Ok(VoicePacket::Media {
                    seq,
                    timestamp,
                    opus,
                })
            }
            kind::REPORT => {
                let flags = r.u8()?;
                if flags & !(FLAG_ECHO | FLAG_NO_MEDIA) != 0 {
                    return Err(DecodeError::BadBits("report flags"));
                }
                let no_media = flags & FLAG_NO_MEDIA != 0;
                let loss_pct = r.u8()?;
                if loss_pct > MAX_LOSS_PCT {
                    return Err(DecodeError::BadBits("report loss percentage"));
                }
                if no_media && loss_pct != 0 {
                    return Err(DecodeError::BadBits("report loss without media"));
                }
                let lost = r.u32()?;
                let jitter_us = r.u32()?;
                let sent_ms = r.u32()?;
                let echo = Echo {
                    sent_ms: r.u32()?,
                    held_ms: r.u32()?,
                };
                if !r.0.is_empty() {
                    return Err(DecodeError::TrailingBytes(r.0.len()));
                }
                let echo = if flags & FLAG_ECHO != 0 {
                    Some(echo)
                } else if echo.sent_ms != 0 || echo.held_ms != 0 {
                    return Err(DecodeError::BadBits("report echo without its flag"));
                } else {
                    None
                };
                Ok(VoicePacket::Report(Report {
                    loss_pct,
                    no_media,
                    lost,
                    jitter_us,
                    sent_ms,
                    echo,
                }))
            }
            other => Err(DecodeError::UnknownOpcode(other.into())),
        }
    }
}

/// Samples per channel at 48 kHz in one Opus packet, read from its TOC byte
/// (RFC 6716 §3.1: the configuration gives the frame size, the code the
/// number of frames; code 3 counts them in the second byte). None for an
/// empty packet, a code-3 packet without its count, or more than 120 ms
/// (which RFC 6716 §3.2.5 forbids). The media relay times babel's VoiceData
/// with it, since VoiceData carries no timestamp.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    /// 48 kHz samples of 2.5, 5, 10, 20, 40 and 60 ms frames.
    const MS_2_5: u32 = 120;
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [4, 8, 16, 24][(config % 4) as usize] * MS_2_5,
        // Hybrid: 10, 20 ms.
        12..=15 => [4, 8][(config % 2) as usize] * MS_2_5,
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [1, 2, 4, 8][(config % 4) as usize] * MS_2_5,
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    (total > 0 && total <= 48 * MS_2_5).then_some(total)
}

/// Whether an Opus packet is coded in stereo (its TOC byte's `s` bit, RFC
/// 6716 §3.1). A decoder plays either kind at its own channel count.
pub fn opus_stereo(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc & 0x04 != 0)
}

/// Big-endian reads from the front of a datagram; running out is `Truncated`.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.0.len() < N {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    // Golden bytes are written as byte strings: "CWVC" is the magic.

    fn report(echo: bool) -> Report {
        Report {
            loss_pct: 10,
            no_media: false,
            lost: 258,
            jitter_us: 20_000,
            sent_ms: 0x0102_0304,
            echo: echo.then_some(Echo {
                sent_ms: 0xfffe_fdfc,
                held_ms: 15,
            }),
        }
    }

    /// A report of an interval in which no media arrived (with an echo).
    fn no_media() -> Report {
        Report {
            loss_pct: 0,
            no_media: true,
            ..report(true)
        }
    }

    fn samples() -> Vec<Vec<u8>> {
        let big = vec![0x5a; MAX_VOICE];
        [
            VoicePacket::Media {
                seq: 0,
                timestamp: 0,
                opus: &[0xf8],
            },
            VoicePacket::Media {
                seq: u16::MAX,
                timestamp: u32::MAX,
                opus: &big,
            },
            VoicePacket::Report(report(true)),
            VoicePacket::Report(report(false)),
            VoicePacket::Report(no_media()),
        ]
        .iter()
        .map(VoicePacket::to_bytes)
        .collect()
    }

    #[test]
    fn opus_durations_come_from_the_toc_byte() {
        // config 1 (SILK NB 20 ms), code 0: one 20 ms frame.
        assert_eq!(opus_samples(&[1 << 3]), Some(960));
        // config 15 (hybrid FB 20 ms), stereo, code 1: two frames, 40 ms.
        assert_eq!(opus_samples(&[15 << 3 | 0x04 | 1, 0]), Some(1920));
        assert!(opus_stereo(&[15 << 3 | 0x04 | 1]));
        assert!(!opus_stereo(&[1 << 3]));
        // config 28 (CELT FB 2.5 ms), code 3 with 6 frames: 15 ms.
        assert_eq!(opus_samples(&[28 << 3 | 3, 6]), Some(720));
        // config 3 (SILK 60 ms), code 3, 2 frames: 120 ms, the most.
        assert_eq!(opus_samples(&[3 << 3 | 3, 2]), Some(5760));
        // More than 120 ms, no count, no frames, nothing at all: None.
        assert_eq!(opus_samples(&[3 << 3 | 3, 3]), None);
        assert_eq!(opus_samples(&[3 << 3 | 3]), None);
        assert_eq!(opus_samples(&[28 << 3 | 3, 0]), None);
        assert_eq!(opus_samples(&[]), None);
        // Every TOC byte of a 20 ms stereo packet as libopus's VOIP
        // application writes it at 48 kHz (CELT or hybrid FB) is 960.
        for config in [15u8, 31] {
            assert_eq!(opus_samples(&[config << 3 | 0x04]), Some(960));
        }
    }

    #[test]
    fn golden_bytes() {
        let media = VoicePacket::Media {
            seq: 0x0102,
            timestamp: 960,
            opus: &[0x78, 0xab, 0xcd],
        };
        let bytes = b"CWVC\x01\x01\x02\x00\x00\x03\xc0\x78\xab\xcd".to_vec();
        assert_eq!(media.to_bytes(), bytes);
        assert_eq!(VoicePacket::decode(&bytes), Ok(media));

        let with_echo = b"CWVC\x02\x01\x0a\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\xff\xfe\xfd\xfc\x00\x00\x00\x0f".to_vec();
        assert_eq!(VoicePacket::Report(report(true)).to_bytes(), with_echo);
        assert_eq!(
            VoicePacket::decode(&with_echo),
            Ok(VoicePacket::Report(report(true)))
        );
        let without = b"CWVC\x02\x00\x0a\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        assert_eq!(VoicePacket::Report(report(false)).to_bytes(), without);
        assert_eq!(
            VoicePacket::decode(&without),
            Ok(VoicePacket::Report(report(false)))
        );
        assert_eq!(with_echo.len(), REPORT_LEN);
        // Nothing arrived since the previous report: flag bit 1, loss 0.
        let empty = b"CWVC\x02\x03\x00\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\xff\xfe\xfd\xfc\x00\x00\x00\x0f".to_vec();
        assert_eq!(VoicePacket::Report(no_media()).to_bytes(), empty);
        assert_eq!(
            VoicePacket::decode(&empty),
            Ok(VoicePacket::Report(no_media()))
        );
    }

    #[test]
    fn round_trips() {
        for bytes in samples() {
            let p = VoicePacket::decode(&bytes).unwrap();
            assert_eq!(p.to_bytes(), bytes);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for bytes in samples() {
            for n in 0..bytes.len() {
                let cut = &bytes[..n];
                // A media packet cut inside its Opus bytes is still a valid,
                // shorter media packet: the datagram is its own length.
                if n > MEDIA_HEADER_LEN && bytes[4] == kind::MEDIA {
                    continue;
                }
                assert_eq!(
                    VoicePacket::decode(cut),
                    Err(DecodeError::Truncated),
                    "{n} bytes of {bytes:02x?}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_and_bad_fields_are_refused() {
        let mut r = VoicePacket::Report(report(true)).to_bytes();
        r.push(0);
        assert_eq!(VoicePacket::decode(&r), Err(DecodeError::TrailingBytes(1)));

        let mut m = b"CWVC\x01\x00\x00\x00\x00\x00\x00".to_vec();
        m.extend_from_slice(&vec![0; MAX_VOICE + 1]);
        assert!(matches!(
            VoicePacket::decode(&m),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            VoicePacket::decode(b"CWVC\x03\x00"),
            Err(DecodeError::UnknownOpcode(3))
        );
        assert_eq!(
            VoicePacket::decode(b"CWAC\x01\x00\x00\x00\x00\x00\x00\x00"),
            Err(DecodeError::BadMagic(0x4357_4143))
        );
        let bad_flags = b"CWVC\x02\x04\x0a\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        assert!(matches!(
            VoicePacket::decode(&bad_flags),
            Err(DecodeError::BadBits(_))
        ));
        // No media, yet a loss: two meanings for one report.
        let loss_without_media = b"CWVC\x02\x02\x0a\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        assert_eq!(
            VoicePacket::decode(&loss_without_media),
            Err(DecodeError::BadBits("report loss without media"))
        );
        let bad_loss = b"CWVC\x02\x00\x65\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        assert!(matches!(
            VoicePacket::decode(&bad_loss),
            Err(DecodeError::BadBits(_))
        ));
        let stray_echo = b"CWVC\x02\x00\x0a\x00\x00\x01\x02\x00\x00\x4e\x20\x01\x02\x03\x04\x00\x00\x00\x01\x00\x00\x00\x00".to_vec();
        assert!(matches!(
            VoicePacket::decode(&stray_echo),
            Err(DecodeError::BadBits(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0c5a);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = rng.gen_range(0..48);
            let mut p = VOICE_MAGIC.to_be_bytes().to_vec();
            p.push(rng.gen_range(0..4));
            p.extend((0..n).map(|_| rng.gen::<u8>()));
            if let Ok(v) = VoicePacket::decode(&p) {
                // Whatever is accepted re-encodes to the same bytes.
                assert_eq!(v.to_bytes(), p);
                accepted += 1;
            }
            let raw: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = VoicePacket::decode(&raw);
        }
        assert!(
            accepted > 0,
            "the loop must reach the decoders' success paths"
        );
    }
}
