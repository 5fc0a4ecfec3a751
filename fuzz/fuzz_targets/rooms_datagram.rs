//! Any datagram into the rooms decoder: refusal is fine, a panic is a bug;
//! an accepted message re-encodes to exactly the datagram.
#![no_main]
use chinwag_proto::rooms::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.to_bytes(), data);
    }
});
