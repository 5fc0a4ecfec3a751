//! A call's speaker and microphone: the speaker's device thread pulls the
//! call's PCM, a `chinwag-mic` thread pushes what the microphone captures.
//! Both hold the call only weakly, so dropping the call stops them; neither
//! ever touches the call's socket except through the call's own sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Call, DeviceInfo, Inner, Receiving};
use crate::audio::codec::FRAME_SAMPLES;
use crate::audio::device::{self, Microphone, Speaker};
use crate::core::{threads, ErrorKind, Result};

/// How long the capture thread waits for a frame before looking at its
/// stop flag again.
const CAPTURE_POLL: Duration = Duration::from_millis(100);

/// Speakers the system lists, by the names [`Call::use_speaker`] takes.
pub fn output_devices() -> Result<Vec<DeviceInfo>> {
    Ok(device::output_devices()?)
}

/// Microphones the system lists, by the names [`Call::use_microphone`] takes.
pub fn input_devices() -> Result<Vec<DeviceInfo>> {
    Ok(device::input_devices()?)
}

struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The devices attached to one call.
#[derive(Default)]
pub(super) struct Devices {
    speaker: Option<Speaker>,
    mic: Option<Capture>,
}

/// Detach and close every device of the call (from any thread but the
/// speaker's own).
pub(super) fn release(inner: &Inner) {
    // The speaker closes as this returns: after the microphone's thread
    // is joined, outside the lock.
    let (_speaker, mic) = {
        let mut d = inner.devices.lock();
        (d.speaker.take(), d.mic.take())
    };
    inner.mic_on.store(false, Ordering::Release);
    inner.speaker_on.store(false, Ordering::Release);
    if let Some(c) = mic {
        c.stop.store(true, Ordering::Release);
        if c.thread.thread().id() != std::thread::current().id() {
            let _ = c.thread.join();
        }
    }
}

impl Call {
    /// Play the call on the speaker `name` (`None` or "": the system's
    /// default) and feed it from the microphone `name`: both defaults.
    /// Either failing leaves neither attached.
    pub fn use_devices(&self) -> Result<()> {
        self.use_speaker(None)?;
        if let Err(e) = self.use_microphone(None) {
            self.stop_devices();
            return Err(e);
        }
        Ok(())
    }

    /// Play what the peer sends on the speaker `name` (`None` or "": the
    /// default), replacing a speaker already attached. From then on the
    /// device pulls the call's PCM every 20 ms; `recv_pcm` is refused.
    /// `NoDevice`, `DeviceFailed`, `DeviceSupportMissing`; `Closed`;
    /// `InvalidArgument` when the call's voice is received raw.
    pub fn use_speaker(&self, name: Option<&str>) -> Result<DeviceInfo> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.choose(&mut inner.audio.lock(), Receiving::Decoded)?;
        {
            // The old speaker closes before the new one opens, outside the lock.
            let _old = inner.devices.lock().speaker.take();
        }
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let speaker = Speaker::open(name, inner.profile.channels(), move |frame| {
            if let Some(i) = weak.upgrade() {
                // Over and drained: the frame stays silent.
                let _ = i.pull(Instant::now(), frame);
            }
        })?;
        let info = speaker.device().clone();
        inner.devices.lock().speaker = Some(speaker);
        inner.speaker_on.store(true, Ordering::Release);
        log::info!("call with {}: playing on {}", inner.peer, info.id);
        Ok(info)
    }

    /// Send what the microphone `name` (`None` or "": the default)
    /// captures, replacing a microphone already attached; `send_pcm` is
    /// refused meanwhile. Errors as [`Call::use_speaker`].
    pub fn use_microphone(&self, name: Option<&str>) -> Result<DeviceInfo> {
        let inner = &self.inner;
        inner.check_open()?;
        let old = inner.devices.lock().mic.take();
        if let Some(c) = old {
            c.stop.store(true, Ordering::Release);
            let _ = c.thread.join();
        }
        let channels = inner.profile.channels();
        let mic = Microphone::open(name, channels)?;
        let info = mic.device().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, s2) = (Arc::downgrade(inner), stop.clone());
        let thread = threads::spawn("chinwag-mic", move || {
            if let Err(why) = threads::catch(|| capture(&mic, &weak, &s2, channels)) {
                log::error!("the library's chinwag-mic thread panicked: {why}");
            }
        })?;
        inner.devices.lock().mic = Some(Capture { stop, thread });
        inner.mic_on.store(true, Ordering::Release);
        log::info!("call with {}: capturing from {}", inner.peer, info.id);
        Ok(info)
    }

    /// Close the call's speaker and microphone (if any); PCM may be pushed
    /// and pulled again. The call goes on.
    pub fn stop_devices(&self) {
        release(&self.inner);
    }
}

/// The capture thread: 20 ms at a time from the microphone into the call,
/// until stopped, the call is gone or over, or the device fails.
fn capture(mic: &Microphone, call: &Weak<Inner>, stop: &AtomicBool, channels: usize) {
    let mut frame = vec![0i16; FRAME_SAMPLES * channels];
    while !stop.load(Ordering::Acquire) {
        match mic.read(&mut frame, CAPTURE_POLL) {
            Ok(true) => {
                let Some(inner) = call.upgrade() else { return };
                if let Err(e) = inner.send_pcm(&frame) {
                    if e.code == ErrorKind::Closed {
                        return;
                    }
                    log::warn!(
                        "call with {}: captured audio not sent: {}",
                        inner.peer,
                        e.message
                    );
                }
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("{e}; the call goes on without a microphone");
                return;
            }
        }
    }
}
