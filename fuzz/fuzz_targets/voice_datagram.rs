//! Any datagram into the accounts UDP voice decoder (CWVC magic, media and
//! receiver reports with their flag bits): refusal is fine, a panic is a
//! bug; an accepted packet re-encodes to exactly the datagram, and the Opus
//! duration read from a TOC byte stays within RFC 6716's 120 ms.
#![no_main]
use chinwag_proto::accounts::MAX_VOICE;
use chinwag_proto::voice::{opus_samples, VoicePacket, MAX_MEDIA_PACKET, REPORT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = VoicePacket::decode(data) {
        assert_eq!(p.to_bytes(), data, "one encoding per packet");
        assert!(data.len() <= MAX_MEDIA_PACKET);
        match p {
            VoicePacket::Media { opus, .. } => {
                assert!(!opus.is_empty() && opus.len() <= MAX_VOICE)
            }
            VoicePacket::Report(r) => {
                assert_eq!(data.len(), REPORT_LEN);
                assert!(r.loss_pct <= 100);
                assert!(!r.no_media || r.loss_pct == 0);
            }
        }
    }
    if let Some(n) = opus_samples(data) {
        assert!(n > 0 && n <= 5760, "{n} samples");
    }
});
