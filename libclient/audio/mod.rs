//! Call audio for every dialect: Opus ([`codec`]), the jitter buffer
//! ([`jitter`]), the per-call pipeline with its statistics ([`pipeline`]),
//! and speakers and microphones ([`device`]). No sockets here: the call code
//! moves the packets, this decides what they carry and what is played.

pub mod codec;
pub mod device;
pub mod jitter;
pub mod pipeline;
pub mod stretch;

pub use codec::{Profile, FRAME_SAMPLES, SAMPLE_RATE};
pub use pipeline::{CallAudio, CallStats, EncodedFrame};

use std::fmt;

/// Why an audio operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioError {
    /// PCM of the wrong shape (not whole frames, wrong channel count).
    Format(String),
    /// Opus refused something (it should not, with our settings).
    Codec(String),
    /// No such device, or no device at all.
    NoDevice(String),
    /// The device exists but failed to open or run.
    Device(String),
    /// libchinwag was built without the `device` feature.
    DeviceSupportMissing,
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::Format(m) | AudioError::Codec(m) | AudioError::Device(m) => f.write_str(m),
            AudioError::NoDevice(m) => f.write_str(m),
            AudioError::DeviceSupportMissing => f.write_str(
                "device audio is not built in: libchinwag was compiled without its \
                 `device` feature (the PCM functions still work)",
            ),
        }
    }
}

impl std::error::Error for AudioError {}

/// PCM must be whole sample frames: `len` interleaved samples of `channels`.
fn check_whole_frames(len: usize, channels: usize) -> Result<(), AudioError> {
    if !len.is_multiple_of(channels) {
        return Err(AudioError::Format(format!(
            "{len} samples is not a whole number of {channels}-channel sample frames"
        )));
    }
    Ok(())
}
