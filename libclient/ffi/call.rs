//! C functions of an open call (`cw_call`, babel and accounts alike):
//! starting one the library carries, raw voice payloads, PCM in and out,
//! statistics, speakers and microphones, volume and mute.

use std::ffi::{c_char, CString};
use std::ptr;

use super::accounts::{cw_strings, strings};
use super::client::cw_client;
use super::codes::cw_result;
use super::event::cw_event;
use super::timeout;
use super::Failure;
use super::{arg_ref, arg_slice, arg_slice_mut, arg_str, c_string, check_out, guard, null, run};
use crate::call::{input_devices, output_devices, Call, CallStats, Side, MAX_PCM_FRAMES};
use crate::core::{Event, VoicePorts};

/// The sample rate of every call's PCM, in Hz.
pub const CW_SAMPLE_RATE: u32 = 48000;
/// Sample frames in one 20 ms audio frame, the unit calls encode.
pub const CW_FRAME_SAMPLES: usize = 960;
/// The most sample frames one cw_call_send_pcm or cw_call_recv_pcm takes
/// (one second).
pub const CW_PCM_MAX_FRAMES: usize = 48000;
// The header needs literals; the audio code owns the values.
const _PCM_LIMITS_ARE_THE_AUDIO_CODES: () = assert!(
    CW_PCM_MAX_FRAMES == MAX_PCM_FRAMES
        && CW_FRAME_SAMPLES == crate::audio::FRAME_SAMPLES
        && CW_SAMPLE_RATE == crate::audio::SAMPLE_RATE
);

/// An open call (opaque): babel, the peer-to-peer TCP connection of two
/// clients; accounts, the UDP media path of a call the library carries.
pub struct cw_call {
    inner: Call,
    peer: CString,
}

/// Which end of a call's audio a function applies to.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cw_audio_side {
    /// What this side sends: the microphone, or the PCM pushed.
    CW_AUDIO_MICROPHONE = 1,
    /// What this side plays: the speaker, or the PCM pulled.
    CW_AUDIO_SPEAKER = 2,
}

fn side(v: i32) -> Result<Side, Failure> {
    match v {
        x if x == cw_audio_side::CW_AUDIO_MICROPHONE as i32 => Ok(Side::Microphone),
        x if x == cw_audio_side::CW_AUDIO_SPEAKER as i32 => Ok(Side::Speaker),
        _ => Err(Failure::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("{v} is not a cw_audio_side"),
        )),
    }
}

/// A call's statistics at one moment (see cw_call_stats). Counters run
/// from the start of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cw_audio_stats {
    /// Packets (babel: VoiceData frames; accounts: media datagrams) sent.
    pub packets_sent: u64,
    /// Packets received, each counted once.
    pub packets_received: u64,
    /// Packets expected by sequence number that never arrived.
    pub packets_lost: u64,
    /// Packets that arrived after their frame had been concealed (dropped).
    pub packets_late: u64,
    /// Copies of packets already received (dropped).
    pub packets_duplicate: u64,
    /// 20 ms frames played that were not decoded from their own packet.
    pub frames_concealed: u64,
    /// Of those, frames rebuilt from the next packet's FEC data.
    pub frames_concealed_fec: u64,
    /// Frames dropped to shrink the playout delay.
    pub frames_dropped: u64,
    /// Payload bytes sent and received.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// How long after its earliest possible arrival audio is played now, ms.
    pub playout_delay_ms: f64,
    /// The playout delay the jitter buffer aims at, ms.
    pub target_delay_ms: f64,
    /// Interarrival jitter of what is received (RFC 3550), ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms; -1 when unknown (babel, or before the first
    /// report came back).
    pub rtt_ms: f64,
    /// Bits per second over the last second, payload only.
    pub send_bitrate: u32,
    pub recv_bitrate: u32,
    /// The loss the encoder's FEC protects against, percent (0: no FEC).
    pub expected_loss_pct: i32,
    /// The loss the peer last reported for what this side sends, percent;
    /// -1 when unknown (babel, no report yet, or the peer's latest report
    /// covered no media: nothing of ours reached it in its last second).
    pub remote_loss_pct: i32,
    /// Samples per channel (48 kHz) the jitter buffer added by playing
    /// decoded audio stretched, to grow the playout delay (real audio played
    /// longer, not concealment). Appended last: the fields above keep
    /// their offsets.
    pub samples_stretched: u64,
    /// Samples per channel removed by playing decoded audio compressed, to
    /// shrink the playout delay.
    pub samples_compressed: u64,
}

