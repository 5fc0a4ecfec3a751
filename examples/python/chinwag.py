"""chinwag.py - Python bindings for libchinwag over ctypes.

The low layer declares argtypes and restype for every C function (the
default int return type would truncate pointers). The high layer on top
gives a Client class, events as an iterator, Stream objects, context
managers that close and free, and exceptions that carry the result code
and the library's last-error text.

The library is found through $CHINWAG_LIB (a path to libchinwag.so), then
the target/ directories of this checkout, then the system search path.
"""

import array
import ctypes
import ctypes.util
import enum
import os
import sys

__all__ = [
    "Result", "EventKind", "Dialect", "ChinwagError", "Timeout", "Closed",
    "Client", "Event", "Stream", "Call", "HistoryEntry", "version", "lib",
    "voice_packet", "voice_frame", "VOICE_MAX_FRAME", "BABEL_MAX_VOICE",
    "RoomMode", "Room", "ROOMS_RETRY_MS", "ROOMS_TRIES",
    "AudioSide", "AudioStats", "audio_devices", "SAMPLE_RATE", "FRAME_SAMPLES",
    "PCM_MAX_FRAMES",
]


class Result(enum.IntEnum):
    OK = 0
    TIMEOUT = 1
    CLOSED = 2
    NULL_ARGUMENT = 100
    INVALID_UTF8 = 101
    INVALID_ARGUMENT = 102
    TOO_LONG = 103
    UNSUPPORTED = 104
    CONNECT_FAILED = 200
    IO = 201
    PROTOCOL = 202
    LOGIN_REFUSED = 300
    NOT_LOGGED_IN = 301
    ALREADY_LOGGED_IN = 302
    BUSY = 303
    NO_SUCH_REQUEST = 400
    NO_SUCH_CALL = 500
    CALL_IN_PROGRESS = 501
    EMAIL_TAKEN = 600
    PSEUDO_TAKEN = 601
    REGISTER_REFUSED = 602
    NO_SUCH_USER = 603
    ALREADY_FRIENDS = 604
    MESSAGE_FAILED = 605
    ROOM_EXISTS = 700
    NO_SUCH_ROOM = 701
    ROOM_FULL = 702
    NOT_IN_ROOM = 703
    NO_DEVICE = 800
    DEVICE_FAILED = 801
    NO_DEVICE_SUPPORT = 802
    PANIC = 900
    INTERNAL = 901


class EventKind(enum.IntEnum):
    NONE = 0
    OVERFLOW = 1
    ERROR = 2
    DISCONNECTED = 3
    MESSAGE = 100
    PRIVATE_MESSAGE = 101
    PRIVATE_REQUEST = 200
    PRIVATE_REFUSED = 201
    PRIVATE_ESTABLISHED = 202
    PRIVATE_CLOSED = 203
    PRIVATE_FAILED = 204
    CONTACT_ADDED = 300
    CONTACT_REMOVED = 301
    CALL_INCOMING = 400
    CALL_ACCEPTED = 401
    CALL_FAILED = 402
    CALL_ENDED = 403
    CALL_ESTABLISHED = 404
    FRIEND_REQUEST = 500
    FRIEND_ACCEPTED = 501
    FRIEND_REFUSED = 502
    ROOM_INVITATION = 600


class RoomMode(enum.IntEnum):
    CENTRALISED = 0
    DECENTRALISED = 1


class Room(tuple):
    """One entry of Client.rooms(): (name, mode, clients)."""
    __slots__ = ()

    def __new__(cls, name, mode, clients):
        return tuple.__new__(cls, (name, mode, clients))

    name = property(lambda self: self[0])
    mode = property(lambda self: self[1])
    clients = property(lambda self: self[2])

    def __repr__(self):
        return "Room(%r, %s, %d)" % (self.name, self.mode.name, self.clients)


class AudioSide(enum.IntEnum):
    """Which end of a call's audio: what it sends, or what it plays."""
    MICROPHONE = 1
    SPEAKER = 2


class Dialect(enum.IntEnum):
    CHATOS = 1
    BABEL = 2
    ACCOUNTS = 3
    ROOMS = 4


