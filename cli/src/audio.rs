//! A call's sound: which microphone and speaker a call uses, attaching them
//! when the call is established, mute, volume and statistics. Owns the
//! `Call`s this client takes part in (dropping one hangs it up); never
//! signals anything to the server, which is the session's business.

use chinwag::call::{input_devices, output_devices, DeviceInfo};
use chinwag::{Call, ErrorKind, Side};

/// Said when a call cannot have sound because of how chinwag was built.
pub const NO_SUPPORT: &str = "no sound: this chinwag was built without device support \
     (build it with --features chinwag/device)";

/// The options naming a call's devices, as `/call` and `/answer` take them.
pub const DEVICE_OPTIONS: &str = "[--mic DEV] [--speaker DEV]";

/// The microphone and speaker chosen for a call; `None` is the system's
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub mic: Option<String>,
    pub speaker: Option<String>,
}

impl Devices {
    /// `--mic NAME` and `--speaker NAME`, in any order, each at most once.
    pub fn parse(args: &[&str]) -> Result<Devices, String> {
        let mut d = Devices::default();
        let mut it = args.iter();
        while let Some(opt) = it.next() {
            let slot = match *opt {
                "--mic" => &mut d.mic,
                "--speaker" => &mut d.speaker,
                other => return Err(format!("unknown option {other:?}: {DEVICE_OPTIONS}")),
            };
            let name = it
                .next()
                .ok_or(format!("{opt} needs a device name (/devices)"))?;
            if slot.replace(name.to_string()).is_some() {
                return Err(format!("{opt} given twice"));
            }
        }
        Ok(d)
    }
}

/// One established call and its sound.
pub struct CallAudio {
    pub call: Call,
    /// What plays and captures it, for `/calls` and `/stats`.
    sound: String,
}

/// Why a device could not be attached, in the user's words.
fn device_error(e: &chinwag::Error) -> String {
    match e.code {
        ErrorKind::NoDevice => format!("no audio device: {}", e.message),
        ErrorKind::DeviceFailed => format!("audio device failed: {}", e.message),
        _ => e.message.clone(),
    }
}

impl CallAudio {
    /// Attach the chosen speaker and microphone to an established call,
    /// each on its own, so a machine with only one of them still hears or
    /// is heard. The call goes on whatever happens here; the line returned
    /// says what sound it has.
    pub fn start(call: Call, devices: &Devices) -> (CallAudio, String) {
        let speaker = call.use_speaker(devices.speaker.as_deref());
        let mic = call.use_microphone(devices.mic.as_deref());
        let unsupported = |r: &chinwag::Result<DeviceInfo>| matches!(r, Err(e) if e.code == ErrorKind::DeviceSupportMissing);
        let (sound, note) = if unsupported(&speaker) || unsupported(&mic) {
            call.stop_devices();
            ("no sound".to_string(), NO_SUPPORT.to_string())
        } else {
            match (speaker, mic) {
                (Ok(s), Ok(m)) => {
                    let sound = format!("microphone {}, speaker {}", m.id, s.id);
                    (sound.clone(), format!("sound: {sound}"))
                }
                (Ok(s), Err(m)) => (
                    format!("no microphone, speaker {}", s.id),
                    format!(
                        "{}; you hear but are not heard (/devices lists the devices)",
                        device_error(&m)
                    ),
                ),
                (Err(s), Ok(m)) => (
                    format!("microphone {}, no speaker", m.id),
                    format!(
                        "{}; you are heard but hear nothing (/devices lists the devices)",
                        device_error(&s)
                    ),
                ),
                (Err(s), Err(m)) => {
                    let (s, m) = (device_error(&s), device_error(&m));
                    // One sentence when both failed for the same reason.
                    let m = m
                        .strip_prefix("no audio device: ")
                        .unwrap_or(&m)
                        .to_string();
                    (
                        "no sound".to_string(),
                        format!(
                            "{s}; {m}; the call goes on without sound (/devices lists the devices)"
                        ),
                    )
                }
            }
        };
        (CallAudio { call, sound }, note)
    }

