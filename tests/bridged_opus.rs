//! What the server's media relay relies on (docs/bridging.md, "Re-framing,
//! without transcoding"): an Opus packet of babel's profile (stereo) plays
//! through libchinwag's accounts decoder (mono), and the other way round,
//! and the relay's TOC reader (proto) times real libopus packets as libopus
//! does.

use chinwag::audio::codec::{Decoder, Encoder, MAX_PACKET, MAX_PACKET_SAMPLES};
use chinwag::audio::{Profile, FRAME_SAMPLES, SAMPLE_RATE};
use chinwag_proto::voice::{opus_samples, opus_stereo};

/// 20 ms frames of a 1 kHz tone, `channels` interleaved; in stereo the
/// right channel is the left one scaled by `right` (1.0: the same, which
/// babel's encoder codes mono).
fn tone(channels: usize, frames: usize, right: f64) -> Vec<Vec<i16>> {
    (0..frames)
        .map(|f| {
            (0..FRAME_SAMPLES)
                .flat_map(|i| {
                    let t = (f * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
                    let v = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin();
                    [v as i16, (v * right) as i16].into_iter().take(channels)
                })
                .collect()
        })
        .collect()
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Encode with `from` (stereo: the right channel scaled by `right`),
/// decode with `to`: the decoded frames (of `to`'s channel count), after
/// checking each packet's TOC as the relay reads it (`stereo`: stereo-coded).
fn carry(from: Profile, to: Profile, right: f64, stereo: bool) -> Vec<Vec<i16>> {
    let mut enc = Encoder::new(from).unwrap();
    let mut dec = Decoder::new(to).unwrap();
    let mut packet = [0u8; MAX_PACKET];
    let mut out = vec![0i16; MAX_PACKET_SAMPLES * 2];
    tone(from.channels(), 25, right)
        .iter()
        .map(|frame| {
            let n = enc.encode(frame, &mut packet).unwrap();
            let p = &packet[..n];
            assert_eq!(opus_samples(p), Some(FRAME_SAMPLES as u32), "{p:02x?}");
            assert_eq!(opus_stereo(p), stereo, "{p:02x?}");
            let got = dec.decode(p, &mut out).unwrap();
            assert_eq!(got, FRAME_SAMPLES);
            out[..got * to.channels()].to_vec()
        })
        .collect()
}

#[test]
fn babel_stereo_plays_through_the_accounts_mono_decoder() {
    // A stereo source (the right channel quieter): stereo-coded packets.
    let frames = carry(Profile::Babel, Profile::Accounts, 0.75, true);
    // After the codec's start, the tone is there at about its level.
    let level = rms(&frames[10..].concat());
    assert!(level > 2000.0, "rms {level}");
}

#[test]
fn babel_mono_coded_packets_play_through_the_accounts_mono_decoder() {
    // Both channels the same (a microphone): babel's encoder codes them
    // mono in its stereo stream (docs/protocols/babel.md).
    let frames = carry(Profile::Babel, Profile::Accounts, 1.0, false);
    let level = rms(&frames[10..].concat());
    assert!(level > 2000.0, "rms {level}");
}

#[test]
fn accounts_mono_plays_through_the_babel_stereo_decoder_on_both_channels() {
    let frames = carry(Profile::Accounts, Profile::Babel, 1.0, false);
    let pcm = frames[10..].concat();
    let (left, right): (Vec<i16>, Vec<i16>) = pcm.chunks(2).map(|c| (c[0], c[1])).unzip();
    assert!(rms(&left) > 2000.0, "rms {}", rms(&left));
    assert_eq!(left, right, "a mono packet plays the same on both channels");
}
