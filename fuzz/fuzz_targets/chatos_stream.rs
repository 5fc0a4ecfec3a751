//! Any bytes, split anywhere, into the chatos decoder: it may refuse them,
//! never panic; whatever it accepts must re-encode to the bytes it used,
//! and decoding in place (as the server does) must agree byte for byte.
#![no_main]
use chinwag_proto::chatos::{Command, CommandRef, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let owned = Command::decode(data);
    if let Ok((cmd, used)) = &owned {
        assert_eq!(cmd.to_bytes(), &data[..*used]);
    }
    // The server's in-place decode says exactly what the owned one says.
    let in_place = CommandRef::decode(data).map(|(c, used)| (c.into_owned(), used));
    assert_eq!(in_place, owned);
    let _ = Command::decode_exact(data);
    let split = data
        .first()
        .map(|b| *b as usize % (data.len() + 1))
        .unwrap_or(0);
    let mut d = Decoder::new();
    d.push(&data[..split]);
    while let Ok(Some(_)) = d.next_command() {}
    d.push(&data[split..]);
    while let Ok(Some(_)) = d.next_command() {}
});
