//! Device audio through ALSA without a sound card: each test runs its body
//! in a child process (this same test binary) whose ALSA configuration is a
//! file the test writes, so the speaker plays into a file, the microphone
//! records from one, and "no device" is a configuration too. A child process
//! keeps the environment variable ALSA reads away from every other test.
#![cfg(feature = "device")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod common;
mod ffi_common;

use chinwag::audio::device::{input_devices, output_devices, Microphone, Speaker};
use chinwag::audio::AudioError;
use common::alsa::{self, CALL_DEVICES, NO_DEVICES};
use common::signal::{power, windowed_power};

/// Where the child finds its working directory.
const CHILD_DIR: &str = "CHINWAG_AUDIO_TEST_DIR";
const CHILD_LIMIT: Duration = Duration::from_secs(60);
const RATE: usize = 48_000;

/// Devices backed by files. The default plays into `played.raw` (16-bit
/// little-endian stereo at 48 kHz, fixed by the `plug` in front);
/// `chinwag_mic` captures `capture.raw` in whatever format the stream asks
/// (the microphone asks for 16-bit mono at 48 kHz first).
const FILE_DEVICES: &str = r#"
pcm.!default {
    type plug
    slave { pcm "chinwag_tap" format S16_LE rate 48000 channels 2 }
    hint { show on description "chinwag test default" }
}
pcm.chinwag_tap {
    type file
    slave.pcm "chinwag_null"
    file "@DIR@/played.raw"
    infile "@DIR@/capture.raw"
    format "raw"
    hint { show on description "chinwag test tap" }
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

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(CHILD_DIR).expect("run by its parent test, not directly"))
}

/// Run `test` (an ignored test of this file) in a child with `config` as
/// its whole ALSA configuration; fail with the child's output if it fails,
/// else give that output (stdout and stderr: ALSA's messages are there).
fn in_child(test: &str, config: &str, prepare: impl FnOnce(&Path)) -> String {
    let dir = std::env::temp_dir().join(format!("chinwag-audio-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir);
    let conf = alsa::write_config(&dir, config);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALSA_CONFIG_PATH", &conf)
        .env(CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while the child runs: a child writing more than a pipe holds
    // (ALSA prints a line for every device call a signal interrupts) would
    // otherwise block in write(2) until the deadline.
    let (out, err) = (
        drain(child.stdout.take().unwrap()),
        drain(child.stderr.take().unwrap()),
    );
    let deadline = Instant::now() + CHILD_LIMIT;
    let mut hung = String::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            hung = threads_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(s) if s.success() && text.contains("1 passed") => text,
        Some(_) => panic!("{test} failed in its child:\n{text}"),
        None => panic!("{test} took more than {CHILD_LIMIT:?}:\n{text}\nits threads:\n{hung}"),
    }
}

/// Output kept from a child's stream; the rest is read and counted only.
const OUTPUT_KEPT: usize = 1 << 20;

/// Read `from` to its end on a thread of its own: the first
/// [`OUTPUT_KEPT`] bytes as text, then how many more there were.
fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut kept, mut more) = (Vec::new(), 0usize);
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_KEPT.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                    more += n - room;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if more > 0 {
            text += &format!("\n[{more} more bytes]");
        }
        text
    })
}

