//! Every fuzz target that drives chinwagd or the codecs, compiled as it
//! is and run over its kept seeds and corpus and a few fixed inputs
//! (fuzz/common/shim.rs): a target that no longer builds, or panics on
//! what it once took, fails `cargo test`. The library's two targets are in
//! tests/fuzz_targets.rs.

// The targets as written for cargo-fuzz (which lints them on its own):
// `#![no_main]`, their shared input module, their own idioms.
#![allow(
    unused_attributes,
    clippy::duplicate_mod,
    clippy::manual_is_multiple_of
)]

#[path = "../../fuzz/common/shim.rs"]
mod shim;

#[path = "../../fuzz/fuzz_targets/accounts_service.rs"]
mod accounts_service;

#[path = "../../fuzz/fuzz_targets/accounts_stream.rs"]
mod accounts_stream;

#[path = "../../fuzz/fuzz_targets/babel_stream.rs"]
mod babel_stream;

#[path = "../../fuzz/fuzz_targets/bus_envelope.rs"]
mod bus_envelope;

#[path = "../../fuzz/fuzz_targets/chatos_stream.rs"]
mod chatos_stream;

#[path = "../../fuzz/fuzz_targets/config_parse.rs"]
mod config_parse;

#[path = "../../fuzz/fuzz_targets/hub_sequence.rs"]
mod hub_sequence;

#[path = "../../fuzz/fuzz_targets/media_relay.rs"]
mod media_relay;

#[path = "../../fuzz/fuzz_targets/rooms_datagram.rs"]
mod rooms_datagram;

#[path = "../../fuzz/fuzz_targets/rooms_reliable.rs"]
mod rooms_reliable;

#[path = "../../fuzz/fuzz_targets/rooms_server_state.rs"]
mod rooms_server_state;

#[path = "../../fuzz/fuzz_targets/voice_datagram.rs"]
mod voice_datagram;

#[cfg(test)]
mod tests {
    use super::shim;

    #[test]
    fn accounts_service() {
        let made = shim::run_all(
            "accounts_service",
            shim::MOST,
            &shim::extra(),
            super::accounts_service::run,
        );
        // Every kept input still makes an input of the target's type.
        let kept = shim::inputs("accounts_service", shim::MOST, &[]).len();
        assert!(kept > 0, "no kept inputs");
        assert!(
            made[..kept].iter().all(|m| *m),
            "a kept input no longer makes one"
        );
    }

    #[test]
    fn accounts_stream() {
        shim::run_all(
            "accounts_stream",
            shim::MOST,
            &shim::extra(),
            super::accounts_stream::run,
        );
    }

    #[test]
    fn babel_stream() {
        shim::run_all(
            "babel_stream",
            shim::MOST,
            &shim::extra(),
            super::babel_stream::run,
        );
    }

    #[test]
    fn bus_envelope() {
        shim::run_all(
            "bus_envelope",
            shim::MOST,
            &shim::extra(),
            super::bus_envelope::run,
        );
    }

    #[test]
    fn chatos_stream() {
        shim::run_all(
            "chatos_stream",
            shim::MOST,
            &shim::extra(),
            super::chatos_stream::run,
        );
    }

    #[test]
    fn config_parse() {
        shim::run_all(
            "config_parse",
            shim::MOST,
            &shim::extra(),
            super::config_parse::run,
        );
    }

    #[test]
    fn hub_sequence() {
        let made = shim::run_all(
            "hub_sequence",
            shim::MOST,
            &shim::extra(),
            super::hub_sequence::run,
        );
        // Every kept input still makes an input of the target's type.
        let kept = shim::inputs("hub_sequence", shim::MOST, &[]).len();
        assert!(kept > 0, "no kept inputs");
        assert!(
            made[..kept].iter().all(|m| *m),
            "a kept input no longer makes one"
        );
    }

    #[test]
    fn media_relay() {
        shim::run_all(
            "media_relay",
            shim::MOST,
            &shim::extra(),
            super::media_relay::run,
        );
    }

    #[test]
    fn rooms_datagram() {
        shim::run_all(
            "rooms_datagram",
            shim::MOST,
            &shim::extra(),
            super::rooms_datagram::run,
        );
    }

    #[test]
    fn rooms_reliable() {
        shim::run_all(
            "rooms_reliable",
            shim::MOST,
            &shim::extra(),
            super::rooms_reliable::run,
        );
    }

    #[test]
    fn rooms_server_state() {
        shim::run_all(
            "rooms_server_state",
            shim::MOST,
            &shim::extra(),
            super::rooms_server_state::run,
        );
    }

    #[test]
    fn voice_datagram() {
        shim::run_all(
            "voice_datagram",
            shim::MOST,
            &shim::extra(),
            super::voice_datagram::run,
        );
    }
}
