//! The receive side of a call in libchinwag (audio/pipeline.rs and its
//! jitter buffer), fed what a malicious peer or relay may send: arbitrary
//! accounts voice datagrams, media packets with any sequence numbers,
//! timestamps and Opus bytes (garbage for the decoder), babel's in-order
//! VoiceData, with time jumping about between pulls of any size, reports
//! and statistics. After every step: no panic, the buffers bounded, every
//! report it makes one the peer accepts, and the counters consistent.
#![no_main]

use std::time::{Duration, Instant};

use chinwag::audio::codec::{MAX_LOSS_PCT, MAX_PACKET_SAMPLES};
use chinwag::audio::jitter::{CAPACITY, MAX_HISTORY};
use chinwag::audio::{CallAudio, Profile, FRAME_SAMPLES};
use chinwag_proto::accounts::VOICE_MAGIC;
use chinwag_proto::voice::{kind, VoicePacket};
use libfuzzer_sys::fuzz_target;

#[path = "../common/input.rs"]
mod input;
use input::Input;

/// Steps per input: enough for a jitter buffer to fill, stall and restart.
const MAX_STEPS: usize = 400;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let profile = if input.or0() & 1 == 0 {
        Profile::Accounts
    } else {
        Profile::Babel
    };
    let ch = profile.channels();
    let start = Instant::now();
    let mut now = start;
    let mut audio = CallAudio::new(profile, now).expect("a call's audio");
    let mut media_in = 0u64;
    let mut seq = 0u16;
    let mut ts = 0u32;
    let mut pcm = vec![0i16; 4 * MAX_PACKET_SAMPLES * ch];
    for _ in 0..MAX_STEPS {
        let Some(op) = input.byte() else { break };
        match op % 10 {
            // Raw bytes as a datagram, the magic put in front or not.
            0 => {
                let len = usize::from(input.or0()) * 8 + usize::from(input.or0() % 8);
                let mut d = Vec::new();
                if input.or0() & 1 == 0 {
                    d.extend_from_slice(&VOICE_MAGIC.to_be_bytes());
                    d.push(if input.or0() & 1 == 0 {
                        kind::MEDIA
                    } else {
                        kind::REPORT
                    });
                }
                d.extend_from_slice(input.take(len));
                if let Ok(VoicePacket::Media { .. }) = VoicePacket::decode(&d) {
                    media_in += 1;
                }
                let _ = audio.receive_datagram(now, &d);
            }
            // A media packet near the stream (or anywhere), arbitrary Opus.
            1 | 2 => {
                let dseq = i16::from(input.or0() as i8);
                let dts = i32::from(input.or0() as i8) * 120;
                seq = seq.wrapping_add(1).wrapping_add_signed(dseq);
                ts = ts.wrapping_add(960).wrapping_add_signed(dts);
                if op % 10 == 2 {
                    seq = u16::from_be_bytes([input.or0(), input.or0()]);
                    ts = u32::from_be_bytes([input.or0(), input.or0(), input.or0(), input.or0()]);
                }
                let len = 1 + usize::from(input.or0()) * 4;
                let opus = input.take(len).to_vec();
                let opus = if opus.is_empty() { vec![0xfc] } else { opus };
                let d = VoicePacket::Media {
                    seq,
                    timestamp: ts,
                    opus: &opus,
                }
                .to_bytes();
                audio
                    .receive_datagram(now, &d)
                    .expect("a well-formed media packet");
                media_in += 1;
            }
            // babel's VoiceData: order only.
            3 => {
                let len = usize::from(input.or0()) * 4;
                let opus = input.take(len).to_vec();
                audio.receive_in_order(now, &opus);
                media_in += 1;
            }
            // Time passes: a little, a lot, or backwards from the caller's view.
            4 | 5 => {
                let ms = u64::from(input.or0()) * if op % 10 == 5 { 400 } else { 1 };
                now += Duration::from_millis(ms);
            }
            // A pull of any whole number of sample frames.
            6 | 7 => {
                let frames = usize::from(u16::from_be_bytes([input.or0(), input.or0()]))
                    % (4 * MAX_PACKET_SAMPLES);
                let out = &mut pcm[..frames * ch];
                audio.pull_pcm(now, out).expect("whole frames");
                let (_, _, fifo) = audio.held();
                assert!(fifo <= 3 * MAX_PACKET_SAMPLES * ch, "FIFO of {fifo}");
            }
            8 => {
                if let Some(r) = audio.poll_report(now) {
                    let bytes = VoicePacket::Report(r).to_bytes();
                    assert_eq!(
                        VoicePacket::decode(&bytes),
                        Ok(VoicePacket::Report(r)),
                        "a report the peer refuses: {r:?}"
                    );
                }
            }
            _ => {
                // Some capture too, so the reports' FEC setting is used.
                if input.or0() & 3 == 0 {
                    let frame = vec![0i16; FRAME_SAMPLES * ch];
                    audio.send_pcm(now, &frame).expect("a whole frame encodes");
                }
                let s = audio.stats(now);
                // A late packet counts as received (and as late).
                assert!(s.packets_received + s.packets_duplicate <= media_in);
                assert!(s.packets_late <= s.packets_received);
                assert!(s.frames_concealed_fec <= s.frames_concealed);
                assert!(s.expected_loss_pct <= MAX_LOSS_PCT);
                assert!(s.playout_delay_ms.is_finite() && s.playout_delay_ms >= 0.0);
                assert!(s.target_delay_ms.is_finite() && s.target_delay_ms >= 0.0);
                assert!(s.jitter_ms.is_finite() && s.jitter_ms >= 0.0);
                if let Some(rtt) = s.rtt_ms {
                    assert!((0.0..=10_000.0).contains(&rtt), "rtt {rtt}");
                }
            }
        }
        let (held, history, _) = audio.held();
        assert!(held <= CAPACITY, "{held} packets held");
        assert!(history <= MAX_HISTORY, "{history} delay samples");
    }
});