impl From<CallStats> for cw_audio_stats {
    fn from(s: CallStats) -> Self {
        cw_audio_stats {
            packets_sent: s.packets_sent,
            packets_received: s.packets_received,
            packets_lost: s.packets_lost,
            packets_late: s.packets_late,
            packets_duplicate: s.packets_duplicate,
            frames_concealed: s.frames_concealed,
            frames_concealed_fec: s.frames_concealed_fec,
            frames_dropped: s.frames_dropped,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            playout_delay_ms: s.playout_delay_ms,
            target_delay_ms: s.target_delay_ms,
            jitter_ms: s.jitter_ms,
            rtt_ms: s.rtt_ms.unwrap_or(-1.0),
            send_bitrate: s.send_bitrate,
            recv_bitrate: s.recv_bitrate,
            expected_loss_pct: i32::from(s.expected_loss_pct),
            remote_loss_pct: s.remote_loss_pct.map_or(-1, i32::from),
            samples_stretched: s.samples_stretched,
            samples_compressed: s.samples_compressed,
        }
    }
}

/// An optional name: NULL and "" both mean "the default".
unsafe fn arg_opt<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL; the caller promises a NUL-terminated string.
    let s = unsafe { arg_str(p, what) }?;
    Ok(Some(s).filter(|s| !s.is_empty()))
}

/// Accounts and babel: ring `pseudo` for a call the library carries.
/// Accounts: the library binds a UDP socket (on the interface that reaches
/// the server; port: see cw_client_set_voice_ports) and names it, with
/// `addr` (NULL or "": the address the server sees), in the request; when
/// the friend answers, CW_EVENT_CALL_ACCEPTED is followed by
/// CW_EVENT_CALL_ESTABLISHED. Babel: as cw_client_place_call with port 0.
/// Either way, take the call from CW_EVENT_CALL_ESTABLISHED; a refusal is
/// CW_EVENT_CALL_FAILED.
///
/// Returns: CW_OK once sent; CW_CALL_IN_PROGRESS; CW_INVALID_ARGUMENT
/// (yourself); CW_TOO_LONG; CW_IO (no socket); CW_NOT_LOGGED_IN;
/// CW_UNSUPPORTED (chatos, rooms); CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_place_voice_call(
    client: *const cw_client,
    pseudo: *const c_char,
    addr: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        let addr = arg_opt(addr, "addr")?.unwrap_or("");
        c.inner.place_voice_call(arg_str(pseudo, "pseudo")?, addr)
    })
}

/// Accounts and babel: answer `pseudo`'s ringing call (from
/// CW_EVENT_CALL_INCOMING) with a call the library carries. Accounts: the
/// library binds a UDP socket, starts the call towards the caller's voice
/// end point, and answers naming its socket with `addr` (NULL or "": the
/// address the server sees). Babel: as cw_client_accept_call (`addr` is
/// not used). Either way, CW_EVENT_CALL_ESTABLISHED follows (babel: or
/// CW_EVENT_CALL_FAILED).
///
/// Returns: CW_OK; CW_NO_SUCH_CALL when no call from `pseudo` rings;
/// CW_CONNECT_FAILED (accounts: the caller's end point is not an IP
/// address; the call still rings); CW_IO (no socket); CW_TOO_LONG;
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_answer_voice_call(
    client: *const cw_client,
    pseudo: *const c_char,
    addr: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        let addr = arg_opt(addr, "addr")?.unwrap_or("");
        c.inner.answer_voice_call(arg_str(pseudo, "pseudo")?, addr)
    })
}