    /// One line about the call, for `/calls`.
    pub fn describe(&self) -> String {
        let mut levels = Vec::new();
        for (side, name) in [(Side::Microphone, "microphone"), (Side::Speaker, "speaker")] {
            if self.call.muted(side) {
                levels.push(format!("{name} muted"));
            }
            let v = self.call.volume(side);
            if v != 1.0 {
                levels.push(format!("{name} volume {}%", percent(v)));
            }
        }
        let levels = if levels.is_empty() {
            String::new()
        } else {
            format!("; {}", levels.join(", "))
        };
        format!("call with {}: {}{levels}", self.call.peer(), self.sound)
    }

    /// `/stats`: what the call's audio has done so far.
    pub fn stats(&self) -> Vec<String> {
        let s = self.call.stats();
        let kb = |b: u64| b.div_ceil(1000);
        let kbit = |bps: u32| f64::from(bps) / 1000.0;
        let rtt = s
            .rtt_ms
            .map_or("unknown".to_string(), |r| format!("{r:.0} ms"));
        vec![
            self.describe(),
            format!(
                "  sent {} packets ({} kB, {:.1} kbit/s); received {} packets ({} kB, {:.1} kbit/s)",
                s.packets_sent,
                kb(s.bytes_sent),
                kbit(s.send_bitrate),
                s.packets_received,
                kb(s.bytes_received),
                kbit(s.recv_bitrate)
            ),
            format!(
                "  lost {}, late {}, duplicate {}; frames concealed {} ({} from FEC), dropped {}",
                s.packets_lost,
                s.packets_late,
                s.packets_duplicate,
                s.frames_concealed,
                s.frames_concealed_fec,
                s.frames_dropped
            ),
            format!(
                "  playout delay {:.0} ms (target {:.0} ms), jitter {:.1} ms, round trip {rtt}",
                s.playout_delay_ms, s.target_delay_ms, s.jitter_ms
            ),
        ]
    }
}

/// `mic` or `speaker`, as `/mute`, `/unmute` and `/volume` take them.
pub fn side(word: &str) -> Option<Side> {
    match word {
        "mic" | "microphone" => Some(Side::Microphone),
        "speaker" => Some(Side::Speaker),
        _ => None,
    }
}

/// A volume factor as a percentage (1.0 is 100 %).
pub fn percent(v: f32) -> u32 {
    (v * 100.0).round() as u32
}

/// `/devices`: the microphones and speakers `--mic` and `--speaker` name.
pub fn list_devices() -> Vec<String> {
    let mut out = Vec::new();
    for (what, list) in [
        ("microphones", input_devices()),
        ("speakers", output_devices()),
    ] {
        match list {
            Err(e) if e.code == ErrorKind::DeviceSupportMissing => return vec![NO_SUPPORT.into()],
            Err(e) => out.push(format!("! {what}: {}", device_error(&e))),
            Ok(l) if l.is_empty() => out.push(format!("{what}: none")),
            Ok(l) => {
                out.push(format!("{what}:"));
                out.extend(l.iter().map(|d| {
                    if d.name.is_empty() || d.name == d.id {
                        format!("  {}", d.id)
                    } else {
                        format!("  {:<24} {}", d.id, d.name)
                    }
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_options_parse() {
        assert_eq!(Devices::parse(&[]), Ok(Devices::default()));
        assert_eq!(
            Devices::parse(&["--speaker", "hw:CARD=A", "--mic", "usb"]),
            Ok(Devices {
                mic: Some("usb".into()),
                speaker: Some("hw:CARD=A".into())
            })
        );
        assert!(Devices::parse(&["--mic"]).is_err());
        assert!(Devices::parse(&["--mic", "a", "--mic", "b"]).is_err());
        assert!(Devices::parse(&["loud"]).is_err());
    }
}
