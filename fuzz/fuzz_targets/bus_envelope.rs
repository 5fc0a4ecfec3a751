//! Any bytes as a cluster bus message (a payload from NATS, or the value
//! of a name claim): the envelope decoder may refuse them, never panic;
//! whatever it accepts must re-encode to exactly those bytes.
#![no_main]
use chinwag_proto::bus::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.to_bytes(), data);
    }
});