/// Accounts and babel: where calls the library carries listen
/// (`local_port`; 0, the default: any free port) and the port their
/// signalling names to the peer instead (`advertised_port`; 0: the local
/// one). For a port a NAT forwards, or a relay in front. Accounts: the UDP
/// socket of cw_client_place_voice_call and cw_client_answer_voice_call.
/// Babel: the TCP listener of a call placed with port 0, and the port its
/// CallRequest names. Applies to calls placed or answered afterwards.
///
/// Returns: CW_OK; CW_UNSUPPORTED (chatos, rooms).
/// Ownership: nothing is kept.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_set_voice_ports(
    client: *const cw_client,
    local_port: u16,
    advertised_port: u16,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(client, "client")?
            .inner
            .set_voice_ports(VoicePorts {
                local: local_port,
                advertised: advertised_port,
            })
    })
}

/// Take the call of a CW_EVENT_CALL_ESTABLISHED event. Until it is taken,
/// the call belongs to the event, and cw_event_free hangs it up.
///
/// Returns: CW_OK and `*out` set; CW_INVALID_ARGUMENT for other kinds or
/// when the call was already taken.
/// Ownership: `*out` is owned by the caller; release it with cw_call_free.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_take_call(
    ev: *mut cw_event,
    out: *mut *mut cw_call,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let e = ev.as_mut().ok_or_else(|| null("ev"))?;
        match e.inner_mut() {
            Event::CallEstablished { call, .. } => {
                let call = call.take().ok_or_else(|| {
                    Failure::new(cw_result::CW_INVALID_ARGUMENT, "the call was already taken")
                })?;
                let peer = c_string(call.peer());
                *out = Box::into_raw(Box::new(cw_call { inner: call, peer }));
                Ok(())
            }
            _ => Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                "this event carries no call",
            )),
        }
    })
}

/// The name of the user at the other end of a call.
///
/// Returns: a NUL-terminated UTF-8 name; NULL for NULL.
/// Ownership: borrowed; valid until cw_call_free(call).
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_peer(call: *const cw_call) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match call.as_ref() {
            Some(c) => c.peer.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The interleaved channels of the call's PCM: 2 for babel (stereo, what
/// the original Babel client sends), 1 for accounts (mono).
///
/// Returns: 1 or 2; 0 for NULL.
/// Ownership: `call` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_channels(call: *const cw_call) -> u32 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        call.as_ref().map_or(0, |c| c.inner.channels() as u32)
    })
}

/// Send one voice payload of your own codec. Babel: one VoiceData frame of
/// `len` bytes (at most CW_BABEL_MAX_VOICE; the original client sends one
/// Opus packet, 48 kHz stereo, 20 ms). Accounts: one UDP datagram, the
/// voice magic then the payload (at most CW_VOICE_MAX_FRAME bytes; its
/// layout is yours). The library encodes nothing here: see
/// cw_call_send_pcm for that.
///
/// Returns: CW_OK once written; CW_TOO_LONG; CW_CLOSED after a hang-up
/// (either side); CW_IO (babel: also when the peer takes nothing for 5 s).
/// Ownership: `data` is borrowed for the call (NULL is allowed when `len` is 0).
/// Threads: any thread; sends are serialised with each other and may run
/// alongside a receive.
#[no_mangle]
pub unsafe extern "C" fn cw_call_send_voice(
    call: *const cw_call,
    data: *const u8,
    len: usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        Ok(c.inner.send(arg_slice(data, len, "data")?)?)
    })
}