/// Where each thread of a hung child waits: name, kernel wait channel and
/// system call (number and arguments), for the failure message.
fn threads_of(pid: u32) -> String {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    let mut out = String::new();
    for t in dir.flatten() {
        let t = t.path();
        let at = |f: &str| read(format!("{}/{f}", t.display())).trim().to_string();
        out += &format!(
            "  {} {}: wchan {}, syscall {}\n",
            t.file_name().unwrap_or_default().to_string_lossy(),
            at("comm"),
            at("wchan"),
            at("syscall")
        );
    }
    out
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sine(freq: f64, i: usize) -> f64 {
    (2.0 * std::f64::consts::PI * freq * i as f64 / RATE as f64).sin()
}

fn read_s16(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn speaker_plays_into_alsa_file_plugin() {
    in_child("speaker_child", FILE_DEVICES, |_| {});
}

#[test]
#[ignore = "the body of speaker_plays_into_alsa_file_plugin, run in a child process"]
fn speaker_child() {
    let played = child_dir().join("played.raw");
    let pulled = Arc::new(AtomicU64::new(0));
    let p2 = pulled.clone();
    let mut n = 0usize;
    let speaker = Speaker::open(None, 2, move |frame: &mut [i16]| {
        // 1 kHz on the left, 2 kHz on the right.
        for s in frame.chunks_exact_mut(2) {
            s[0] = (10_000.0 * sine(1000.0, n)) as i16;
            s[1] = (10_000.0 * sine(2000.0, n)) as i16;
            n += 1;
        }
        p2.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(speaker.device().id, "default");
    // 300 ms played into the file once the speaker pulls: the device may
    // play silence before the source is attached, and ALSA's null plugin
    // runs faster than real time, so the file may hold 300 ms before the
    // first pull.
    let bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    wait_for("the speaker to pull", Duration::from_secs(20), || {
        pulled.load(Ordering::Relaxed) >= 10
    });
    let from = bytes(&played);
    wait_for("300 ms of playback", Duration::from_secs(20), || {
        bytes(&played) >= from + (RATE * 4 * 3 / 10) as u64
    });
    assert!(pulled.load(Ordering::Relaxed) >= 10);
    let s = read_s16(&played);
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    let tail = |v: &[i16]| v[v.len() - 9600..].to_vec();
    let (l, r) = (tail(&left), tail(&right));
    assert!(
        power(&l, 1000.0) > 100.0 * power(&l, 2000.0),
        "left is not 1 kHz"
    );
    assert!(
        power(&r, 2000.0) > 100.0 * power(&r, 1000.0),
        "right is not 2 kHz"
    );

    // Muted, the speaker keeps pulling but plays silence.
    speaker.level().set_muted(true);
    assert!(speaker.level().muted());
    // Past what was already queued towards the device (rodio: 50 ms).
    let from = bytes(&played) + (RATE * 4 / 5) as u64;
    wait_for("playback after muting", Duration::from_secs(20), || {
        bytes(&played) >= from + (RATE * 4 / 10) as u64
    });
    let s = read_s16(&played);
    assert!(
        s[(from / 2) as usize..].iter().all(|&x| x == 0),
        "muted yet audible"
    );
    speaker.level().set_volume(5.0);
    assert_eq!(speaker.level().volume(), chinwag::audio::device::MAX_VOLUME);
}

#[test]
fn microphone_records_from_alsa_file_plugin() {
    in_child("microphone_child", FILE_DEVICES, |dir| {
        // 5 s of 700 Hz for the microphone to capture.
        let raw: Vec<u8> = (0..RATE * 5)
            .flat_map(|i| ((8_000.0 * sine(700.0, i)) as i16).to_le_bytes())
            .collect();
        std::fs::write(dir.join("capture.raw"), raw).unwrap();
    });
}

#[test]
#[ignore = "the body of microphone_records_from_alsa_file_plugin, run in a child process"]
fn microphone_child() {
    let ids: Vec<String> = input_devices().unwrap().into_iter().map(|d| d.id).collect();
    assert!(ids.iter().any(|i| i == "chinwag_mic"), "{ids:?}");
    assert!(output_devices()
        .unwrap()
        .iter()
        .any(|d| d.id == "chinwag_tap"));

    // The default device opens and delivers audio.
    let mic = Microphone::open(None, 1).unwrap();
    assert_eq!(mic.device().id, "default");
    let mut frame = vec![0i16; 960];
    assert!(
        mic.read(&mut frame, Duration::from_secs(10)).unwrap(),
        "no audio captured"
    );
    drop(mic);

    // By name: what the file holds comes out.
    let mic = Microphone::open(Some("chinwag_mic"), 1).unwrap();
    for _ in 0..5 {
        assert!(
            mic.read(&mut frame, Duration::from_secs(10)).unwrap(),
            "no audio captured"
        );
    }
    assert!(
        power(&frame, 700.0) > 100.0 * power(&frame, 1400.0).max(power(&frame, 350.0)),
        "not the 700 Hz in the file"
    );
    mic.level().set_muted(true);
    // What was buffered before muting may still come; then only silence.
    for _ in 0..20 {
        assert!(mic.read(&mut frame, Duration::from_secs(10)).unwrap());
    }
    assert!(frame.iter().all(|&s| s == 0), "muted yet audible");
    drop(mic);

    // Stereo too (the file device takes any channel count, so the file's
    // samples are read two at a time: only the flow is checked).
    let mic = Microphone::open(Some("chinwag_mic"), 2).unwrap();
    let mut frame = vec![0i16; 1920];
    for _ in 0..3 {
        assert!(mic.read(&mut frame, Duration::from_secs(10)).unwrap());
    }
    assert!(frame.iter().any(|&s| s != 0));
}

#[test]
fn no_device_is_a_clear_error() {
    in_child("no_device_child", NO_DEVICES, |_| {});
}

#[test]
#[ignore = "the body of no_device_is_a_clear_error, run in a child process"]
fn no_device_child() {
    let speaker = Speaker::open(None, 2, |_| {})
        .err()
        .expect("no speaker exists");
    assert!(matches!(speaker, AudioError::NoDevice(_)), "{speaker:?}");
    assert!(
        speaker.to_string().contains("no usable speaker"),
        "{speaker}"
    );
    let mic = Microphone::open(None, 1)
        .err()
        .expect("no microphone exists");
    assert!(matches!(mic, AudioError::NoDevice(_)), "{mic:?}");
    assert!(mic.to_string().contains("no usable microphone"), "{mic}");
    let named = Speaker::open(Some("studio monitors"), 2, |_| {})
        .err()
        .unwrap();
    assert!(matches!(named, AudioError::NoDevice(_)), "{named:?}");
    assert!(
        named
            .to_string()
            .contains("no speaker named \"studio monitors\""),
        "{named}"
    );
}

/// A babel call between two library clients in this (child) process:
/// (caller's call, callee's call), with the server and clients to keep.
fn babel_call() -> (
    chinwag::Call,
    chinwag::Call,
    (chinwagd::Server, chinwag::BabelClient, chinwag::BabelClient),
) {
    use chinwag::{BabelClient, Event};
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port();
    let limit = Some(Duration::from_secs(20));
    let (a, b) = (
        BabelClient::connect("127.0.0.1", port).unwrap(),
        BabelClient::connect("127.0.0.1", port).unwrap(),
    );
    a.login("dev", limit).unwrap();
    b.login("pcm", limit).unwrap();
    a.place_call("pcm", "", 0).unwrap();
    let take = |c: &BabelClient, accept: bool| loop {
        match c.next_event(limit).unwrap() {
            Event::CallIncoming { peer, .. } if accept => c.accept_call(&peer).unwrap(),
            Event::CallEstablished { call, .. } => break call.unwrap(),
            _ => {}
        }
    };
    let cb = take(&b, true);
    let ca = take(&a, false);
    (ca, cb, (srv, a, b))
}

#[test]
fn call_with_devices_through_alsa_file_plugin() {
    in_child("device_call_child", CALL_DEVICES, call_pipes);
}

/// Feed the microphone's named pipe with 700 Hz, stereo, in real time,
/// until the process ends. ALSA's `null` plugin behind the `file` plugin
/// has no clock: reading from a plain file, the microphone ran about five
/// times faster than real time, so a 20 s file ran dry after about 4 s, and
/// under load, when the test's 3 s of listening took longer, the PCM side
/// heard the silence after it ("the PCM side does not hear the
/// microphone"). A pipe written at 48 kHz paces the microphone instead.
/// Each time the device is opened (cpal opens it more than once) the pipe
/// is opened again; a closed reader ends a round.
fn pace_microphone(path: PathBuf) {
    use std::io::Write;
    std::thread::spawn(move || {
        let chunk = RATE / 100; // 10 ms
        let mut at = 0usize;
        loop {
            // Blocks until the device opens its input.
            let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&path) else {
                return;
            };
            let start = Instant::now();
            for k in 0.. {
                let bytes: Vec<u8> = (at..at + chunk)
                    .flat_map(|i| {
                        let s = piped(i).to_le_bytes();
                        [s[0], s[1], s[0], s[1]]
                    })
                    .collect();
                at += chunk;
                if pipe.write_all(&bytes).is_err() {
                    break;
                }
                let next = start + Duration::from_millis(10 * (k + 1));
                if let Some(w) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
        }
    });
}

/// What the speaker's named pipe delivered, read in real time (see
/// [`pace_speaker`]), and how many times its writer closed it.
#[derive(Default)]
struct Played {
    samples: Vec<i16>,
    closed: usize,
}

/// Drain the speaker's named pipe at 48 kHz (stereo, 16-bit), as a sound
/// card would, until the process ends. Like the microphone, ALSA's `null`
/// plugin lets a speaker playing into a plain file run unclocked: under
/// load on CI it played 9.6 million samples in a 3 s call, mostly loss
/// concealment with a phase jump at each gap (the whole-file tone check
/// failed on that). Each time the device opens the pipe it is read again.
fn pace_speaker(path: PathBuf) -> Arc<(Mutex<Played>, Condvar)> {
    use std::io::Read;
    let played = Arc::new((Mutex::new(Played::default()), Condvar::new()));
    let out = Arc::clone(&played);
    std::thread::spawn(move || loop {
        // Blocks until the device opens its output.
        let Ok(mut pipe) = std::fs::File::open(&path) else {
            return;
        };
        let (start, mut read) = (Instant::now(), 0u64);
        let mut buf = vec![0u8; RATE / 100 * 4]; // 10 ms
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut got = out.0.lock().unwrap();
            got.samples.extend(
                buf[..n - n % 2]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
            drop(got);
            read += n as u64;
            let next = start + Duration::from_micros(read * 1_000_000 / (RATE as u64 * 4));
            if let Some(w) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        out.0.lock().unwrap().closed += 1;
        out.1.notify_all();
    });
    played
}

#[test]
#[ignore = "the body of call_with_devices_through_alsa_file_plugin, run in a child process"]
fn device_call_child() {
    device_call(false);
}

#[test]
#[ignore = "the body of call_with_devices_under_a_signal_storm, run in a child process"]
fn device_call_storm_child() {
    device_call(true);
}

/// One side of a babel call on the ALSA file devices, the other on PCM;
/// `storm`: while SIGUSR1 (caught without `SA_RESTART`) hits every thread.
fn device_call(storm: bool) {
    use chinwag::ErrorKind;
    use common::storm::{catch_without_restart, Storm};
    let (dev, pcm, _keep) = babel_call();
    pace_microphone(child_dir().join("capture.raw"));
    let played = pace_speaker(child_dir().join("played.raw"));
    let storm = storm.then(|| {
        catch_without_restart(libc::SIGUSR1);
        Storm::start(
            std::process::id() as libc::pid_t,
            libc::SIGUSR1,
            Duration::from_secs(40),
        )
    });
    // One side on the sound card (the ALSA files), the other on PCM.
    dev.use_devices().unwrap();
    assert_eq!(
        dev.send_pcm(&[0; 1920]).unwrap_err().code,
        ErrorKind::InvalidArgument,
        "the microphone feeds the call"
    );
    let mut heard = Vec::new();
    let mut frame = vec![0i16; 1920];
    let start = Instant::now();
    for k in 0..150usize {
        let tone: Vec<i16> = (0..960)
            .flat_map(|i| {
                let s = (8_000.0 * sine(1500.0, k * 960 + i)) as i16;
                [s, s]
            })
            .collect();
        pcm.send_pcm(&tone).unwrap();
        pcm.recv_pcm(&mut frame).unwrap();
        heard.extend(frame.iter().step_by(2).copied());
        let next = start + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(w) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
    // The microphone's 700 Hz reached the PCM side...
    let tail = &heard[heard.len() - RATE..];
    assert!(
        windowed_power(tail, 700.0) > 100.0 * windowed_power(tail, 1500.0).max(1.0),
        "the PCM side does not hear the microphone"
    );
    // ...from a microphone that ran in real time (it sent a frame per
    // 20 ms, not five as from a plain file).
    let frames = start.elapsed().as_millis() as u64 / 20;
    let sent = dev.stats().packets_sent;
    assert!(
        sent > 50 && sent <= frames + frames / 4 + 20,
        "{sent} frames sent from the microphone in {frames} frames' time"
    );
    // Devices off (the file stops growing): PCM again.
    dev.stop_devices();
    if let Some(s) = storm {
        let sent = s.stop();
        let caught = common::storm::CAUGHT.load(Ordering::Relaxed);
        assert!(
            caught > 1000,
            "only {caught} of {sent} signals caught: no storm"
        );
    }
    dev.send_pcm(&[0; 1920]).unwrap();
    // ...and the PCM side's 1500 Hz reached the speaker's pipe (anywhere:
    // on a loaded machine the device may lag the call by a good part of
    // it), once the device has closed the pipe.
    let (lock, closed) = &*played;
    let got = closed
        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |p| {
            p.closed == 0
        })
        .unwrap()
        .0;
    assert!(got.closed > 0, "the speaker never closed its pipe");
    let s = &got.samples;
    assert!(s.len() > RATE * 2, "the speaker played {} samples", s.len());
    // ...in real time: at most 20 % more than the call lasted.
    let most = start.elapsed().as_millis() as usize * RATE * 2 / 1000;
    assert!(
        s.len() <= most + most / 5,
        "the speaker played {} samples in {} ms",
        s.len(),
        start.elapsed().as_millis()
    );
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let (tone, mic) = (windowed_power(&left, 1500.0), windowed_power(&left, 700.0));
    assert!(
        tone > 100.0 * mic.max(1.0),
        "the speaker does not play the PCM side: 1500 Hz {tone:e}, 700 Hz {mic:e}, {} samples",
        left.len()
    );
}

#[test]
fn call_with_devices_under_a_signal_storm() {
    let text = in_child("device_call_storm_child", CALL_DEVICES, call_pipes);
    assert_no_interrupted_device_call(&text);
}

#[test]
fn no_device_in_a_call_is_a_clear_result_code() {
    in_child("no_device_call_child", NO_DEVICES, |_| {});
}

#[test]
#[ignore = "the body of no_device_in_a_call_is_a_clear_result_code, run in a child process"]
fn no_device_call_child() {
    use chinwag::ffi::codes::{cw_dialect, cw_event_type, cw_result as R};
    use chinwag::ffi::*;
    use ffi_common::{cs, last_error, C};
    // Through the C API: clients, a call the library carries, devices.
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port();
    let client = |name: &str| {
        let c = C::connect_to("127.0.0.1", port, cw_dialect::CW_DIALECT_BABEL);
        assert_eq!(
            unsafe { cw_client_login(c.0, cs(name).as_ptr(), 20_000) },
            R::CW_OK
        );
        c
    };
    let (a, b) = (client("nod"), client("nob"));
    let r = unsafe { cw_client_place_voice_call(a.0, cs("nob").as_ptr(), std::ptr::null()) };
    assert_eq!(r, R::CW_OK);
    let call = loop {
        let mut ev = std::ptr::null_mut();
        assert_eq!(
            unsafe { cw_client_next_event(b.0, 20_000, &mut ev) },
            R::CW_OK
        );
        let kind = unsafe { cw_event_kind(ev) };
        if kind == cw_event_type::CW_EVENT_CALL_INCOMING {
            let r =
                unsafe { cw_client_answer_voice_call(b.0, cw_event_peer(ev), std::ptr::null()) };
            assert_eq!(r, R::CW_OK);
        }
        let mut call = std::ptr::null_mut();
        let taken = kind == cw_event_type::CW_EVENT_CALL_ESTABLISHED
            && unsafe { cw_event_take_call(ev, &mut call) } == R::CW_OK;
        unsafe { cw_event_free(ev) };
        if taken {
            break call;
        }
    };
    let r = unsafe { cw_call_use_devices(call, std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, R::CW_NO_DEVICE, "{}", last_error());
    assert!(
        last_error().contains("no usable speaker"),
        "{}",
        last_error()
    );
    let r = unsafe { cw_call_use_microphone(call, cs("studio mic").as_ptr()) };
    assert_eq!(r, R::CW_NO_DEVICE, "{}", last_error());
    assert!(
        last_error().contains("no microphone named"),
        "{}",
        last_error()
    );
    // Nothing stays attached: PCM still works.
    let mut pcm = [0i16; 1920];
    unsafe {
        assert_eq!(cw_call_send_pcm(call, pcm.as_ptr(), 960), R::CW_OK);
        assert_eq!(cw_call_recv_pcm(call, pcm.as_mut_ptr(), 960), R::CW_OK);
        cw_call_free(call);
    }
}

/// A named pipe for the microphone's input (see `pace_microphone`).
/// The microphone's and the speaker's files as named pipes.
fn call_pipes(dir: &Path) {
    microphone_pipe(dir);
    make_fifo(&dir.join("played.raw"));
}

fn microphone_pipe(dir: &Path) {
    make_fifo(&dir.join("capture.raw"));
}

fn make_fifo(at: &Path) {
    let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Under a storm the child must not see what ALSA prints when a signal
/// interrupts a device call (alsa-lib's `file` plugin: "read from file
/// failed, error: -1: Interrupted system call", once per broken period).
fn assert_no_interrupted_device_call(text: &str) {
    let n = text.matches("Interrupted system call").count();
    assert!(
        n == 0,
        "{n} device calls interrupted by signals:\n{}",
        text.lines()
            .filter(|l| !l.contains("Interrupted system call"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn microphone_under_a_signal_storm() {
    let text = in_child("microphone_storm_child", CALL_DEVICES, microphone_pipe);
    assert_no_interrupted_device_call(&text);
}

/// The pipe's sample `i` (`pace_microphone`: 700 Hz, whole cycles every
/// 480 samples).
fn piped(i: usize) -> i16 {
    (8_000.0 * sine(700.0, i % 480)) as i16
}

/// Where `x` leaves the pipe's sequence: after the leading silence of the
/// device's start, each sample must follow the one before it in the pipe
/// (`piped`); a sample that does not (a period the device never filled,
/// or filled twice) is a break, and the sequence is picked up again from
/// there.
fn breaks_in(x: &[i16]) -> usize {
    let start = x.iter().position(|&s| s != 0).unwrap_or(x.len());
    let phase_at = |k: usize| {
        (0..480).find(|&p| (0..24).all(|j| x.get(k + j).is_none_or(|&s| s == piped(p + j))))
    };
    let mut breaks = 0;
    let mut phase = phase_at(start);
    let mut k = start;
    while k < x.len() {
        match phase {
            Some(p) if x[k] == piped(p + k - start) => k += 1,
            _ => {
                // Picked up again a cycle later (bounded work).
                breaks += 1;
                k += 480;
                phase = phase_at(k).map(|p| (p + 480 - (k - start) % 480) % 480);
            }
        }
    }
    breaks
}

#[test]
#[ignore = "the body of microphone_under_a_signal_storm, run in a child process"]
fn microphone_storm_child() {
    use common::storm::{catch_without_restart, Storm, CAUGHT};
    catch_without_restart(libc::SIGUSR1);
    pace_microphone(child_dir().join("capture.raw"));
    let storm = Storm::start(
        std::process::id() as libc::pid_t,
        libc::SIGUSR1,
        Duration::from_secs(40),
    );
    let mut frame = vec![0i16; 1920];
    // Opened, read for a second and closed three times over.
    for round in 0..3 {
        let mic = Microphone::open(Some("chinwag_mic"), 2).unwrap();
        let mut heard = Vec::new();
        for _ in 0..50 {
            assert!(
                mic.read(&mut frame, Duration::from_secs(10)).unwrap(),
                "no audio captured in round {round}"
            );
            heard.extend(frame.iter().step_by(2).copied());
        }
        // Every sample as the pipe carried it, in order (one break per
        // stretch the reader fell behind and lost, on a loaded machine).
        let (breaks, lost) = (breaks_in(&heard), mic.dropped());
        assert!(
            breaks == 0 || (lost > 0 && breaks <= 2),
            "round {round}: {breaks} breaks in the captured sequence ({lost} samples dropped)"
        );
        drop(mic);
    }
    let sent = storm.stop();
    let caught = CAUGHT.load(Ordering::Relaxed);
    assert!(
        caught > 1000,
        "only {caught} of {sent} signals caught: no storm"
    );
}
