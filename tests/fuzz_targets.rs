//! The fuzz targets that drive the library (`call_receive`,
//! `rooms_client`), compiled as they are and run over their kept seeds
//! and corpus and a few fixed inputs (fuzz/common/shim.rs): a target that
//! no longer builds, or panics on what it once took, fails `cargo test`.
//! chinwagd's own unit tests do the same for the other targets
//! (server/src/fuzz_targets.rs).

// The targets as written for cargo-fuzz (which lints them on its own):
// `#![no_main]`, their shared input module, their own idioms.
#![allow(
    unused_attributes,
    clippy::duplicate_mod,
    clippy::manual_is_multiple_of
)]

extern crate self as libfuzzer_sys;

#[path = "../fuzz/common/shim.rs"]
mod shim;

#[path = "../fuzz/fuzz_targets/call_receive.rs"]
mod call_receive;

#[path = "../fuzz/fuzz_targets/rooms_client.rs"]
mod rooms_client;

#[cfg(test)]
mod tests {
    use super::shim;

    #[test]
    fn call_receive() {
        shim::run_all(
            "call_receive",
            shim::MOST,
            &shim::extra(),
            super::call_receive::run,
        );
    }

    #[test]
    fn rooms_client() {
        shim::run_all(
            "rooms_client",
            shim::MOST,
            &shim::extra(),
            super::rooms_client::run,
        );
    }
}