/// Take the next voice payload the peer sent, in order, waiting at most
/// `timeout_ms` milliseconds (0: poll; negative: without limit). Babel: a
/// VoiceData payload; accounts: what follows the magic of a datagram (a
/// library peer sends media and report bodies, see
/// docs/protocols/accounts.md). The library queues up to 256 payloads
/// (about 5 s of voice) and drops the oldest beyond that.
///
/// The first receive decides how this call receives: after
/// cw_call_recv_voice, cw_call_recv_pcm and a speaker are refused, and
/// after those, this is.
///
/// Returns: CW_OK and `*got` = the payload's size (0 is a valid, empty
/// payload); CW_TIMEOUT; CW_TOO_LONG when the next payload is larger than
/// `cap` (it stays queued: pass CW_BABEL_MAX_VOICE bytes); CW_CLOSED once
/// the call is over and every payload has been taken (the peer hung up,
/// broke the protocol, or this side hung up); CW_INVALID_ARGUMENT when
/// this call's voice is decoded (cw_call_recv_pcm or a speaker came first).
/// Ownership: `buf` is borrowed for the call (NULL is allowed when `cap` is 0).
/// Threads: any thread; receives are serialised with each other.
#[no_mangle]
pub unsafe extern "C" fn cw_call_recv_voice(
    call: *const cw_call,
    buf: *mut u8,
    cap: usize,
    timeout_ms: i32,
    got: *mut usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        check_out(got, "got")?;
        let c = arg_ref(call, "call")?;
        *got = c
            .inner
            .recv_into(arg_slice_mut(buf, cap, "buf")?, timeout(timeout_ms))?;
        Ok(())
    })
}

/// Push captured audio: `frames` sample frames of 48 kHz interleaved
/// int16_t PCM, cw_call_channels(call) samples each (so `pcm` holds
/// frames * channels samples). Any count from 0 to CW_PCM_MAX_FRAMES is
/// accepted; every 20 ms (CW_FRAME_SAMPLES) completed is encoded with Opus
/// and sent at once, and a partial frame waits for the next push. Push at
/// the pace you capture (20 ms every 20 ms is the natural rhythm).
///
/// Returns: CW_OK; CW_CLOSED once the call is over; CW_INVALID_ARGUMENT
/// for more than CW_PCM_MAX_FRAMES, or while a microphone feeds the call;
/// CW_IO when sending failed.
/// Ownership: `pcm` is borrowed for the call (NULL is allowed when `frames` is 0).
/// Threads: any thread, one at a time per call (pushes are serialised);
/// may run alongside cw_call_recv_pcm on another thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_send_pcm(
    call: *const cw_call,
    pcm: *const i16,
    frames: usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: `pcm` valid for frames * channels samples
    // (NULL only with 0 frames); the length is bounded before the slice is made.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        let samples = pcm_len(frames, c.inner.channels())?;
        Ok(c.inner.send_pcm(arg_slice(pcm, samples, "pcm")?)?)
    })
}

/// Fill `out` with `frames` sample frames to play from now on (48 kHz
/// interleaved int16_t, cw_call_channels(call) samples each): decoded from
/// the jitter buffer, rebuilt from FEC or concealed where a packet was
/// lost or late, silence before the first packet. It never blocks and
/// always fills the whole buffer; call it at the pace you play (the buffer
/// is taken to start playing at the moment of the call). Any count from 0
/// to CW_PCM_MAX_FRAMES is accepted.
///
/// Returns: CW_OK and `out` filled; CW_CLOSED once the call is over and
/// everything received has been played (`out` untouched);
/// CW_INVALID_ARGUMENT for more than CW_PCM_MAX_FRAMES, while a speaker
/// plays the call, or when its voice is received raw (cw_call_recv_voice).
/// Ownership: `out` is borrowed for the call (NULL is allowed when `frames` is 0).
/// Threads: any thread, one at a time per call; may run alongside
/// cw_call_send_pcm on another thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_recv_pcm(
    call: *const cw_call,
    out: *mut i16,
    frames: usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: `out` valid for frames * channels samples
    // (NULL only with 0 frames); the length is bounded before the slice is made.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        let samples = pcm_len(frames, c.inner.channels())?;
        Ok(c.inner.recv_pcm(arg_slice_mut(out, samples, "out")?)?)
    })
}

