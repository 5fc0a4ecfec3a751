//! Any bytes into the babel decoder: refusal is fine, a panic or a huge
//! allocation is a bug; an accepted frame re-encodes to its bytes.
#![no_main]
use chinwag_proto::babel::{Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((f, used)) = Frame::decode(data) {
        assert_eq!(f.to_bytes(), &data[..used]);
    }
    if data.len() >= 2 {
        let _ = Frame::decode_payload(u16::from_le_bytes([data[0], data[1]]), &data[2..]);
    }
    let mut d = Decoder::new();
    for chunk in data.chunks(5) {
        d.push(chunk);
        while let Ok(Some(_)) = d.next_frame() {}
    }
});
