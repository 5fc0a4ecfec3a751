//! Any bytes, split anywhere, into the chatos decoder: it may refuse them,
//! never panic; whatever it accepts must re-encode to the bytes it used.
#![no_main]
use chinwag_proto::chatos::{Command, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((cmd, used)) = Command::decode(data) {
        assert_eq!(cmd.to_bytes(), &data[..used]);
    }
    let _ = Command::decode_exact(data);
    let split = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut d = Decoder::new();
    d.push(&data[..split]);
    while let Ok(Some(_)) = d.next_command() {}
    d.push(&data[split..]);
    while let Ok(Some(_)) = d.next_command() {}
});