/// Samples in `frames` sample frames, refused above the limit before any
/// slice is made from the caller's pointer.
fn pcm_len(frames: usize, channels: usize) -> Result<usize, Failure> {
    if frames > CW_PCM_MAX_FRAMES {
        return Err(Failure::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("{frames} sample frames at once; at most {CW_PCM_MAX_FRAMES} (1 s)"),
        ));
    }
    Ok(frames * channels)
}

/// The call's statistics now: packets sent, received, lost, late and
/// concealed, playout delay, jitter, round-trip time, bitrates.
///
/// Returns: CW_OK and `*out` filled; CW_NULL_ARGUMENT.
/// Ownership: `out` is the caller's.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_stats(
    call: *const cw_call,
    out: *mut cw_audio_stats,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(call, "call")?;
        *out = c.inner.stats().into();
        Ok(())
    })
}

/// Attach sound devices: play the call on the speaker `speaker` and send
/// what the microphone `microphone` captures (each NULL or "": the
/// system's default; otherwise a name from cw_audio_devices or a device's
/// description). The library then moves the audio itself: a device thread
/// pulls the call every 20 ms and a library thread pushes the microphone;
/// cw_call_send_pcm and cw_call_recv_pcm are refused until
/// cw_call_stop_devices. If either device fails, neither stays attached.
/// Devices close when the call ends.
///
/// Returns: CW_OK; CW_NO_DEVICE (no such device, or no sound card: the
/// default cannot be opened); CW_DEVICE_FAILED (it exists but cannot be
/// opened); CW_NO_DEVICE_SUPPORT (built without the `device` feature);
/// CW_CLOSED; CW_INVALID_ARGUMENT when the call's voice is received raw.
/// cw_last_error names the device.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread; not concurrently with another device function on
/// the same call.
#[no_mangle]
pub unsafe extern "C" fn cw_call_use_devices(
    call: *const cw_call,
    microphone: *const c_char,
    speaker: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        let (mic, spk) = (
            arg_opt(microphone, "microphone")?,
            arg_opt(speaker, "speaker")?,
        );
        c.inner.use_speaker(spk)?;
        if let Err(e) = c.inner.use_microphone(mic) {
            c.inner.stop_devices();
            return Err(e.into());
        }
        Ok(())
    })
}

/// Attach only a speaker (NULL or "": the default); see cw_call_use_devices.
///
/// Returns: as cw_call_use_devices.
/// Ownership: `name` is borrowed for the call.
/// Threads: as cw_call_use_devices.
#[no_mangle]
pub unsafe extern "C" fn cw_call_use_speaker(
    call: *const cw_call,
    name: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        c.inner.use_speaker(arg_opt(name, "name")?)?;
        Ok(())
    })
}

/// Attach only a microphone (NULL or "": the default); see
/// cw_call_use_devices.
///
/// Returns: as cw_call_use_devices.
/// Ownership: `name` is borrowed for the call.
/// Threads: as cw_call_use_devices.
#[no_mangle]
pub unsafe extern "C" fn cw_call_use_microphone(
    call: *const cw_call,
    name: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        c.inner.use_microphone(arg_opt(name, "name")?)?;
        Ok(())
    })
}

/// Close the call's speaker and microphone, if any; the call goes on and
/// PCM may be pushed and pulled again.
///
/// Returns: CW_OK; CW_NULL_ARGUMENT.
/// Ownership: `call` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_stop_devices(call: *const cw_call) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(call, "call")?.inner.stop_devices();
        Ok(())
    })
}

/// Mute (`muted` non-zero) or unmute one side of the call (a cw_audio_side
/// value): a muted microphone sends silence, so the call keeps its timing;
/// a muted speaker plays silence. Applies to devices and PCM alike, at once.
///
/// Returns: CW_OK; CW_INVALID_ARGUMENT for another `side`; CW_NULL_ARGUMENT.
/// Ownership: `call` is borrowed.
/// Threads: any thread, also while audio flows.
#[no_mangle]
pub unsafe extern "C" fn cw_call_set_muted(
    call: *const cw_call,
    side: i32,
    muted: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        c.inner.set_muted(self::side(side)?, muted != 0);
        Ok(())
    })
}

