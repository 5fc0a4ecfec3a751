//! Speakers and microphones for apps that want a call to just work: rodio
//! plays (its mixer converts our 48 kHz to whatever the device runs at),
//! cpal (rodio's, re-exported) captures at 48 kHz. Owns device handles only:
//! it pulls and pushes PCM through the closures and buffers it is given and
//! never touches a call's network side. Without the `device` cargo feature
//! every function here fails with [`AudioError::DeviceSupportMissing`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
#[cfg(not(feature = "device"))]
use std::time::Duration;

use super::AudioError;

/// A device as the system names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The identifier to open it by (ALSA: the PCM name, e.g. `default`).
    pub id: String,
    /// A human-readable name (ALSA: the first line of its description).
    pub name: String,
}

/// Captured audio kept at most: 200 ms. When the reader falls behind, the
/// oldest audio goes, because late speech is worth less than current speech.
pub const CAPTURE_BUFFER_MS: usize = 200;
/// The largest volume factor (twice as loud as captured or decoded).
pub const MAX_VOLUME: f32 = 2.0;
/// Whether this build can open devices (the `device` cargo feature);
/// without it, opening or listing one fails with `DeviceSupportMissing`.
pub const DEVICE_SUPPORT: bool = cfg!(feature = "device");

/// A device's volume and mute, shared with the device's thread: change them
/// from any thread while audio flows.
#[derive(Debug)]
pub struct Level {
    volume: AtomicU32,
    muted: AtomicBool,
}

impl Default for Level {
    fn default() -> Self {
        Level {
            volume: AtomicU32::new(1.0f32.to_bits()),
            muted: AtomicBool::new(false),
        }
    }
}

impl Level {
    /// 1.0 leaves the audio as it is; 0.0 to [`MAX_VOLUME`] (clamped).
    pub fn set_volume(&self, volume: f32) {
        self.volume
            .store(clamp_volume(volume).to_bits(), Ordering::Relaxed);
    }

    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Ordering::Relaxed))
    }

    /// Muted, audio keeps flowing (a microphone captures silence, so the
    /// call keeps its timing; a speaker keeps pulling, so the jitter buffer
    /// keeps draining) and nothing is heard.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// The factor applied to each sample now.
    pub(crate) fn gain(&self) -> f32 {
        if self.muted() {
            0.0
        } else {
            self.volume()
        }
    }

    /// Apply the level to 16-bit samples in place (saturating).
    pub(crate) fn apply(&self, samples: &mut [i16]) {
        let g = self.gain();
        if g == 1.0 {
            return;
        }
        if g == 0.0 {
            samples.fill(0);
            return;
        }
        for s in samples {
            *s = (f32::from(*s) * g).round().clamp(-32768.0, 32767.0) as i16;
        }
    }
}

#[cfg(feature = "device")]
pub use imp::{input_devices, output_devices, Microphone, Speaker};
#[cfg(not(feature = "device"))]
pub use stub::{input_devices, output_devices, Microphone, Speaker};

// Used by the device build (and its unit test) only.
#[cfg_attr(not(feature = "device"), allow(dead_code))]
fn clamp_volume(v: f32) -> f32 {
    if v.is_nan() {
        1.0
    } else {
        v.clamp(0.0, MAX_VOLUME)
    }
}

// Used by the device build (and its unit test) only.
#[cfg_attr(not(feature = "device"), allow(dead_code))]
/// Mix or spread one device frame to `want` channels.
fn convert_frame(frame: &[f32], want: usize, out: &mut impl Extend<f32>) {
    match (frame.len(), want) {
        (n, w) if n == w => out.extend(frame.iter().copied()),
        (n, 1) => out.extend([frame.iter().sum::<f32>() / n as f32]),
        (1, w) => out.extend(std::iter::repeat_n(frame[0], w)),
        (n, w) if n > w => out.extend(frame[..w].iter().copied()),
        (_, w) => {
            // More channels wanted than the device has: repeat the last.
            let last = *frame.last().unwrap_or(&0.0);
            out.extend(frame.iter().copied().chain(std::iter::repeat(last)).take(w));
        }
    }
}

// Used by the device build (and its unit test) only.
#[cfg_attr(not(feature = "device"), allow(dead_code))]
fn to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(feature = "device")]
mod imp {
    use std::collections::VecDeque;
    use std::num::NonZero;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use parking_lot::{Condvar, Mutex};
    use rodio::cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use rodio::cpal::{self, SampleFormat, StreamConfig};
    use rodio::{DeviceSinkBuilder, MixerDeviceSink, Player, Source};

