//! ALSA configurations that make a speaker and a microphone of files over
//! ALSA's `null` plugin, so device audio is tested without a sound card.
//! A configuration is a whole ALSA configuration: written into a folder
//! and named by `ALSA_CONFIG_PATH` in one process's environment only.

use std::path::{Path, PathBuf};

/// For a call on the default devices: the speaker (`chinwag_play` by
/// name) plays into `played.raw` (16-bit little-endian stereo at 48 kHz,
/// fixed by the `plug` in front), the microphone (`chinwag_mic`) captures
/// `capture.raw` in whatever format the stream asks (16-bit at 48 kHz, the
/// call's channels). The two are kept apart: one `file` device would also
/// write what it captures into the file it plays into.
pub const CALL_DEVICES: &str = r#"
pcm.!default {
    type asym
    playback.pcm "chinwag_play"
    capture.pcm "chinwag_mic"
    hint { show on description "chinwag test default" }
}
pcm.chinwag_play {
    type plug
    slave { pcm "chinwag_tap" format S16_LE rate 48000 channels 2 }
    hint { show on description "chinwag test speaker" }
}
pcm.chinwag_tap {
    type file
    slave.pcm "chinwag_null"
    file "@DIR@/played.raw"
    format "raw"
}
pcm.chinwag_mic {
    type file
    slave.pcm "chinwag_null"
    file "/dev/null"
    infile "@DIR@/capture.raw"
    format "raw"
    hint { show on description "chinwag test microphone" }
}
pcm.chinwag_null {
    type null
}
"#;

/// No device at all: the default points at a card that does not exist.
pub const NO_DEVICES: &str = r#"
pcm.!default {
    type hw
    card 99
}
"#;

/// Write `config` into `dir` (its `@DIR@` becomes `dir`, where the
/// devices' files are); the path to name in `ALSA_CONFIG_PATH`.
pub fn write_config(dir: &Path, config: &str) -> PathBuf {
    let conf = dir.join("asound.conf");
    let text = config.replace("@DIR@", dir.to_str().expect("a UTF-8 temporary folder"));
    std::fs::write(&conf, text).expect("the ALSA configuration is written");
    conf
}
