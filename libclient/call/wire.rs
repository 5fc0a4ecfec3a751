//! What a call's transport units carry, per dialect: the one place that
//! knows babel sends bare Opus packets as VoiceData payloads while accounts
//! sends datagrams (magic, kind, seq, timestamp) with receiver reports. The
//! transports only move units; the pipeline only sees packets.

use std::time::Instant;

use chinwag_proto::accounts::{decode_voice, encode_voice, MAX_VOICE};
use chinwag_proto::babel::MAX_VOICE as MAX_BABEL_VOICE;
use chinwag_proto::voice::{Report, VoicePacket};

use crate::audio::{CallAudio, EncodedFrame, Profile};
use crate::core::{check_len_bytes, Result};

/// The unit carrying an application's own payload: babel, the VoiceData
/// payload itself; accounts, a datagram of the magic and the payload (the
/// packet layout after the magic is then the application's).
pub(super) fn raw_unit(profile: Profile, payload: &[u8]) -> Result<Vec<u8>> {
    match profile {
        Profile::Babel => {
            check_len_bytes("babel", "voice payload", payload.len(), MAX_BABEL_VOICE)?;
            Ok(payload.to_vec())
        }
        Profile::Accounts => {
            check_len_bytes("accounts", "voice payload", payload.len(), MAX_VOICE)?;
            let mut out = Vec::with_capacity(4 + payload.len());
            encode_voice(&mut out, payload);
            Ok(out)
        }
    }
}

/// The application's payload in a received unit; `None` for a datagram
/// that is not a voice packet (another magic), which is dropped.
pub(super) fn raw_body(profile: Profile, unit: Vec<u8>) -> Option<Vec<u8>> {
    match profile {
        Profile::Babel => Some(unit),
        Profile::Accounts => decode_voice(&unit).ok().map(<[u8]>::to_vec),
    }
}

/// The unit carrying one frame the library encoded.
pub(super) fn frame_unit(profile: Profile, frame: &EncodedFrame) -> Vec<u8> {
    match profile {
        Profile::Babel => frame.opus.clone(),
        Profile::Accounts => frame.accounts_packet(),
    }
}

/// The unit carrying a receiver report (accounts only: babel has none).
pub(super) fn report_unit(report: Report) -> Vec<u8> {
    VoicePacket::Report(report).to_bytes()
}

/// Hand a received unit to the pipeline. A datagram that is not a voice
/// packet is dropped (false).
pub(super) fn feed(profile: Profile, audio: &mut CallAudio, now: Instant, unit: &[u8]) -> bool {
    match profile {
        Profile::Babel => {
            audio.receive_in_order(now, unit);
            true
        }
        Profile::Accounts => audio.receive_datagram(now, unit).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ErrorKind;

    #[test]
    fn raw_units_per_dialect() {
        assert_eq!(raw_unit(Profile::Babel, b"xy").unwrap(), b"xy");
        assert_eq!(raw_unit(Profile::Accounts, b"xy").unwrap(), b"CWVCxy");
        assert_eq!(
            raw_unit(Profile::Accounts, &[0; MAX_VOICE + 1])
                .unwrap_err()
                .code,
            ErrorKind::TooLong
        );
        assert_eq!(
            raw_body(Profile::Accounts, b"CWVCab".to_vec()).unwrap(),
            b"ab"
        );
        assert_eq!(raw_body(Profile::Accounts, b"XXXXab".to_vec()), None);
        assert_eq!(raw_body(Profile::Babel, b"ab".to_vec()).unwrap(), b"ab");
    }
}