/// Set one side's volume (a cw_audio_side value): 1.0 leaves the audio as
/// it is, 0.0 is silent, up to 2.0 (clamped; NaN counts as 1.0). Applies
/// to devices and PCM alike, at once.
///
/// Returns: CW_OK; CW_INVALID_ARGUMENT for another `side`; CW_NULL_ARGUMENT.
/// Ownership: `call` is borrowed.
/// Threads: any thread, also while audio flows.
#[no_mangle]
pub unsafe extern "C" fn cw_call_set_volume(
    call: *const cw_call,
    side: i32,
    volume: f32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        c.inner.set_volume(self::side(side)?, volume);
        Ok(())
    })
}

/// The sound devices of one side (a cw_audio_side value: microphones or
/// speakers), by the names cw_call_use_devices takes (ALSA: PCM names such
/// as "default" or "hw:CARD=...").
///
/// Returns: CW_OK and `*out` set (possibly empty); CW_NO_DEVICE_SUPPORT
/// (built without the `device` feature); CW_DEVICE_FAILED (the system
/// cannot list them); CW_INVALID_ARGUMENT for another `side`.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_audio_devices(side: i32, out: *mut *mut cw_strings) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let list = match self::side(side)? {
            Side::Microphone => input_devices()?,
            Side::Speaker => output_devices()?,
        };
        *out = strings(list.into_iter().map(|d| d.id).collect());
        Ok(())
    })
}

/// Hang up: end the call's media (babel: close the peer-to-peer
/// connection; accounts: the server is told, 146). The peer gets
/// CW_EVENT_CALL_ENDED; this side gets no event. Blocked receives wake
/// with CW_CLOSED. Idempotent. cw_client_hangup_call(client, peer) does
/// the same by name.
///
/// Returns: CW_OK (also when already over); CW_NULL_ARGUMENT.
/// Ownership: the handle stays valid; release it with cw_call_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_hangup(call: *const cw_call) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(call, "call")?.inner.hangup();
        Ok(())
    })
}

/// Hang up (if needed), close its devices and release a call. A babel call
/// outlives its client (it is peer to peer); an accounts call ends when its
/// client's connection does.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `call`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same call.
#[no_mangle]
pub unsafe extern "C" fn cw_call_free(call: *mut cw_call) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !call.is_null() {
            drop(Box::from_raw(call));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AudioError;
    use crate::core::Error;

    #[test]
    fn device_errors_have_their_own_codes() {
        let code = |e: AudioError| cw_result::from(Error::from(e).code);
        assert_eq!(
            code(AudioError::DeviceSupportMissing),
            cw_result::CW_NO_DEVICE_SUPPORT
        );
        assert_eq!(
            code(AudioError::NoDevice("x".into())),
            cw_result::CW_NO_DEVICE
        );
        assert_eq!(
            code(AudioError::Device("x".into())),
            cw_result::CW_DEVICE_FAILED
        );
        assert_eq!(
            code(AudioError::Format("x".into())),
            cw_result::CW_INVALID_ARGUMENT
        );
        assert!(side(0).is_err() && side(3).is_err());
        assert_eq!(pcm_len(CW_PCM_MAX_FRAMES, 2).unwrap(), 96000);
        assert!(pcm_len(CW_PCM_MAX_FRAMES + 1, 1).is_err());
    }

    #[cfg(not(feature = "device"))]
    #[test]
    fn without_the_feature_device_functions_say_so() {
        let mut out = ptr::null_mut();
        let r = unsafe { cw_audio_devices(cw_audio_side::CW_AUDIO_SPEAKER as i32, &mut out) };
        assert_eq!(r, cw_result::CW_NO_DEVICE_SUPPORT);
    }
}
