//! Any bytes into the accounts decoder and the voice packet parser: refusal
//! is fine, a panic is a bug; an accepted frame re-encodes to its bytes.
#![no_main]
use chinwag_proto::accounts::{decode_voice, Decoder, Frame};
use chinwag_proto::voice::VoicePacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((f, used)) = Frame::decode(data) {
        assert_eq!(f.to_bytes(), &data[..used]);
    }
    if data.len() >= 2 {
        let code = u16::from_be_bytes([data[0], data[1]]);
        let _ = Frame::decode_payload(code, &data[2..]);
    }
    let _ = decode_voice(data);
    if let Ok(p) = VoicePacket::decode(data) {
        assert_eq!(p.to_bytes(), data);
    }
    let mut d = Decoder::new();
    for chunk in data.chunks(7) {
        d.push(chunk);
        while let Ok(Some(_)) = d.next_frame() {}
    }
});