    /// Whether a stream error only says that a signal interrupted the
    /// device thread's wait: cpal's ALSA thread hands the `EINTR` of its
    /// `poll` (never restarted, whatever `SA_RESTART` says) to the error
    /// callback as a backend error, then simply polls again. The stream is
    /// fine; only alsa's text of the errno tells it apart.
    pub(super) fn interrupted(e: &cpal::Error) -> bool {
        e.kind() == cpal::ErrorKind::BackendError
            && e.message()
                .is_some_and(|m| m.contains("Interrupted system call"))
    }

    /// Signals left deliverable on the device threads: the synchronous
    /// ones a fault raises in the faulting thread (blocking them would not
    /// stop them, only make the kernel kill the process), and SIGABRT.
    const FAULTS: [libc::c_int; 7] = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGABRT,
    ];

    /// Run `open` on a short-lived thread of the library whose signal mask
    /// blocks every other signal, and give back what it made. A thread
    /// starts with its creator's mask, so the threads that cpal (and ALSA
    /// plugins such as pulse) start for the stream inherit it and no signal
    /// of the application ever interrupts a device call: ALSA's `file`
    /// plugin (and others) does not retry a `read` or blocking `open` that
    /// a signal interrupts (alsa-lib 1.2.8 logs "read from file failed ...
    /// Interrupted system call" on stderr and hands over a period it never
    /// filled), and cpal reports an interrupted `poll` as a stream error.
    /// The application's own threads keep their masks: a signal sent to the
    /// process goes to one of them.
    pub(super) fn without_signals<T: Send>(
        open: impl FnOnce() -> Result<T, AudioError> + Send,
    ) -> Result<T, AudioError> {
        std::thread::scope(|s| {
            let t = std::thread::Builder::new()
                .name("chinwag-device".into())
                .spawn_scoped(s, || {
                    block_signals();
                    open()
                })
                .map_err(|e| AudioError::Device(format!("cannot start a thread: {e}")))?;
            t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Run `close` (which stops and drops a device's streams) on a thread
    /// of [`without_signals`]: closing a playback stream writes out what
    /// ALSA's `file` plugin still buffers, and alsa-lib 1.2.8 asserts
    /// (aborting the process) when a signal interrupts that write, as one
    /// does on a pipe. If no thread can be started, `close` is dropped
    /// unrun, which still drops the streams it holds.
    fn close_without_signals(close: impl FnOnce() + Send) {
        let _ = without_signals(move || {
            close();
            Ok(())
        });
    }

    /// Block every signal but [`FAULTS`] in the calling thread.
    fn block_signals() {
        // SAFETY: the set is initialised by sigfillset before use; the
        // calls only change this thread's mask (glibc keeps its own
        // internal signals out of it).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in FAULTS {
                libc::sigdelset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }

    /// The speaker's stream errors: a signal is nothing, anything else is
    /// logged (rodio's default would print every one on stderr).
    fn speaker_error(e: cpal::Error) {
        if !interrupted(&e) {
            log::warn!("speaker: {e}");
        }
    }

    use super::super::codec::{FRAME_SAMPLES, SAMPLE_RATE};
    use super::{convert_frame, to_i16, AudioError, DeviceInfo, Level, CAPTURE_BUFFER_MS};

    fn info(d: &cpal::Device) -> DeviceInfo {
        let id = d.id().map(|i| i.id().to_string()).unwrap_or_default();
        let name = d
            .description()
            .map(|x| x.name().to_string())
            .unwrap_or_else(|_| id.clone());
        DeviceInfo { id, name }
    }

    fn list(input: bool) -> Result<Vec<DeviceInfo>, AudioError> {
        let host = cpal::default_host();
        let devices = host
            .devices()
            .map_err(|e| AudioError::Device(format!("cannot list audio devices: {e}")))?;
        Ok(devices
            .filter(|d| {
                if input {
                    d.supports_input()
                } else {
                    d.supports_output()
                }
            })
            .map(|d| info(&d))
            .collect())
    }

    /// Output devices (speakers), as the system lists them.
    pub fn output_devices() -> Result<Vec<DeviceInfo>, AudioError> {
        list(false)
    }

    /// Input devices (microphones), as the system lists them.
    pub fn input_devices() -> Result<Vec<DeviceInfo>, AudioError> {
        list(true)
    }

    /// The device called `name` (by id first, then by name), or the system's
    /// default; `what` is "speaker" or "microphone" for messages.
    fn find(name: Option<&str>, input: bool, what: &str) -> Result<cpal::Device, AudioError> {
        let host = cpal::default_host();
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            let d = if input {
                host.default_input_device()
            } else {
                host.default_output_device()
            };
            return d.ok_or_else(|| {
                AudioError::NoDevice(format!("no {what}: the system has no default {what}"))
            });
        };
        let all: Vec<cpal::Device> = host
            .devices()
            .map_err(|e| AudioError::Device(format!("cannot list audio devices: {e}")))?
            .collect();
        let by = |f: &dyn Fn(&DeviceInfo) -> bool| all.iter().find(|d| f(&info(d))).cloned();
        by(&|i| i.id == name)
            .or_else(|| by(&|i| i.name == name))
            .ok_or_else(|| {
                let known: Vec<String> = all.iter().map(|d| info(d).id).collect();
                AudioError::NoDevice(format!(
                    "no {what} named {name:?} (devices: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }

    /// Opening failed: a missing default device is "no device", anything
    /// else is the device's own failure.
    fn open_error(
        name: Option<&str>,
        what: &str,
        id: &str,
        e: impl std::fmt::Display,
    ) -> AudioError {
        if name.is_none_or(str::is_empty) {
            AudioError::NoDevice(format!(
                "no usable {what}: the default device ({id}) cannot be opened: {e}"
            ))
        } else {
            AudioError::Device(format!("cannot open the {what} {id:?}: {e}"))
        }
    }

    /// A rodio source that asks `pull` for one 20 ms frame at a time.
    struct PullSource<F> {
        pull: F,
        frame: Vec<i16>,
        pos: usize,
        channels: NonZero<u16>,
        level: Arc<Level>,
    }

    impl<F: FnMut(&mut [i16]) + Send + 'static> Iterator for PullSource<F> {
        type Item = f32;
        fn next(&mut self) -> Option<f32> {
            if self.pos == self.frame.len() {
                self.frame.fill(0);
                (self.pull)(&mut self.frame);
                self.pos = 0;
            }
            let s = self.frame[self.pos];
            self.pos += 1;
            Some(f32::from(s) / 32768.0 * self.level.gain())
        }
    }

    impl<F: FnMut(&mut [i16]) + Send + 'static> Source for PullSource<F> {
        fn current_span_len(&self) -> Option<usize> {
            None
        }
        fn channels(&self) -> NonZero<u16> {
            self.channels
        }
        fn sample_rate(&self) -> NonZero<u32> {
            NonZero::new(SAMPLE_RATE).expect("48000")
        }
        fn total_duration(&self) -> Option<Duration> {
            None
        }
    }

    /// Playback to a speaker. The device's thread calls the `pull` closure
    /// given to [`Speaker::open`] for every 20 ms it plays, so the closure
    /// must be quick and never block for long (lock the call's audio, pull a
    /// frame, unlock). Dropping the speaker stops playback.
    pub struct Speaker {
        /// Taken by `drop` (see [`close_without_signals`]).
        playing: Option<(MixerDeviceSink, Player)>,
        level: Arc<Level>,
        info: DeviceInfo,
    }

    impl Drop for Speaker {
        fn drop(&mut self) {
            let playing = self.playing.take();
            close_without_signals(move || drop(playing));
        }
    }

    impl Speaker {
        /// Open the speaker called `name` (`None` or "": the default) for
        /// `channels`-channel 48 kHz PCM that `pull` writes, one frame
        /// (`960 * channels` samples) per call; what `pull` leaves is
        /// silence.
        pub fn open(
            name: Option<&str>,
            channels: usize,
            pull: impl FnMut(&mut [i16]) + Send + 'static,
        ) -> Result<Speaker, AudioError> {
            let ch = u16::try_from(channels)
                .ok()
                .and_then(NonZero::new)
                .filter(|c| c.get() <= 2)
                .ok_or_else(|| AudioError::Format(format!("{channels} channels: 1 or 2")))?;
            without_signals(|| Self::open_here(name, channels, ch, pull))
        }

        /// [`Speaker::open`] on the calling thread (see [`without_signals`]).
        fn open_here(
            name: Option<&str>,
            channels: usize,
            ch: NonZero<u16>,
            pull: impl FnMut(&mut [i16]) + Send + 'static,
        ) -> Result<Speaker, AudioError> {
            let device = find(name, false, "speaker")?;
            let info = info(&device);
            let mut sink = DeviceSinkBuilder::from_device(device)
                .and_then(|b| {
                    b.with_error_callback(speaker_error as fn(cpal::Error))
                        .open_sink_or_fallback()
                })
                .map_err(|e| open_error(name, "speaker", &info.id, e))?;
            sink.log_on_drop(false);
            let level = Arc::new(Level::default());
            let player = Player::connect_new(sink.mixer());
            player.append(PullSource {
                pull,
                frame: vec![0; FRAME_SAMPLES * channels],
                pos: FRAME_SAMPLES * channels,
                channels: ch,
                level: level.clone(),
            });
            player.play();
            Ok(Speaker {
                playing: Some((sink, player)),
                level,
                info,
            })
        }

        /// The device playing.
        pub fn device(&self) -> &DeviceInfo {
            &self.info
        }

        /// Volume and mute, adjustable from any thread while it plays.
        pub fn level(&self) -> &Level {
            &self.level
        }
    }

    struct Captured {
        samples: Mutex<CaptureState>,
        arrived: Condvar,
    }

    #[derive(Default)]
    struct CaptureState {
        buf: VecDeque<i16>,
        dropped: u64,
        failed: Option<String>,
    }

    /// Capture from a microphone at 48 kHz. The device's thread fills a
    /// buffer of [`CAPTURE_BUFFER_MS`]; [`Microphone::read`] takes from it.
    pub struct Microphone {
        /// Taken by `drop` (see [`close_without_signals`]).
        stream: Option<cpal::Stream>,
        captured: Arc<Captured>,
        level: Arc<Level>,
        channels: usize,
        info: DeviceInfo,
    }

    /// A 48 kHz configuration of the device with the channel count nearest
    /// to `want`, in a sample format we convert from.
    fn capture_config(
        device: &cpal::Device,
        want: usize,
    ) -> Result<(StreamConfig, SampleFormat), String> {
        let configs = device
            .supported_input_configs()
            .map_err(|e| format!("cannot read its configurations: {e}"))?;
        let mut best: Option<(StreamConfig, SampleFormat, u8)> = None;
        for range in configs {
            let fmt = range.sample_format();
            if !matches!(fmt, SampleFormat::I16 | SampleFormat::F32) {
                continue;
            }
            let Some(c) = range.try_with_sample_rate(SAMPLE_RATE) else {
                continue;
            };
            let cfg = c.config();
            // The channels asked for first (no mixing), then 16-bit (no
            // conversion).
            let score = 2 * u8::from(usize::from(cfg.channels) == want)
                + u8::from(fmt == SampleFormat::I16);
            if best.as_ref().is_none_or(|b| score > b.2) {
                best = Some((cfg, fmt, score));
            }
        }
        best.map(|(c, f, _)| (c, f))
            .ok_or_else(|| "it cannot capture 16-bit or float audio at 48 kHz".to_string())
    }

    impl Microphone {
        /// Open the microphone called `name` (`None` or "": the default),
        /// capturing `channels`-channel 48 kHz PCM (the device's own channels
        /// are mixed down or spread to that).
        pub fn open(name: Option<&str>, channels: usize) -> Result<Microphone, AudioError> {
            if !(1..=2).contains(&channels) {
                return Err(AudioError::Format(format!("{channels} channels: 1 or 2")));
            }
            without_signals(|| Self::open_here(name, channels))
        }

        /// [`Microphone::open`] on the calling thread (see [`without_signals`]).
        fn open_here(name: Option<&str>, channels: usize) -> Result<Microphone, AudioError> {
            let device = find(name, true, "microphone")?;
            let info = info(&device);
            let (config, format) = capture_config(&device, channels)
                .map_err(|e| open_error(name, "microphone", &info.id, e))?;
            let captured = Arc::new(Captured {
                samples: Mutex::new(CaptureState::default()),
                arrived: Condvar::new(),
            });
            let level = Arc::new(Level::default());
            let dev_ch = usize::from(config.channels);
            let cap = CAPTURE_BUFFER_MS * SAMPLE_RATE as usize / 1000 * channels;
            let (c2, l2) = (captured.clone(), level.clone());
            let mut converted: Vec<f32> = Vec::new();
            let mut frame = vec![0f32; dev_ch];
            let mut push = move |samples: &mut dyn Iterator<Item = f32>| {
                converted.clear();
                let mut i = 0;
                for s in samples {
                    frame[i] = s;
                    i += 1;
                    if i == dev_ch {
                        convert_frame(&frame, channels, &mut converted);
                        i = 0;
                    }
                }
                let gain = l2.gain();
                let mut st = c2.samples.lock();
                for &s in &converted {
                    if st.buf.len() >= cap {
                        st.buf.pop_front();
                        st.dropped += 1;
                    }
                    st.buf.push_back(to_i16(s * gain));
                }
                drop(st);
                c2.arrived.notify_all();
            };
            let c3 = captured.clone();
            let on_error = move |e: cpal::Error| {
                // A signal is no failure: the device thread polls again.
                if interrupted(&e) {
                    return;
                }
                c3.samples.lock().failed = Some(e.to_string());
                c3.arrived.notify_all();
            };
            let stream = match format {
                SampleFormat::I16 => device.build_input_stream::<i16, _, _>(
                    config,
                    move |data: &[i16], _: &cpal::InputCallbackInfo| {
                        push(&mut data.iter().map(|&s| f32::from(s) / 32768.0))
                    },
                    on_error,
                    None,
                ),
                _ => device.build_input_stream::<f32, _, _>(
                    config,
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        push(&mut data.iter().copied())
                    },
                    on_error,
                    None,
                ),
            }
            .map_err(|e| open_error(name, "microphone", &info.id, e))?;
            stream
                .play()
                .map_err(|e| open_error(name, "microphone", &info.id, e))?;
            Ok(Microphone {
                stream: Some(stream),
                captured,
                level,
                channels,
                info,
            })
        }

        /// The device capturing.
        pub fn device(&self) -> &DeviceInfo {
            &self.info
        }

        /// Fill `out` with the oldest captured samples (interleaved, the
        /// channels asked for), waiting at most `timeout` for enough to
        /// arrive. `Ok(false)`: not enough yet, nothing taken. An error once
        /// the device has failed (unplugged).
        pub fn read(&self, out: &mut [i16], timeout: Duration) -> Result<bool, AudioError> {
            crate::audio::check_whole_frames(out.len(), self.channels)?;
            let deadline = Instant::now() + timeout;
            let mut st = self.captured.samples.lock();
            loop {
                if let Some(e) = &st.failed {
                    return Err(AudioError::Device(format!(
                        "the microphone {:?} failed: {e}",
                        self.info.id
                    )));
                }
                if st.buf.len() >= out.len() {
                    let n = out.len();
                    for (o, s) in out.iter_mut().zip(st.buf.drain(..n)) {
                        *o = s;
                    }
                    return Ok(true);
                }
                if self
                    .captured
                    .arrived
                    .wait_until(&mut st, deadline)
                    .timed_out()
                {
                    return Ok(false);
                }
            }
        }

        /// Samples dropped because nobody read them in time.
        pub fn dropped(&self) -> u64 {
            self.captured.samples.lock().dropped
        }

        /// Volume and mute, adjustable from any thread while it plays.
        pub fn level(&self) -> &Level {
            &self.level
        }
    }

    impl Drop for Microphone {
        fn drop(&mut self) {
            if let Some(stream) = self.stream.take() {
                close_without_signals(move || {
                    let _ = stream.pause();
                });
            }
        }
    }
}

#[cfg(not(feature = "device"))]
mod stub {
    use super::{AudioError, DeviceInfo, Duration, Level};

    pub fn output_devices() -> Result<Vec<DeviceInfo>, AudioError> {
        Err(AudioError::DeviceSupportMissing)
    }

    pub fn input_devices() -> Result<Vec<DeviceInfo>, AudioError> {
        Err(AudioError::DeviceSupportMissing)
    }

    /// Playback to a speaker: not built in (see the `device` feature).
    pub struct Speaker(());

    impl Speaker {
        pub fn open(
            _name: Option<&str>,
            _channels: usize,
            _pull: impl FnMut(&mut [i16]) + Send + 'static,
        ) -> Result<Speaker, AudioError> {
            Err(AudioError::DeviceSupportMissing)
        }
        pub fn device(&self) -> &DeviceInfo {
            unreachable!("a Speaker cannot be made without the device feature")
        }
        pub fn level(&self) -> &Level {
            unreachable!("cannot be made without the device feature")
        }
    }

    /// Capture from a microphone: not built in (see the `device` feature).
    pub struct Microphone(());

    impl Microphone {
        pub fn open(_name: Option<&str>, _channels: usize) -> Result<Microphone, AudioError> {
            Err(AudioError::DeviceSupportMissing)
        }
        pub fn device(&self) -> &DeviceInfo {
            unreachable!("a Microphone cannot be made without the device feature")
        }
        pub fn read(&self, _out: &mut [i16], _timeout: Duration) -> Result<bool, AudioError> {
            Err(AudioError::DeviceSupportMissing)
        }
        pub fn dropped(&self) -> u64 {
            0
        }
        pub fn level(&self) -> &Level {
            unreachable!("cannot be made without the device feature")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_conversion() {
        let mut v = Vec::new();
        convert_frame(&[0.5, -0.5], 1, &mut v);
        convert_frame(&[0.25], 2, &mut v);
        convert_frame(&[0.1, 0.2, 0.3], 2, &mut v);
        convert_frame(&[0.1, 0.2], 2, &mut v);
        assert_eq!(v, [0.0, 0.25, 0.25, 0.1, 0.2, 0.1, 0.2]);
        assert_eq!(to_i16(1.5), 32767);
        assert_eq!(to_i16(-1.5), -32768);
        assert_eq!(clamp_volume(f32::NAN), 1.0);
        assert_eq!(clamp_volume(9.0), MAX_VOLUME);
    }

    /// cpal's ALSA thread reports an interrupted poll as a backend error
    /// (alsa's text of EINTR) and carries on: neither end of the stream.
    #[cfg(feature = "device")]
    #[test]
    fn an_interrupted_device_wait_is_no_failure() {
        use rodio::cpal::{Error, ErrorKind};
        let eintr = Error::with_message(
            ErrorKind::BackendError,
            "ALSA function 'poll' failed with error 'Interrupted system call (4)'",
        );
        assert!(imp::interrupted(&eintr));
        let eio = Error::with_message(
            ErrorKind::BackendError,
            "ALSA function 'poll' failed with error 'I/O error (5)'",
        );
        assert!(!imp::interrupted(&eio));
        assert!(!imp::interrupted(&ErrorKind::DeviceNotAvailable.into()));
    }

    /// Devices open on a thread that blocks the application's signals, and
    /// the threads started from it (cpal's device threads) inherit that;
    /// faults stay deliverable and the caller's own mask is untouched.
    #[cfg(feature = "device")]
    #[test]
    fn devices_open_with_signals_blocked() {
        fn blocked(sig: libc::c_int) -> bool {
            // SAFETY: a zeroed sigset_t is valid output space; a null new
            // set only reads the mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
                libc::sigismember(&set, sig) == 1
            }
        }
        let (here, started, fault) = imp::without_signals(|| {
            let started = std::thread::spawn(|| blocked(libc::SIGUSR1) && blocked(libc::SIGINT));
            Ok((
                blocked(libc::SIGUSR1) && blocked(libc::SIGCHLD),
                started.join().unwrap(),
                blocked(libc::SIGSEGV),
            ))
        })
        .unwrap();
        assert!(here, "the opening thread blocks signals");
        assert!(started, "a device thread inherits the mask");
        assert!(!fault, "faults stay deliverable");
        assert!(!blocked(libc::SIGUSR1), "the caller's mask is its own");
        let e = imp::without_signals(|| -> Result<(), AudioError> {
            Err(AudioError::NoDevice("none".into()))
        });
        assert_eq!(e, Err(AudioError::NoDevice("none".into())));
    }

    #[test]
    fn devices_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Speaker>();
        send::<Microphone>();
    }

    #[cfg(not(feature = "device"))]
    #[test]
    fn without_the_feature_devices_fail_clearly() {
        let e = Speaker::open(None, 2, |_| {}).err().unwrap();
        assert_eq!(e, AudioError::DeviceSupportMissing);
        assert!(e.to_string().contains("`device` feature"), "{e}");
        assert!(Microphone::open(None, 1).is_err());
        assert!(output_devices().is_err() && input_devices().is_err());
    }
}