def _candidates():
    env = os.environ.get("CHINWAG_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    names = {"darwin": "libchinwag.dylib", "win32": "chinwag.dll"}
    name = names.get(sys.platform, "libchinwag.so")
    for target in ("target", "target-lib"):
        for profile in ("debug", "release"):
            yield os.path.join(root, target, profile, name)
    found = ctypes.util.find_library("chinwag")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        return ctypes.CDLL(path)
    raise OSError("libchinwag not found; set CHINWAG_LIB (tried: %s)" % ", ".join(tried))


lib = _load()

_c_client_p = ctypes.c_void_p
_c_event_p = ctypes.c_void_p
_c_stream_p = ctypes.c_void_p
_c_strings_p = ctypes.c_void_p
_c_history_p = ctypes.c_void_p
_c_call_p = ctypes.c_void_p
_c_rooms_p = ctypes.c_void_p
_size_p = ctypes.POINTER(ctypes.c_size_t)

# Voice packets: 4 bytes of magic, then at most this many bytes of audio.
VOICE_HEADER = 4
VOICE_MAX_FRAME = 1275
# Babel: the largest VoiceData payload (one Opus packet in practice).
BABEL_MAX_VOICE = 65536
# Rooms: a request is sent every ROOMS_RETRY_MS, at most ROOMS_TRIES times.
ROOMS_RETRY_MS = 100
ROOMS_TRIES = 5
# Call audio: 48 kHz interleaved int16 PCM, cw_call_channels() channels,
# encoded 20 ms (FRAME_SAMPLES sample frames) at a time; at most
# PCM_MAX_FRAMES per push or pull.
SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
PCM_MAX_FRAMES = 48000
_res = ctypes.c_int
_str = ctypes.c_char_p


class AudioStats(ctypes.Structure):
    """A call's statistics (cw_audio_stats): counters since the call began,
    delays in milliseconds; rtt_ms and remote_loss_pct are -1 when unknown."""
    _fields_ = [
        ("packets_sent", ctypes.c_uint64),
        ("packets_received", ctypes.c_uint64),
        ("packets_lost", ctypes.c_uint64),
        ("packets_late", ctypes.c_uint64),
        ("packets_duplicate", ctypes.c_uint64),
        ("frames_concealed", ctypes.c_uint64),
        ("frames_concealed_fec", ctypes.c_uint64),
        ("frames_dropped", ctypes.c_uint64),
        ("bytes_sent", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("playout_delay_ms", ctypes.c_double),
        ("target_delay_ms", ctypes.c_double),
        ("jitter_ms", ctypes.c_double),
        ("rtt_ms", ctypes.c_double),
        ("send_bitrate", ctypes.c_uint32),
        ("recv_bitrate", ctypes.c_uint32),
        ("expected_loss_pct", ctypes.c_int32),
        ("remote_loss_pct", ctypes.c_int32),
    ]

    def as_dict(self):
        return {name: getattr(self, name) for name, _ in self._fields_}

    def __repr__(self):
        return "AudioStats(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())

# (name, restype, argtypes) for every exported function.
_SIGNATURES = [
    ("cw_version", ctypes.c_char_p, []),
    ("cw_result_str", ctypes.c_char_p, [ctypes.c_int]),
    ("cw_last_error", ctypes.c_char_p, []),
    ("cw_string_free", None, [ctypes.c_void_p]),
    ("cw_client_connect", _res, [_str, ctypes.c_uint16, ctypes.c_int32, ctypes.POINTER(_c_client_p)]),
    ("cw_client_login", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_client_login_name", _res, [_c_client_p, ctypes.POINTER(ctypes.c_void_p)]),
    ("cw_client_send_message", _res, [_c_client_p, _str]),
    ("cw_client_send_private", _res, [_c_client_p, _str, _str]),
    ("cw_client_request_private", _res, [_c_client_p, _str]),
    ("cw_client_accept_private", _res, [_c_client_p, _str]),
    ("cw_client_refuse_private", _res, [_c_client_p, _str]),
    ("cw_client_next_event", _res, [_c_client_p, ctypes.c_int32, ctypes.POINTER(_c_event_p)]),
    ("cw_client_close", _res, [_c_client_p]),
    ("cw_client_free", None, [_c_client_p]),
    ("cw_event_kind", ctypes.c_int, [_c_event_p]),
    ("cw_event_peer", ctypes.c_char_p, [_c_event_p]),
    ("cw_event_text", ctypes.c_char_p, [_c_event_p]),
    ("cw_event_count", ctypes.c_uint64, [_c_event_p]),
    ("cw_event_result", _res, [_c_event_p]),
    ("cw_event_connect_id", _res, [_c_event_p, ctypes.POINTER(ctypes.c_int64)]),
    ("cw_event_take_stream", _res, [_c_event_p, ctypes.POINTER(_c_stream_p)]),
    ("cw_event_free", None, [_c_event_p]),
    ("cw_stream_read", _res, [_c_stream_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32,
                              ctypes.POINTER(ctypes.c_size_t)]),
    ("cw_stream_write", _res, [_c_stream_p, ctypes.c_void_p, ctypes.c_size_t]),
    ("cw_stream_shutdown_write", _res, [_c_stream_p]),
    ("cw_stream_close", _res, [_c_stream_p]),
    ("cw_stream_peer", ctypes.c_char_p, [_c_stream_p]),
    ("cw_stream_connect_id", _res, [_c_stream_p, ctypes.POINTER(ctypes.c_int64)]),
    ("cw_stream_free", None, [_c_stream_p]),
    # accounts
    ("cw_client_register", _res, [_c_client_p, _str, _str, _str, ctypes.c_int32]),
    ("cw_client_login_password", _res, [_c_client_p, _str, _str, ctypes.c_int32]),
    ("cw_client_account_id", _res, [_c_client_p, ctypes.POINTER(ctypes.c_uint64)]),
    ("cw_client_request_friend", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_client_accept_friend", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_client_refuse_friend", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_client_list_friends", _res, [_c_client_p, ctypes.c_int32, ctypes.POINTER(_c_strings_p)]),
    ("cw_client_list_friend_requests", _res,
     [_c_client_p, ctypes.c_int32, ctypes.POINTER(_c_strings_p)]),
    ("cw_strings_count", ctypes.c_size_t, [_c_strings_p]),
    ("cw_strings_get", ctypes.c_char_p, [_c_strings_p, ctypes.c_size_t]),
    ("cw_strings_free", None, [_c_strings_p]),
    ("cw_client_send_to_friend", _res, [_c_client_p, _str, _str, ctypes.c_int32]),
    ("cw_client_history", _res, [_c_client_p, _str, ctypes.c_uint64, ctypes.c_int32,
                                 ctypes.POINTER(_c_history_p)]),
    ("cw_history_count", ctypes.c_size_t, [_c_history_p]),
    ("cw_history_id", ctypes.c_uint64, [_c_history_p, ctypes.c_size_t]),
    ("cw_history_sender_id", ctypes.c_uint64, [_c_history_p, ctypes.c_size_t]),
    ("cw_history_text", ctypes.c_char_p, [_c_history_p, ctypes.c_size_t]),
    ("cw_history_free", None, [_c_history_p]),
    ("cw_client_place_call", _res, [_c_client_p, _str, _str, ctypes.c_uint16]),
    ("cw_client_answer_call", _res, [_c_client_p, _str, _str, ctypes.c_uint16]),
    ("cw_client_refuse_call", _res, [_c_client_p, _str]),
    ("cw_client_hangup_call", _res, [_c_client_p, _str]),
    ("cw_event_address", ctypes.c_char_p, [_c_event_p]),
    ("cw_event_port", ctypes.c_uint16, [_c_event_p]),
    ("cw_voice_packet_encode", _res, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                      ctypes.c_size_t, _size_p]),
    ("cw_voice_packet_decode", _res, [ctypes.c_char_p, ctypes.c_size_t, _size_p, _size_p]),
    # babel
    ("cw_client_contacts", _res, [_c_client_p, ctypes.POINTER(_c_strings_p)]),
    ("cw_client_accept_call", _res, [_c_client_p, _str]),
    ("cw_event_take_call", _res, [_c_event_p, ctypes.POINTER(_c_call_p)]),
    ("cw_call_peer", ctypes.c_char_p, [_c_call_p]),
    ("cw_call_send_voice", _res, [_c_call_p, ctypes.c_char_p, ctypes.c_size_t]),
    ("cw_call_recv_voice", _res, [_c_call_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32,
                                  _size_p]),
    ("cw_call_hangup", _res, [_c_call_p]),
    ("cw_call_free", None, [_c_call_p]),
    # call audio (babel and accounts)
    ("cw_client_place_voice_call", _res, [_c_client_p, _str, _str]),
    ("cw_client_answer_voice_call", _res, [_c_client_p, _str, _str]),
    ("cw_client_set_voice_ports", _res, [_c_client_p, ctypes.c_uint16, ctypes.c_uint16]),
    ("cw_call_channels", ctypes.c_uint32, [_c_call_p]),
    ("cw_call_send_pcm", _res, [_c_call_p, ctypes.c_void_p, ctypes.c_size_t]),
    ("cw_call_recv_pcm", _res, [_c_call_p, ctypes.c_void_p, ctypes.c_size_t]),
    ("cw_call_stats", _res, [_c_call_p, ctypes.POINTER(AudioStats)]),
    ("cw_call_use_devices", _res, [_c_call_p, _str, _str]),
    ("cw_call_use_speaker", _res, [_c_call_p, _str]),
    ("cw_call_use_microphone", _res, [_c_call_p, _str]),
    ("cw_call_stop_devices", _res, [_c_call_p]),
    ("cw_call_set_muted", _res, [_c_call_p, ctypes.c_int32, ctypes.c_int32]),
    ("cw_call_set_volume", _res, [_c_call_p, ctypes.c_int32, ctypes.c_float]),
    ("cw_audio_devices", _res, [ctypes.c_int32, ctypes.POINTER(_c_strings_p)]),
    # rooms
    ("cw_client_room_user_id", _res, [_c_client_p, ctypes.POINTER(ctypes.c_uint8)]),
    ("cw_client_room_create", _res, [_c_client_p, _str, ctypes.c_int32, ctypes.c_uint8,
                                     ctypes.POINTER(ctypes.c_uint8)]),
    ("cw_client_room_list", _res, [_c_client_p, ctypes.POINTER(_c_rooms_p)]),
    ("cw_rooms_count", ctypes.c_size_t, [_c_rooms_p]),
    ("cw_rooms_name", ctypes.c_char_p, [_c_rooms_p, ctypes.c_size_t]),
    ("cw_rooms_mode", ctypes.c_int32, [_c_rooms_p, ctypes.c_size_t]),
    ("cw_rooms_clients", ctypes.c_uint32, [_c_rooms_p, ctypes.c_size_t]),
    ("cw_rooms_free", None, [_c_rooms_p]),
    ("cw_client_room_join", _res, [_c_client_p, _str]),
    ("cw_client_room_change", _res, [_c_client_p, _str]),
    ("cw_client_room_leave", _res, [_c_client_p]),
    ("cw_client_room_current", _res, [_c_client_p, ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_int32)]),
    ("cw_client_room_members", _res, [_c_client_p, _str, ctypes.POINTER(_c_strings_p)]),
    ("cw_client_room_peers", _res, [_c_client_p, ctypes.POINTER(_c_strings_p)]),
    ("cw_client_room_invite", _res, [_c_client_p, _str]),
    ("cw_client_room_answer_invitation", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_event_room_mode", ctypes.c_int32, [_c_event_p]),
]

for _name, _restype, _argtypes in _SIGNATURES:
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes


class ChinwagError(Exception):
    """A libchinwag call failed: `code` is a Result, `message` the last error."""

    def __init__(self, code, message):
        try:
            code = Result(code)
        except ValueError:
            pass
        self.code = code
        self.message = message
        super().__init__("%s: %s" % (getattr(code, "name", code), message))


class Timeout(ChinwagError):
    """Nothing happened before the time limit (CW_TIMEOUT)."""


class Closed(ChinwagError):
    """The client or stream is closed (CW_CLOSED)."""


def _check(code):
    if code == Result.OK:
        return
    message = (lib.cw_last_error() or b"").decode("utf-8", "replace")
    cls = {Result.TIMEOUT: Timeout, Result.CLOSED: Closed}.get(code, ChinwagError)
    raise cls(code, message)


def _enc(s):
    return s.encode("utf-8") if isinstance(s, str) else s


def _dec(b):
    return None if b is None else b.decode("utf-8", "replace")


def _ms(timeout):
    """Seconds (None: without limit) to the C API's milliseconds."""
    if timeout is None:
        return -1
    return max(0, min(int(timeout * 1000), 2**31 - 1))


def version():
    return lib.cw_version().decode()


def voice_packet(frame):
    """A UDP voice packet (accounts) carrying one compressed audio frame."""
    frame = bytes(frame)
    out = ctypes.create_string_buffer(VOICE_HEADER + len(frame))
    n = ctypes.c_size_t(0)
    _check(lib.cw_voice_packet_encode(frame, len(frame), out, len(out), ctypes.byref(n)))
    return out.raw[: n.value]


def voice_frame(packet):
    """The compressed frame inside a voice packet; raises ChinwagError
    (PROTOCOL) for a packet to drop."""
    packet = bytes(packet)
    off, n = ctypes.c_size_t(0), ctypes.c_size_t(0)
    _check(lib.cw_voice_packet_decode(packet, len(packet), ctypes.byref(off), ctypes.byref(n)))
    return packet[off.value: off.value + n.value]


class HistoryEntry(tuple):
    """One message of a conversation: (id, sender_id, text)."""

    __slots__ = ()

    def __new__(cls, id, sender_id, text):
        return tuple.__new__(cls, (id, sender_id, text))

    id = property(lambda self: self[0])
    sender_id = property(lambda self: self[1])
    text = property(lambda self: self[2])

    def __repr__(self):
        return "HistoryEntry(id=%d, sender_id=%d, text=%r)" % self


class Stream:
    """The byte stream of an established private connection."""

    def __init__(self, handle):
        self._h = handle
        self.peer = _dec(lib.cw_stream_peer(handle))

    def _handle(self):
        if not self._h:
            raise Closed(Result.CLOSED, "stream freed")
        return self._h

    def read(self, size=65536, timeout=None):
        """Up to `size` bytes; b"" once the peer finished sending. Raises Timeout."""
        buf = ctypes.create_string_buffer(size)
        got = ctypes.c_size_t(0)
        code = lib.cw_stream_read(self._handle(), buf, size, _ms(timeout), ctypes.byref(got))
        if code == Result.CLOSED:
            return b""
        _check(code)
        return buf.raw[: got.value]

    def write(self, data):
        data = bytes(data)
        _check(lib.cw_stream_write(self._handle(), data, len(data)))

    def shutdown_write(self):
        _check(lib.cw_stream_shutdown_write(self._handle()))

    @property
    def connect_id(self):
        out = ctypes.c_int64()
        _check(lib.cw_stream_connect_id(self._handle(), ctypes.byref(out)))
        return out.value

    def close(self):
        """Close and free; idempotent."""
        if self._h:
            h, self._h = self._h, None
            lib.cw_stream_close(h)
            lib.cw_stream_free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def audio_devices(side):
    """Names of the microphones (AudioSide.MICROPHONE) or speakers
    (AudioSide.SPEAKER), as Call.use_devices takes them. Raises
    ChinwagError with code NO_DEVICE_SUPPORT in a build without devices."""
    out = _c_strings_p()
    _check(lib.cw_audio_devices(int(side), ctypes.byref(out)))
    try:
        return [_dec(lib.cw_strings_get(out, i)) for i in range(lib.cw_strings_count(out))]
    finally:
        lib.cw_strings_free(out)


class Call:
    """An open call. Babel: the peer-to-peer TCP connection; accounts: the
    UDP media of a call the library carries (place_voice_call).

    Either bring your own codec (send/recv: raw payloads) or let the call
    do the audio: send_pcm/recv_pcm (48 kHz int16, `channels` interleaved:
    2 for babel, 1 for accounts), or use_devices for the sound card. The
    first receive of either kind decides which one this call uses."""

    def __init__(self, handle):
        self._h = handle
        self.peer = _dec(lib.cw_call_peer(handle))
        self.channels = lib.cw_call_channels(handle)

    def send_pcm(self, samples):
        """Push PCM: an array('h'), bytes of native int16, or a sequence of
        ints; a whole number of sample frames (len / channels), at most
        PCM_MAX_FRAMES. Complete 20 ms frames are encoded and sent now."""
        if not isinstance(samples, (array.array, bytes, bytearray)):
            samples = array.array("h", samples)
        data = bytes(samples) if not isinstance(samples, array.array) else samples.tobytes()
        count = len(data) // 2
        if count % self.channels:
            raise ChinwagError(Result.INVALID_ARGUMENT,
                               "%d samples is not whole %d-channel frames" % (count, self.channels))
        _check(lib.cw_call_send_pcm(self._handle(), data, count // self.channels))

    def recv_pcm(self, frames=FRAME_SAMPLES):
        """What to play next: an array('h') of frames * channels samples,
        always full (decoded, concealed or silence); never blocks. Raises
        Closed once the call is over and everything received was played."""
        buf = (ctypes.c_int16 * (frames * self.channels))()
        _check(lib.cw_call_recv_pcm(self._handle(), buf, frames))
        out = array.array("h")
        out.frombytes(bytes(buf))
        return out

    def stats(self):
        """The call's AudioStats now."""
        out = AudioStats()
        _check(lib.cw_call_stats(self._handle(), ctypes.byref(out)))
        return out

    def use_devices(self, microphone=None, speaker=None):
        """Play on a speaker and capture from a microphone (None: the
        defaults). Raises ChinwagError with code NO_DEVICE, DEVICE_FAILED or
        NO_DEVICE_SUPPORT."""
        _check(lib.cw_call_use_devices(self._handle(), _enc(microphone), _enc(speaker)))

    def use_speaker(self, name=None):
        _check(lib.cw_call_use_speaker(self._handle(), _enc(name)))

    def use_microphone(self, name=None):
        _check(lib.cw_call_use_microphone(self._handle(), _enc(name)))

    def stop_devices(self):
        _check(lib.cw_call_stop_devices(self._handle()))

    def set_muted(self, side, muted=True):
        """Mute or unmute AudioSide.MICROPHONE or AudioSide.SPEAKER."""
        _check(lib.cw_call_set_muted(self._handle(), int(side), 1 if muted else 0))

    def set_volume(self, side, volume):
        """1.0 unchanged, 0.0 silent, at most 2.0."""
        _check(lib.cw_call_set_volume(self._handle(), int(side), float(volume)))

    def _handle(self):
        if not self._h:
            raise Closed(Result.CLOSED, "call freed")
        return self._h

    def send(self, payload):
        """Send one payload of your own codec (babel: at most
        BABEL_MAX_VOICE bytes; accounts: VOICE_MAX_FRAME)."""
        payload = bytes(payload)
        _check(lib.cw_call_send_voice(self._handle(), payload, len(payload)))

    def recv(self, timeout=None):
        """The next payload; None on timeout; raises Closed once the call is over."""
        buf = ctypes.create_string_buffer(BABEL_MAX_VOICE)
        got = ctypes.c_size_t(0)
        code = lib.cw_call_recv_voice(self._handle(), buf, BABEL_MAX_VOICE, _ms(timeout),
                                      ctypes.byref(got))
        if code == Result.TIMEOUT:
            return None
        _check(code)
        return buf.raw[: got.value]

    def hangup(self):
        """Close the connection; the peer gets CALL_ENDED. Idempotent."""
        _check(lib.cw_call_hangup(self._handle()))

    def close(self):
        """Hang up and free; idempotent."""
        if self._h:
            h, self._h = self._h, None
            lib.cw_call_free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Event:
    """One event, copied out of the library (the C event is freed at once).

    kind: EventKind; peer, text: str or None; count: events lost (OVERFLOW);
    result: the cause of ERROR/DISCONNECTED/PRIVATE_FAILED; stream: the
    Stream of PRIVATE_ESTABLISHED (yours to close); address, port: the
    peer's end point of CALL_INCOMING/CALL_ACCEPTED (else None, 0); call:
    the Call of CALL_ESTABLISHED (yours to close); room_mode: the
    RoomMode of ROOM_INVITATION (rooms: peer invites into the room `text`).
    """

    def __init__(self, handle):
        try:
            self.kind = EventKind(lib.cw_event_kind(handle))
            self.peer = _dec(lib.cw_event_peer(handle))
            self.text = _dec(lib.cw_event_text(handle))
            self.count = lib.cw_event_count(handle)
            self.result = Result(lib.cw_event_result(handle))
            self.address = _dec(lib.cw_event_address(handle))
            self.port = lib.cw_event_port(handle)
            mode = lib.cw_event_room_mode(handle)
            self.room_mode = RoomMode(mode) if mode >= 0 else None
            self.stream = None
            self.call = None
            if self.kind == EventKind.PRIVATE_ESTABLISHED:
                out = _c_stream_p()
                _check(lib.cw_event_take_stream(handle, ctypes.byref(out)))
                self.stream = Stream(out.value)
            elif self.kind == EventKind.CALL_ESTABLISHED:
                out = _c_call_p()
                _check(lib.cw_event_take_call(handle, ctypes.byref(out)))
                self.call = Call(out.value)
        finally:
            lib.cw_event_free(handle)

    def __repr__(self):
        return "Event(%s, peer=%r, text=%r)" % (self.kind.name, self.peer, self.text)


class Client:
    """A connection to a chinwag server; use it as a context manager."""

    def __init__(self, host, port, dialect=Dialect.CHATOS):
        out = _c_client_p()
        _check(lib.cw_client_connect(_enc(host), int(port), int(dialect), ctypes.byref(out)))
        self._h = out.value

    def _handle(self):
        if not self._h:
            raise Closed(Result.CLOSED, "client freed")
        return self._h

    def login(self, name, timeout=10.0):
        """Log in; raises ChinwagError with code LOGIN_REFUSED when refused."""
        _check(lib.cw_client_login(self._handle(), _enc(name), _ms(timeout)))

    @property
    def login_name(self):
        out = ctypes.c_void_p()
        code = lib.cw_client_login_name(self._handle(), ctypes.byref(out))
        if code == Result.NOT_LOGGED_IN:
            return None
        _check(code)
        try:
            return ctypes.string_at(out.value).decode("utf-8")
        finally:
            lib.cw_string_free(out)

    def send_message(self, text):
        _check(lib.cw_client_send_message(self._handle(), _enc(text)))

    def send_private(self, to, text):
        _check(lib.cw_client_send_private(self._handle(), _enc(to), _enc(text)))

    def request_private(self, target):
        _check(lib.cw_client_request_private(self._handle(), _enc(target)))

    def accept_private(self, requester):
        _check(lib.cw_client_accept_private(self._handle(), _enc(requester)))

    def refuse_private(self, requester):
        _check(lib.cw_client_refuse_private(self._handle(), _enc(requester)))

    # -- accounts dialect (Dialect.ACCOUNTS) --

    def register(self, email, pseudo, password, timeout=10.0):
        """Create an account; raises ChinwagError with code EMAIL_TAKEN,
        PSEUDO_TAKEN or REGISTER_REFUSED (the reason is in .message)."""
        _check(lib.cw_client_register(self._handle(), _enc(email), _enc(pseudo),
                                      _enc(password), _ms(timeout)))

    def login_password(self, email, password, timeout=10.0):
        """Log in to an account; returns (pseudo, account_id). Raises
        ChinwagError with code LOGIN_REFUSED for every failure."""
        _check(lib.cw_client_login_password(self._handle(), _enc(email), _enc(password),
                                            _ms(timeout)))
        return self.login_name, self.account_id

    @property
    def account_id(self):
        out = ctypes.c_uint64()
        code = lib.cw_client_account_id(self._handle(), ctypes.byref(out))
        if code == Result.NOT_LOGGED_IN:
            return None
        _check(code)
        return out.value

    def request_friend(self, pseudo, timeout=10.0):
        """Raises ChinwagError with code NO_SUCH_USER or ALREADY_FRIENDS."""
        _check(lib.cw_client_request_friend(self._handle(), _enc(pseudo), _ms(timeout)))

    def accept_friend(self, pseudo, timeout=10.0):
        """Raises ChinwagError with code NO_SUCH_REQUEST if nothing is pending."""
        _check(lib.cw_client_accept_friend(self._handle(), _enc(pseudo), _ms(timeout)))

    def refuse_friend(self, pseudo, timeout=10.0):
        _check(lib.cw_client_refuse_friend(self._handle(), _enc(pseudo), _ms(timeout)))

    def _strings(self, fn, timeout):
        out = _c_strings_p()
        _check(fn(self._handle(), _ms(timeout), ctypes.byref(out)))
        try:
            return [_dec(lib.cw_strings_get(out, i)) for i in range(lib.cw_strings_count(out))]
        finally:
            lib.cw_strings_free(out)

    def friends(self, timeout=10.0):
        """The account's friends, sorted."""
        return self._strings(lib.cw_client_list_friends, timeout)

    def friend_requests(self, timeout=10.0):
        """Pseudos whose friend request waits for an answer, oldest first."""
        return self._strings(lib.cw_client_list_friend_requests, timeout)

    def send_to_friend(self, pseudo, text, timeout=10.0):
        """Returns once the server stored the message; raises ChinwagError
        with code MESSAGE_FAILED when it did not."""
        _check(lib.cw_client_send_to_friend(self._handle(), _enc(pseudo), _enc(text),
                                            _ms(timeout)))

    def history(self, pseudo, before=0, timeout=10.0):
        """One page (at most 50) of HistoryEntry, oldest first; pass the
        first entry's id as `before` for the page before it."""
        out = _c_history_p()
        _check(lib.cw_client_history(self._handle(), _enc(pseudo), int(before), _ms(timeout),
                                     ctypes.byref(out)))
        try:
            return [HistoryEntry(lib.cw_history_id(out, i), lib.cw_history_sender_id(out, i),
                                 _dec(lib.cw_history_text(out, i)))
                    for i in range(lib.cw_history_count(out))]
        finally:
            lib.cw_history_free(out)

    def place_call(self, pseudo, port, addr=None):
        """Accounts: ring a friend; it reaches this client's voice socket at
        addr:port (addr None: the address the server sees). The outcome is
        a CALL_ACCEPTED or CALL_FAILED event.

        Babel: ring a contact; the library listens on TCP addr:port (addr
        None: the interface that reaches the server; port 0: any). The
        outcome is CALL_ESTABLISHED (ev.call) or CALL_FAILED (ev.text)."""
        _check(lib.cw_client_place_call(self._handle(), _enc(pseudo), _enc(addr), int(port)))

    def answer_call(self, pseudo, port, addr=None):
        _check(lib.cw_client_answer_call(self._handle(), _enc(pseudo), _enc(addr), int(port)))

    def place_voice_call(self, pseudo, addr=None):
        """Accounts and babel: ring for a call the library carries (its
        audio included); take the Call from the CALL_ESTABLISHED event."""
        _check(lib.cw_client_place_voice_call(self._handle(), _enc(pseudo), _enc(addr)))

    def answer_voice_call(self, pseudo, addr=None):
        """Accounts and babel: answer a ringing call with a call the library
        carries; CALL_ESTABLISHED follows."""
        _check(lib.cw_client_answer_voice_call(self._handle(), _enc(pseudo), _enc(addr)))

    def set_voice_ports(self, local=0, advertised=0):
        """Where library-carried calls listen (0: any port) and the port
        their signalling names instead (0: the local one), e.g. for a NAT."""
        _check(lib.cw_client_set_voice_ports(self._handle(), int(local), int(advertised)))

    # -- babel dialect (Dialect.BABEL): login(name), place_call, refuse_call
    # and hangup_call above are shared --

    def contacts(self):
        """The babel users online now, sorted."""
        out = _c_strings_p()
        _check(lib.cw_client_contacts(self._handle(), ctypes.byref(out)))
        try:
            return [_dec(lib.cw_strings_get(out, i)) for i in range(lib.cw_strings_count(out))]
        finally:
            lib.cw_strings_free(out)

    def accept_call(self, caller):
        """Accept a ringing babel call: the library connects to the caller;
        the outcome is CALL_ESTABLISHED (ev.call) or CALL_FAILED."""
        _check(lib.cw_client_accept_call(self._handle(), _enc(caller)))

    def refuse_call(self, pseudo):
        _check(lib.cw_client_refuse_call(self._handle(), _enc(pseudo)))

    def hangup_call(self, pseudo):
        _check(lib.cw_client_hangup_call(self._handle(), _enc(pseudo)))

    # -- rooms dialect (Dialect.ROOMS): login(name), send_message(text) and
    # the events above are shared. Each request is retried every 100 ms, at
    # most 5 times, then raises Timeout. --

    def user_id(self):
        """Rooms: this client's ID_USER (1-254)."""
        out = ctypes.c_uint8()
        _check(lib.cw_client_room_user_id(self._handle(), ctypes.byref(out)))
        return out.value

    def create_room(self, name, mode=RoomMode.CENTRALISED, max_clients=254):
        """Create a private room and move into it; returns its id. Code
        ROOM_EXISTS when the name is taken."""
        out = ctypes.c_uint8()
        _check(lib.cw_client_room_create(self._handle(), _enc(name), int(mode), int(max_clients),
                                         ctypes.byref(out)))
        return out.value

    def rooms(self):
        """The private rooms, as Room(name, mode, clients), sorted by name."""
        out = _c_rooms_p()
        _check(lib.cw_client_room_list(self._handle(), ctypes.byref(out)))
        try:
            return [Room(_dec(lib.cw_rooms_name(out, i)), RoomMode(lib.cw_rooms_mode(out, i)),
                         lib.cw_rooms_clients(out, i))
                    for i in range(lib.cw_rooms_count(out))]
        finally:
            lib.cw_rooms_free(out)

    def join_room(self, name):
        """Enter a private room (codes NO_SUCH_ROOM, ROOM_FULL)."""
        _check(lib.cw_client_room_join(self._handle(), _enc(name)))

    def change_room(self, name):
        _check(lib.cw_client_room_change(self._handle(), _enc(name)))

    def leave_room(self):
        """Back to the public room (code NOT_IN_ROOM when already there)."""
        _check(lib.cw_client_room_leave(self._handle()))

    def current_room(self):
        """(name, RoomMode) of the room this client is in; "" is public."""
        name = ctypes.c_void_p()
        mode = ctypes.c_int32()
        _check(lib.cw_client_room_current(self._handle(), ctypes.byref(name), ctypes.byref(mode)))
        try:
            return ctypes.string_at(name.value).decode("utf-8"), RoomMode(mode.value)
        finally:
            lib.cw_string_free(name)

    def _room_strings(self, fn, *args):
        out = _c_strings_p()
        _check(fn(self._handle(), *args, ctypes.byref(out)))
        try:
            return [_dec(lib.cw_strings_get(out, i)) for i in range(lib.cw_strings_count(out))]
        finally:
            lib.cw_strings_free(out)

    def members(self, room=""):
        """The names in a room ("" for the public room)."""
        return self._room_strings(lib.cw_client_room_members, _enc(room))

    def peers(self):
        """The peers of the current decentralised room the library sends to."""
        return self._room_strings(lib.cw_client_room_peers)

    def invite(self, user):
        """Invite a user into the current private room."""
        _check(lib.cw_client_room_invite(self._handle(), _enc(user)))

    def answer_invitation(self, room, accept=True):
        """Answer a ROOM_INVITATION (within 60 s); accepting returns
        once this client is in the room (code ROOM_FULL if it was not moved)."""
        _check(lib.cw_client_room_answer_invitation(self._handle(), _enc(room),
                                                    1 if accept else 0))

    def next_event(self, timeout=None):
        """The next Event; None on timeout; raises Closed when the client is closed."""
        out = _c_event_p()
        code = lib.cw_client_next_event(self._handle(), _ms(timeout), ctypes.byref(out))
        if code == Result.TIMEOUT:
            return None
        _check(code)
        return Event(out.value)

    def events(self, timeout=None):
        """Iterate over events until the client is closed (or, with a
        timeout, until no event came in time)."""
        while True:
            try:
                ev = self.next_event(timeout)
            except Closed:
                return
            if ev is None:
                return
            yield ev

    __iter__ = events

    def close(self):
        """Close the connection; waiting threads wake. The handle stays valid."""
        if self._h:
            _check(lib.cw_client_close(self._h))

    def free(self):
        """Close and release the client; idempotent."""
        if self._h:
            h, self._h = self._h, None
            lib.cw_client_close(h)
            lib.cw_client_free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def __del__(self):
        self.free()
