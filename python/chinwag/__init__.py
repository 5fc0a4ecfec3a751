"""chinwag - Python bindings for libchinwag, the chinwag chat/voice client.

A :class:`Client` speaks one of four dialects (:class:`Dialect`) to a
chinwag server. Calls that wait for the server take ``timeout`` in
seconds (``None``: without limit). Failures raise :class:`ChinwagError`
subclasses chosen by result code (``LoginRefused``, ``Timeout``, ...);
each carries ``.code`` (a :class:`Result`) and ``.message``.

Events are pulled, never called back: iterate ``client.events()``, wait
with ``client.next_event()`` (Ctrl-C interrupts the wait), await
``client.next_event_async()`` in asyncio, or poll ``client.fileno()``
yourself. Clients, calls and streams are context managers that close and
free what they hold.

The shared library is the one bundled with this package, or
``$CHINWAG_LIB``, or a checkout's ``target/`` build.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import datetime as _dt
import enum
import logging
import select
import threading
import time
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

from ._native import lib, lib_path

__all__ = [
    "Result", "EventKind", "Dialect", "RoomMode", "LogLevel",
    "ChinwagError", "Timeout", "Closed", "ArgumentError", "TooLong", "Unsupported",
    "NetworkError", "ConnectFailed", "ProtocolError", "SessionError", "LoginRefused",
    "NotLoggedIn", "Busy", "NoSuchRequest", "CallError", "NoSuchCall", "CallInProgress",
    "AccountsError", "EmailTaken", "PseudoTaken", "RegisterRefused", "NoSuchUser",
    "AlreadyFriends", "MessageFailed", "RoomsError", "RoomExists", "NoSuchRoom", "RoomFull",
    "NotInRoom", "NoRecipient", "Limited", "Refused", "Unconfirmed", "InternalError",
    "error_class",
    "Client", "Event", "Stream", "Call", "HistoryEntry", "Room", "LogLine",
    "version", "lib", "lib_path", "voice_packet", "voice_frame",
    "set_log_level", "log_level", "next_log_line", "log_fileno", "forward_logs",
    "VOICE_HEADER", "VOICE_MAX_FRAME", "BABEL_MAX_VOICE", "ROOMS_RETRY_MS", "ROOMS_TRIES",
    "ACCOUNTS_STAMPS", "AudioSide", "AudioStats", "audio_devices", "SAMPLE_RATE",
    "FRAME_SAMPLES", "PCM_MAX_FRAMES", "NoDevice", "DeviceFailed", "NoDeviceSupport",
    "AudioError",
]

#: Voice packets (accounts): 4 bytes of magic, then at most this many bytes of audio.
VOICE_HEADER = 4
VOICE_MAX_FRAME = 1275
#: Babel: the largest VoiceData payload (one Opus packet in practice).
BABEL_MAX_VOICE = 65536
#: Rooms: a request is sent every ROOMS_RETRY_MS, at most ROOMS_TRIES times.
ROOMS_RETRY_MS = 100
ROOMS_TRIES = 10
#: Call audio: 48 kHz interleaved int16 PCM, Call.channels channels,
#: encoded 20 ms (FRAME_SAMPLES sample frames) at a time; at most
#: PCM_MAX_FRAMES sample frames per push or pull.
SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
PCM_MAX_FRAMES = 48000
#: Accounts feature bit: messages and history carry the time they were stored.
ACCOUNTS_STAMPS = 1

Seconds = Optional[float]
Text = Union[str, bytes]


class Result(enum.IntEnum):
    """The result codes of the C API (cw_result)."""

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
    NO_RECIPIENT = 704
    LIMITED = 705
    REFUSED = 706
    UNCONFIRMED = 707
    NO_DEVICE = 800
    DEVICE_FAILED = 801
    NO_DEVICE_SUPPORT = 802
    PANIC = 900
    INTERNAL = 901


class EventKind(enum.IntEnum):
    """What an event is about (cw_event_type)."""

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
    ROOM_CLOSED = 601


class RoomMode(enum.IntEnum):
    """How a private room carries its texts (rooms dialect)."""

    CENTRALISED = 0
    DECENTRALISED = 1


class AudioSide(enum.IntEnum):
    """Which end of a call's audio: what it captures, or what it plays."""

    MICROPHONE = 1
    SPEAKER = 2


class Dialect(enum.IntEnum):
    """The four wire dialects a client can speak."""

    CHATOS = 1
    BABEL = 2
    ACCOUNTS = 3
    ROOMS = 4



class LogLevel(enum.IntEnum):
    """How much the library logs (cw_log_level)."""

    OFF = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5


# -- errors ------------------------------------------------------------------


class ChinwagError(Exception):
    """A libchinwag call failed: ``code`` is a :class:`Result` (or the raw
    int for a code this module does not know), ``message`` the library's
    text for it."""

    def __init__(self, code: Union[Result, int], message: str) -> None:
        try:
            code = Result(code)
        except ValueError:
            pass
        self.code: Union[Result, int] = code
        self.message: str = message
        super().__init__("%s: %s" % (getattr(code, "name", code), message))


class Timeout(ChinwagError):
    """Nothing happened before the time limit (TIMEOUT)."""


class Closed(ChinwagError):
    """The client, stream or call is closed (CLOSED)."""


class ArgumentError(ChinwagError):
    """An argument was refused locally (NULL_ARGUMENT, INVALID_UTF8, INVALID_ARGUMENT)."""


class TooLong(ArgumentError):
    """A text is longer than the dialect allows (TOO_LONG)."""


class Unsupported(ChinwagError):
    """The client's dialect cannot do this (UNSUPPORTED)."""


class NetworkError(ChinwagError):
    """The connection failed (IO)."""


class ConnectFailed(NetworkError):
    """The server could not be reached or did not greet (CONNECT_FAILED)."""


class ProtocolError(NetworkError):
    """The server or a peer broke the protocol (PROTOCOL)."""


class SessionError(ChinwagError):
    """The session is not in a state for this call (ALREADY_LOGGED_IN)."""


class LoginRefused(SessionError):
    """The server refused the login; ``message`` says why when it told (LOGIN_REFUSED)."""


class NotLoggedIn(SessionError):
    """The call needs a login first (NOT_LOGGED_IN)."""


class Busy(SessionError):
    """Another login or registration waits on this client (BUSY)."""


class NoSuchRequest(ChinwagError):
    """No pending request from that user (NO_SUCH_REQUEST)."""


class CallError(ChinwagError):
    """A call cannot be placed or answered."""


class NoSuchCall(CallError):
    """No call with that user rings or goes on (NO_SUCH_CALL)."""


class CallInProgress(CallError):
    """A call with that user already rings or goes on (CALL_IN_PROGRESS)."""


class AccountsError(ChinwagError):
    """The accounts server said no."""


class EmailTaken(AccountsError):
    """Registration: the email is taken or not an address (EMAIL_TAKEN)."""


class PseudoTaken(AccountsError):
    """Registration: the pseudo is taken, online, or invalid (PSEUDO_TAKEN)."""


class RegisterRefused(AccountsError):
    """Registration refused; ``message`` has the server's reason (REGISTER_REFUSED)."""


class NoSuchUser(AccountsError):
    """No account has that pseudo, or it is yours (NO_SUCH_USER)."""


class AlreadyFriends(AccountsError):
    """Already friends (ALREADY_FRIENDS)."""


class MessageFailed(AccountsError):
    """The server did not store the message (MESSAGE_FAILED)."""


class RoomsError(ChinwagError):
    """The rooms server said no."""


class RoomExists(RoomsError):
    """A room has that name (ROOM_EXISTS)."""


class NoSuchRoom(RoomsError):
    """No private room has that name (NO_SUCH_ROOM)."""


class RoomFull(RoomsError):
    """The room is full (ROOM_FULL)."""


class NotInRoom(RoomsError):
    """The call needs a private room (NOT_IN_ROOM)."""


class NoRecipient(RoomsError):
    """Nobody else is in the room to hear the text (NO_RECIPIENT)."""


class Limited(RoomsError):
    """The server's per-address or per-client limit refused the request (LIMITED)."""


class Refused(RoomsError):
    """The server could not read or would not take the request (REFUSED)."""


class Unconfirmed(RoomsError):
    """A text was sent every time allowed and never acknowledged; it may
    well have arrived, so do not simply send it again (UNCONFIRMED)."""


class AudioError(ChinwagError):
    """A speaker or microphone could not be used."""


class NoDevice(AudioError):
    """No such device, or no sound card at all (NO_DEVICE)."""


class DeviceFailed(AudioError):
    """The device exists but failed to open or stopped working (DEVICE_FAILED)."""


class NoDeviceSupport(AudioError):
    """The library was built without device support; PCM calls still work
    (NO_DEVICE_SUPPORT)."""


class InternalError(ChinwagError):
    """A fault inside the library (PANIC, INTERNAL)."""


_ERRORS: Dict[int, Type[ChinwagError]] = {
    Result.TIMEOUT: Timeout,
    Result.CLOSED: Closed,
    Result.NULL_ARGUMENT: ArgumentError,
    Result.INVALID_UTF8: ArgumentError,
    Result.INVALID_ARGUMENT: ArgumentError,
    Result.TOO_LONG: TooLong,
    Result.UNSUPPORTED: Unsupported,
    Result.CONNECT_FAILED: ConnectFailed,
    Result.IO: NetworkError,
    Result.PROTOCOL: ProtocolError,
    Result.LOGIN_REFUSED: LoginRefused,
    Result.NOT_LOGGED_IN: NotLoggedIn,
    Result.ALREADY_LOGGED_IN: SessionError,
    Result.BUSY: Busy,
    Result.NO_SUCH_REQUEST: NoSuchRequest,
    Result.NO_SUCH_CALL: NoSuchCall,
    Result.CALL_IN_PROGRESS: CallInProgress,
    Result.EMAIL_TAKEN: EmailTaken,
    Result.PSEUDO_TAKEN: PseudoTaken,
    Result.REGISTER_REFUSED: RegisterRefused,
    Result.NO_SUCH_USER: NoSuchUser,
    Result.ALREADY_FRIENDS: AlreadyFriends,
    Result.MESSAGE_FAILED: MessageFailed,
    Result.ROOM_EXISTS: RoomExists,
    Result.NO_SUCH_ROOM: NoSuchRoom,
    Result.ROOM_FULL: RoomFull,
    Result.NOT_IN_ROOM: NotInRoom,
    Result.NO_RECIPIENT: NoRecipient,
    Result.LIMITED: Limited,
    Result.REFUSED: Refused,
    Result.UNCONFIRMED: Unconfirmed,
    Result.NO_DEVICE: NoDevice,
    Result.DEVICE_FAILED: DeviceFailed,
    Result.NO_DEVICE_SUPPORT: NoDeviceSupport,
    Result.PANIC: InternalError,
    Result.INTERNAL: InternalError,
}


def error_class(code: int) -> Type[ChinwagError]:
    """The exception class raised for a result code (ChinwagError for an unknown one)."""
    return _ERRORS.get(code, ChinwagError)


def _check(code: int) -> None:
    if code == Result.OK:
        return
    message = (lib.cw_last_error() or b"").decode("utf-8", "replace")
    raise error_class(code)(code, message)


def _enc(s: Optional[Text]) -> Optional[bytes]:
    """A text for the C API. C strings end at their first NUL, so a text
    holding one would be cut there without a word: refused instead, as
    Python's own system calls refuse it."""
    b = s.encode("utf-8") if isinstance(s, str) else s
    if b is not None and b"\0" in b:
        raise ArgumentError(Result.INVALID_ARGUMENT,
                            "embedded NUL character: C strings cannot hold one")
    return b


def _dec(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else b.decode("utf-8", "replace")


def _ms(timeout: Seconds) -> int:
    """Seconds (None: without limit) to the C API's milliseconds."""
    if timeout is None:
        return -1
    return max(0, min(int(timeout * 1000), 2**31 - 1))


#: The longest one call into the library waits (seconds) when a read or a
#: receive waits longer: between two, Python runs its signal handlers.
_SLICE = 0.2


def _sliced(call: Callable[[int], int], timeout: Seconds) -> int:
    """Run ``call(ms)``, a C call that waits at most ``ms`` milliseconds and
    returns TIMEOUT when nothing came, again and again for at most _SLICE
    seconds each, until it returns something else or ``timeout`` (None:
    without limit) is spent. The library retries system calls a signal
    interrupts, so one long wait in C would hold Ctrl-C back until its end;
    between slices Python raises KeyboardInterrupt."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        last = left is not None and left <= _SLICE
        code = call(_ms(left if last else _SLICE))
        if code != Result.TIMEOUT or last:
            return code


def _event_fd(client: int) -> int:
    """The event descriptor of a client handle."""
    out = ctypes.c_int(-1)
    _check(lib.cw_client_event_fd(client, ctypes.byref(out)))
    return out.value


def _wait_readable(fd: int, timeout: Seconds) -> bool:
    """Wait until ``fd`` is readable; False on timeout. select() returns
    to Python on a signal, so Ctrl-C raises KeyboardInterrupt here."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def version() -> str:
    """The library's version, for example "0.1.0"."""
    return str(lib.cw_version().decode())


def voice_packet(frame: bytes) -> bytes:
    """A UDP voice packet (accounts) carrying one compressed audio frame."""
    frame = bytes(frame)
    out = ctypes.create_string_buffer(VOICE_HEADER + len(frame))
    n = ctypes.c_size_t(0)
    _check(lib.cw_voice_packet_encode(frame, len(frame), out, len(out), ctypes.byref(n)))
    return out.raw[: n.value]


def voice_frame(packet: bytes) -> bytes:
    """The compressed frame inside a voice packet; raises ProtocolError for
    a packet to drop."""
    packet = bytes(packet)
    off, n = ctypes.c_size_t(0), ctypes.c_size_t(0)
    _check(lib.cw_voice_packet_decode(packet, len(packet), ctypes.byref(off), ctypes.byref(n)))
    return packet[off.value: off.value + n.value]


def _utc(seconds: Optional[int]) -> Optional[_dt.datetime]:
    return None if seconds is None else _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)


class HistoryEntry(NamedTuple):
    """One message of a conversation (accounts)."""

    #: Store-wide id, increasing with time: pass the first one as ``before`` to page back.
    id: int
    #: The sender's account id (compare with ``Client.account_id``).
    sender_id: int
    text: str
    #: When the server stored it, seconds since the Unix epoch; None when
    #: the server sent no time (a plain connection, or an older server).
    time: Optional[int] = None

    @property
    def when(self) -> Optional[_dt.datetime]:
        """``time`` as an aware UTC datetime, or None."""
        return _utc(self.time)


class Room(NamedTuple):
    """One entry of ``Client.rooms()``."""

    name: str
    mode: RoomMode
    clients: int

    def __repr__(self) -> str:
        return "Room(%r, %s, %d)" % (self.name, self.mode.name, self.clients)


class LogLine(NamedTuple):
    """One log line of the library."""

    level: LogLevel
    #: Where it comes from, a module path such as "chinwag::core".
    target: str
    text: str


# -- log lines ---------------------------------------------------------------


def set_log_level(level: Union[LogLevel, int]) -> None:
    """Queue the library's log lines at ``level`` and above (OFF: none).
    Read them with :func:`next_log_line`, or pass them to :mod:`logging`
    with :func:`forward_logs`. The queue keeps 1024 lines."""
    _check(lib.cw_log_set_level(int(level)))


def log_level() -> LogLevel:
    """The level set with :func:`set_log_level`."""
    return LogLevel(lib.cw_log_get_level())


def next_log_line(timeout: Seconds = 0) -> Optional[LogLine]:
    """The next log line, waiting at most ``timeout`` seconds (None: without
    limit; Ctrl-C interrupts); None when none came."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out = ctypes.c_void_p()
    while True:
        code = lib.cw_log_next(0, ctypes.byref(out))
        if code == Result.OK:
            try:
                return LogLine(LogLevel(lib.cw_log_line_level(out)),
                               _dec(lib.cw_log_line_target(out)) or "",
                               _dec(lib.cw_log_line_text(out)) or "")
            finally:
                lib.cw_log_line_free(out)
        if code != Result.TIMEOUT:
            _check(code)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        _wait_readable(log_fileno(), left)


def log_fileno() -> int:
    """A descriptor readable while a log line waits (for select, or
    ``loop.add_reader``). The library owns it: never close it."""
    out = ctypes.c_int(-1)
    _check(lib.cw_log_fd(ctypes.byref(out)))
    return out.value


_TO_LOGGING = {
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARN: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.TRACE: logging.DEBUG,
}


def forward_logs(logger: Optional[logging.Logger] = None) -> int:
    """Pass every waiting log line to :mod:`logging` (``logger``, or the
    logger named after the line's target, such as "chinwag.core");
    returns how many. Call it when :func:`log_fileno` is readable."""
    n = 0
    while True:
        line = next_log_line(0)
        if line is None:
            return n
        target = logger or logging.getLogger(line.target.replace("::", "."))
        target.log(_TO_LOGGING.get(line.level, logging.INFO), "%s", line.text)
        n += 1


# -- streams, calls, events --------------------------------------------------


class _Shared:
    """A library handle that threads may share. Every call into the library
    holds the handle for its length (``_call``); ``_retire`` closes it at
    once, which wakes the threads waiting inside, and frees it when the
    last of them is out: the C API forbids freeing a handle while another
    thread is inside a call on it."""

    def __init__(self, handle: Optional[int], what: str) -> None:
        self._h: Optional[int] = handle
        self._what = what
        self._lock = threading.Lock()
        self._inside = 0
        self._pending_free: Optional[Callable[[], object]] = None

    def _handle(self) -> int:
        if not self._h:
            raise Closed(Result.CLOSED, self._what + " freed")
        return self._h

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(handle, *args)``, holding the handle (Closed once freed)."""
        with self._lock:
            h = self._handle()
            self._inside += 1
        try:
            return fn(h, *args)
        finally:
            with self._lock:
                self._inside -= 1
                last = self._pending_free if self._inside == 0 else None
                if last is not None:
                    self._pending_free = None
            if last is not None:
                last()

    def _retire(self, close: Callable[[int], object], free: Callable[[int], object]) -> None:
        """Close now, free once no thread is inside; idempotent."""
        with self._lock:
            h, self._h = self._h, None
        if not h:
            return
        close(h)
        with self._lock:
            if self._inside:
                self._pending_free = lambda: free(h)
                return
        free(h)


class Stream(_Shared):
    """The byte stream of an established private connection (chatos).
    A context manager: leaving it closes and frees the stream."""

    def __init__(self, handle: int) -> None:
        super().__init__(handle, "stream")
        #: The user at the other end.
        self.peer: Optional[str] = _dec(lib.cw_stream_peer(handle))

    def read(self, size: int = 65536, timeout: Seconds = None) -> bytes:
        """Up to ``size`` bytes; b"" once the peer finished sending. Raises
        Timeout. Ctrl-C (KeyboardInterrupt) ends the wait within 0.2 s."""
        buf = ctypes.create_string_buffer(size)
        got = ctypes.c_size_t(0)
        code = _sliced(lambda ms: self._call(lib.cw_stream_read, buf, size, ms,
                                             ctypes.byref(got)), timeout)
        if code == Result.CLOSED:
            return b""
        _check(code)
        return buf.raw[: got.value]

    def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        data = bytes(data)
        _check(self._call(lib.cw_stream_write, data, len(data)))

    def shutdown_write(self) -> None:
        """Say that nothing more will be written; the peer reads b""."""
        _check(self._call(lib.cw_stream_shutdown_write))

    @property
    def connect_id(self) -> int:
        """The server's id of this private connection."""
        out = ctypes.c_int64()
        _check(self._call(lib.cw_stream_connect_id, ctypes.byref(out)))
        return out.value

    def close(self) -> None:
        """Close and free; idempotent. A thread reading it wakes (b"") and
        the stream is freed once it is out."""
        self._retire(lib.cw_stream_close, lib.cw_stream_free)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


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
        ("samples_stretched", ctypes.c_uint64),
        ("samples_compressed", ctypes.c_uint64),
    ]

    def as_dict(self) -> Dict[str, Union[int, float]]:
        """The fields as a dictionary."""
        return {field[0]: getattr(self, field[0]) for field in self._fields_}

    def __repr__(self) -> str:
        return "AudioStats(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())


def audio_devices(side: Union[AudioSide, int]) -> List[str]:
    """Names of the microphones (AudioSide.MICROPHONE) or speakers
    (AudioSide.SPEAKER), as Call.use_devices takes them. Raises
    NoDeviceSupport in a build without devices."""
    out = ctypes.c_void_p()
    _check(lib.cw_audio_devices(int(side), ctypes.byref(out)))
    try:
        return [_dec(lib.cw_strings_get(out, i)) or ""
                for i in range(lib.cw_strings_count(out))]
    finally:
        lib.cw_strings_free(out)


class Call(_Shared):
    """An open call. Babel: the peer-to-peer TCP connection; accounts: the
    UDP media of a call the library carries (Client.place_voice_call).

    Either bring your own codec (send/recv: raw payloads) or let the call
    do the audio: send_pcm/recv_pcm (48 kHz int16, ``channels``
    interleaved: 2 for babel, 1 for accounts), or use_devices for the sound
    card. The first receive of either kind decides which one this call
    uses. A context manager: leaving it hangs up and frees the call."""

    def __init__(self, handle: int) -> None:
        super().__init__(handle, "call")
        #: The user at the other end.
        self.peer: Optional[str] = _dec(lib.cw_call_peer(handle))
        #: Interleaved channels of the call's PCM (2 babel, 1 accounts).
        self.channels: int = int(lib.cw_call_channels(handle))

    def send_pcm(self, samples: Union["array.array[int]", bytes, bytearray, Sequence[int]]) -> None:
        """Push PCM: an array('h'), bytes of native int16, or a sequence of
        ints; a whole number of sample frames (len / channels), at most
        PCM_MAX_FRAMES. Complete 20 ms frames are encoded and sent now."""
        if isinstance(samples, array.array):
            data = samples.tobytes()
        elif isinstance(samples, (bytes, bytearray)):
            data = bytes(samples)
        else:
            data = array.array("h", samples).tobytes()
        count = len(data) // 2
        if count % self.channels:
            raise ArgumentError(Result.INVALID_ARGUMENT,
                                "%d samples is not whole %d-channel frames" % (count, self.channels))
        _check(self._call(lib.cw_call_send_pcm, data, count // self.channels))

    def recv_pcm(self, frames: int = FRAME_SAMPLES) -> "array.array[int]":
        """What to play next: an array('h') of frames * channels samples,
        always full (decoded, concealed or silence); never blocks. Raises
        Closed once the call is over and everything received was played."""
        buf = (ctypes.c_int16 * (frames * self.channels))()
        _check(self._call(lib.cw_call_recv_pcm, buf, frames))
        out = array.array("h")
        out.frombytes(bytes(buf))
        return out

    def stats(self) -> AudioStats:
        """The call's AudioStats now."""
        out = AudioStats()
        _check(self._call(lib.cw_call_stats, ctypes.byref(out)))
        return out

    def use_devices(self, microphone: Optional[str] = None,
                    speaker: Optional[str] = None) -> None:
        """Play on a speaker and capture from a microphone (None: the
        defaults). Raises NoDevice, DeviceFailed or NoDeviceSupport."""
        _check(self._call(lib.cw_call_use_devices, _enc(microphone), _enc(speaker)))

    def use_speaker(self, name: Optional[str] = None) -> None:
        """Play the call on a speaker only (None: the default)."""
        _check(self._call(lib.cw_call_use_speaker, _enc(name)))

    def use_microphone(self, name: Optional[str] = None) -> None:
        """Capture the call from a microphone only (None: the default)."""
        _check(self._call(lib.cw_call_use_microphone, _enc(name)))

    def stop_devices(self) -> None:
        """Detach the speaker and microphone; PCM calls work again."""
        _check(self._call(lib.cw_call_stop_devices))

    def set_muted(self, side: Union[AudioSide, int], muted: bool = True) -> None:
        """Mute or unmute AudioSide.MICROPHONE or AudioSide.SPEAKER."""
        _check(self._call(lib.cw_call_set_muted, int(side), 1 if muted else 0))

    def set_volume(self, side: Union[AudioSide, int], volume: float) -> None:
        """1.0 unchanged, 0.0 silent, at most 2.0."""
        _check(self._call(lib.cw_call_set_volume, int(side), float(volume)))

    def send(self, payload: bytes) -> None:
        """Send one payload of your own codec (babel: at most
        BABEL_MAX_VOICE bytes; accounts: VOICE_MAX_FRAME)."""
        payload = bytes(payload)
        _check(self._call(lib.cw_call_send_voice, payload, len(payload)))

    def recv(self, timeout: Seconds = None) -> Optional[bytes]:
        """The next payload; None on timeout; raises Closed once the call is
        over. Ctrl-C (KeyboardInterrupt) ends the wait within 0.2 s."""
        buf = ctypes.create_string_buffer(BABEL_MAX_VOICE)
        got = ctypes.c_size_t(0)
        code = _sliced(lambda ms: self._call(lib.cw_call_recv_voice, buf, BABEL_MAX_VOICE,
                                             ms, ctypes.byref(got)), timeout)
        if code == Result.TIMEOUT:
            return None
        _check(code)
        return buf.raw[: got.value]

    def hangup(self) -> None:
        """Close the connection; the peer gets CALL_ENDED. Idempotent."""
        _check(self._call(lib.cw_call_hangup))

    def close(self) -> None:
        """Hang up and free; idempotent. A thread receiving wakes (Closed)
        and the call is freed once it is out."""
        self._retire(lib.cw_call_hangup, lib.cw_call_free)

    def __enter__(self) -> "Call":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class Event:
    """One event, copied out of the library (the C event is freed at once).

    ``kind``: an EventKind. ``peer``, ``text``: str or None. ``count``: events
    lost (OVERFLOW). ``result``: the cause of ERROR, DISCONNECTED,
    PRIVATE_FAILED, CALL_FAILED, CALL_ENDED. ``stream``: the Stream of
    PRIVATE_ESTABLISHED (yours to close). ``address``, ``port``: the peer's
    end point of CALL_INCOMING / CALL_ACCEPTED (else None, 0). ``call``:
    the Call of CALL_ESTABLISHED (babel; yours to close). ``room_mode``:
    the RoomMode of ROOM_INVITATION (the room is ``text``). ``time``: when
    the server stored a PRIVATE_MESSAGE (accounts with stamps; seconds
    since the Unix epoch), else None.
    """

    kind: EventKind
    peer: Optional[str]
    text: Optional[str]
    count: int
    result: Result
    address: Optional[str]
    port: int
    room_mode: Optional[RoomMode]
    time: Optional[int]
    stream: Optional[Stream]
    call: Optional[Call]

    def __init__(self, handle: int) -> None:
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
            self.time = lib.cw_event_time(handle) or None
            self.stream = None
            self.call = None
            if self.kind == EventKind.PRIVATE_ESTABLISHED:
                out = ctypes.c_void_p()
                _check(lib.cw_event_take_stream(handle, ctypes.byref(out)))
                self.stream = Stream(out.value or 0)
            elif self.kind == EventKind.CALL_ESTABLISHED:
                out = ctypes.c_void_p()
                _check(lib.cw_event_take_call(handle, ctypes.byref(out)))
                self.call = Call(out.value or 0)
        finally:
            lib.cw_event_free(handle)

    @property
    def when(self) -> Optional[_dt.datetime]:
        """``time`` as an aware UTC datetime, or None."""
        return _utc(self.time)

    def __repr__(self) -> str:
        return "Event(%s, peer=%r, text=%r)" % (self.kind.name, self.peer, self.text)


# -- the client ----------------------------------------------------------------


class Client(_Shared):
    """A connection to a chinwag server, in one dialect. Use it as a
    context manager: leaving the block closes and frees it.

    Accounts clients ask for stored times by default (``stamps``): their
    messages and history entries then carry ``time``.
    """

    def __init__(self, host: str, port: int, dialect: Union[Dialect, int] = Dialect.CHATOS,
                 *, stamps: bool = True) -> None:
        # Set first: __del__ runs even when the connection below fails.
        super().__init__(None, "client")
        out = ctypes.c_void_p()
        features = ACCOUNTS_STAMPS if stamps and int(dialect) == Dialect.ACCOUNTS else 0
        _check(lib.cw_client_connect_with(_enc(host), int(port), int(dialect), features,
                                          ctypes.byref(out)))
        self._h = out.value
        #: The dialect this client speaks.
        self.dialect: Dialect = Dialect(int(dialect))

    # -- every dialect --

    def login(self, name: str, timeout: Seconds = 10.0) -> None:
        """Log in (chatos, babel, rooms); raises LoginRefused when refused."""
        _check(self._call(lib.cw_client_login, _enc(name), _ms(timeout)))

    @property
    def login_name(self) -> Optional[str]:
        """The name this client is logged in as, or None."""
        out = ctypes.c_void_p()
        code = self._call(lib.cw_client_login_name, ctypes.byref(out))
        if code == Result.NOT_LOGGED_IN:
            return None
        _check(code)
        try:
            return ctypes.string_at(out.value or 0).decode("utf-8")
        finally:
            lib.cw_string_free(out)

    def send_message(self, text: str) -> None:
        """Chatos: to everyone. Rooms: to everyone in this client's room."""
        _check(self._call(lib.cw_client_send_message, _enc(text)))

    def fileno(self) -> int:
        """A descriptor readable while an event waits (or once the client is
        over): for select(), selectors, or ``loop.add_reader``. Owned by the
        client: never close it."""
        return int(self._call(_event_fd))

    def next_event(self, timeout: Seconds = None) -> Optional[Event]:
        """The next Event; None on timeout; raises Closed when the client is
        closed. The wait is a select() on :meth:`fileno`, so Ctrl-C
        (KeyboardInterrupt) ends it at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = ctypes.c_void_p()
        while True:
            code = self._call(lib.cw_client_next_event, 0, ctypes.byref(out))
            if code == Result.OK:
                return Event(out.value or 0)
            if code != Result.TIMEOUT:
                _check(code)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            # Holding the client, so that its descriptor stays open while
            # select() watches it (free() from another thread makes it
            # readable first: the wait ends, then the client is freed).
            self._call(lambda h: _wait_readable(_event_fd(h), left))

    def events(self, timeout: Seconds = None) -> Iterator[Event]:
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

    async def next_event_async(self, timeout: Seconds = None) -> Optional[Event]:
        """Await the next Event without blocking the event loop (the loop
        watches :meth:`fileno`); None on timeout; raises Closed."""
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ev = self.next_event(0)
            if ev is not None:
                return ev
            ready: "asyncio.Future[None]" = loop.create_future()

            def wake(f: "asyncio.Future[None]" = ready) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(fd, wake)
            try:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return None
                try:
                    await asyncio.wait_for(ready, left)
                except asyncio.TimeoutError:
                    return self.next_event(0)
            finally:
                loop.remove_reader(fd)

    async def events_async(self) -> AsyncIterator[Event]:
        """``async for ev in client.events_async()``: every event until the
        client is closed."""
        while True:
            try:
                ev = await self.next_event_async()
            except Closed:
                return
            if ev is not None:
                yield ev

    def close(self) -> None:
        """Close the connection; waiting threads wake. The handle stays valid."""
        try:
            code = self._call(lib.cw_client_close)
        except Closed:
            return  # freed already: closed too
        _check(code)

    def free(self) -> None:
        """Close and release the client; idempotent. Threads waiting in it
        wake (Closed), and it is released once the last is out."""
        self._retire(lib.cw_client_close, lib.cw_client_free)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.free()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.free()

    def __del__(self) -> None:
        self.free()

    # -- chatos --

    def send_private(self, to: str, text: str) -> None:
        """Chatos: a private message to ``to`` (dropped by the server if nobody has that name)."""
        _check(self._call(lib.cw_client_send_private, _enc(to), _enc(text)))

    def request_private(self, target: str) -> None:
        """Chatos: ask ``target`` for a private connection (PRIVATE_ESTABLISHED follows)."""
        _check(self._call(lib.cw_client_request_private, _enc(target)))

    def accept_private(self, requester: str) -> None:
        """Chatos: accept a PRIVATE_REQUEST."""
        _check(self._call(lib.cw_client_accept_private, _enc(requester)))

    def refuse_private(self, requester: str) -> None:
        """Chatos: refuse a PRIVATE_REQUEST."""
        _check(self._call(lib.cw_client_refuse_private, _enc(requester)))

    # -- accounts --

    def register(self, email: str, pseudo: str, password: str, timeout: Seconds = 10.0) -> None:
        """Accounts: create an account; raises EmailTaken, PseudoTaken or
        RegisterRefused (the reason is in ``.message``)."""
        _check(self._call(lib.cw_client_register, _enc(email), _enc(pseudo),
                                      _enc(password), _ms(timeout)))

    def login_password(self, email: str, password: str,
                       timeout: Seconds = 10.0) -> Tuple[Optional[str], Optional[int]]:
        """Accounts: log in; returns (pseudo, account_id). Raises
        LoginRefused for every failure."""
        _check(self._call(lib.cw_client_login_password, _enc(email), _enc(password),
                                            _ms(timeout)))
        return self.login_name, self.account_id

    @property
    def account_id(self) -> Optional[int]:
        """Accounts: the logged-in account's id, or None."""
        out = ctypes.c_uint64()
        code = self._call(lib.cw_client_account_id, ctypes.byref(out))
        if code == Result.NOT_LOGGED_IN:
            return None
        _check(code)
        return out.value

    @property
    def features(self) -> int:
        """Accounts: the feature bits the server granted (ACCOUNTS_STAMPS)."""
        out = ctypes.c_uint32()
        _check(self._call(lib.cw_client_features, ctypes.byref(out)))
        return out.value

    def request_friend(self, pseudo: str, timeout: Seconds = 10.0) -> None:
        """Accounts: raises NoSuchUser or AlreadyFriends."""
        _check(self._call(lib.cw_client_request_friend, _enc(pseudo), _ms(timeout)))

    def accept_friend(self, pseudo: str, timeout: Seconds = 10.0) -> None:
        """Accounts: raises NoSuchRequest if nothing is pending."""
        _check(self._call(lib.cw_client_accept_friend, _enc(pseudo), _ms(timeout)))

    def refuse_friend(self, pseudo: str, timeout: Seconds = 10.0) -> None:
        """Accounts: raises NoSuchRequest if nothing is pending."""
        _check(self._call(lib.cw_client_refuse_friend, _enc(pseudo), _ms(timeout)))

    def _strings(self, fn: Callable[..., int], *args: object) -> List[str]:
        out = ctypes.c_void_p()
        _check(self._call(fn, *args, ctypes.byref(out)))
        try:
            return [_dec(lib.cw_strings_get(out, i)) or ""
                    for i in range(lib.cw_strings_count(out))]
        finally:
            lib.cw_strings_free(out)

    def friends(self, timeout: Seconds = 10.0) -> List[str]:
        """Accounts: the account's friends, sorted."""
        return self._strings(lib.cw_client_list_friends, _ms(timeout))

    def friend_requests(self, timeout: Seconds = 10.0) -> List[str]:
        """Accounts: pseudos whose friend request waits for an answer, oldest first."""
        return self._strings(lib.cw_client_list_friend_requests, _ms(timeout))

    def send_to_friend(self, pseudo: str, text: str, timeout: Seconds = 10.0) -> None:
        """Accounts: returns once the server stored the message; raises MessageFailed."""
        _check(self._call(lib.cw_client_send_to_friend, _enc(pseudo), _enc(text),
                                            _ms(timeout)))

    def history(self, pseudo: str, before: int = 0, timeout: Seconds = 10.0) -> List[HistoryEntry]:
        """Accounts: one page (at most 50) of HistoryEntry, oldest first;
        pass the first entry's id as ``before`` for the page before it."""
        out = ctypes.c_void_p()
        _check(self._call(lib.cw_client_history, _enc(pseudo), int(before), _ms(timeout),
                                     ctypes.byref(out)))
        try:
            return [HistoryEntry(lib.cw_history_id(out, i), lib.cw_history_sender_id(out, i),
                                 _dec(lib.cw_history_text(out, i)) or "",
                                 lib.cw_history_time(out, i) or None)
                    for i in range(lib.cw_history_count(out))]
        finally:
            lib.cw_history_free(out)

    def place_call(self, pseudo: str, port: int, addr: Optional[str] = None) -> None:
        """Accounts: ring a friend, who reaches this client's voice socket at
        addr:port (addr None: the address the server sees); CALL_ACCEPTED
        or CALL_FAILED follows.

        Babel: ring a contact; the library listens on TCP addr:port (port
        0: any); CALL_ESTABLISHED (``ev.call``) or CALL_FAILED follows."""
        _check(self._call(lib.cw_client_place_call, _enc(pseudo), _enc(addr), int(port)))

    def answer_call(self, pseudo: str, port: int, addr: Optional[str] = None) -> None:
        """Accounts: answer a ringing call with this client's voice end point."""
        _check(self._call(lib.cw_client_answer_call, _enc(pseudo), _enc(addr), int(port)))

    # -- babel --

    def place_voice_call(self, pseudo: str, addr: Optional[str] = None) -> None:
        """Accounts and babel: ring for a call the library carries (its
        audio included); take the Call from the CALL_ESTABLISHED event."""
        _check(self._call(lib.cw_client_place_voice_call, _enc(pseudo), _enc(addr)))

    def answer_voice_call(self, pseudo: str, addr: Optional[str] = None) -> None:
        """Accounts and babel: answer a ringing call with a call the library
        carries; CALL_ESTABLISHED follows."""
        _check(self._call(lib.cw_client_answer_voice_call, _enc(pseudo), _enc(addr)))

    def set_voice_ports(self, local: int = 0, advertised: int = 0) -> None:
        """Where library-carried calls listen (0: any port) and the port
        their signalling names instead (0: the local one), e.g. for a NAT."""
        _check(self._call(lib.cw_client_set_voice_ports, int(local), int(advertised)))

    def contacts(self) -> List[str]:
        """Babel: the babel users online now, sorted."""
        return self._strings(lib.cw_client_contacts)

    def accept_call(self, caller: str) -> None:
        """Babel: accept a ringing call; CALL_ESTABLISHED (``ev.call``) or CALL_FAILED follows."""
        _check(self._call(lib.cw_client_accept_call, _enc(caller)))

    def refuse_call(self, pseudo: str) -> None:
        """Accounts, babel: decline a ringing call."""
        _check(self._call(lib.cw_client_refuse_call, _enc(pseudo)))

    def hangup_call(self, pseudo: str) -> None:
        """Accounts, babel: end a call with ``pseudo`` whatever its stage."""
        _check(self._call(lib.cw_client_hangup_call, _enc(pseudo)))

    # -- rooms: each request is retried every 100 ms, at most 10 times, then
    # raises Timeout (a text: Unconfirmed, it may have arrived). A ROOM_CLOSED
    # event (text: the room) says the server closed this client's room and
    # moved it to the public room. --

    def user_id(self) -> int:
        """Rooms: this client's ID_USER (1-254)."""
        out = ctypes.c_uint8()
        _check(self._call(lib.cw_client_room_user_id, ctypes.byref(out)))
        return out.value

    def create_room(self, name: str, mode: RoomMode = RoomMode.CENTRALISED,
                    max_clients: int = 254) -> int:
        """Rooms: create a private room and move into it; returns its id
        (RoomExists when the name is taken)."""
        out = ctypes.c_uint8()
        _check(self._call(lib.cw_client_room_create, _enc(name), int(mode), int(max_clients),
                                         ctypes.byref(out)))
        return out.value

    def rooms(self) -> List[Room]:
        """Rooms: the private rooms, sorted by name."""
        out = ctypes.c_void_p()
        _check(self._call(lib.cw_client_room_list, ctypes.byref(out)))
        try:
            return [Room(_dec(lib.cw_rooms_name(out, i)) or "", RoomMode(lib.cw_rooms_mode(out, i)),
                         lib.cw_rooms_clients(out, i))
                    for i in range(lib.cw_rooms_count(out))]
        finally:
            lib.cw_rooms_free(out)

    def join_room(self, name: str) -> None:
        """Rooms: enter a private room (NoSuchRoom, RoomFull)."""
        _check(self._call(lib.cw_client_room_join, _enc(name)))

    def change_room(self, name: str) -> None:
        """Rooms: move to another private room."""
        _check(self._call(lib.cw_client_room_change, _enc(name)))

    def leave_room(self) -> None:
        """Rooms: back to the public room (NotInRoom when already there)."""
        _check(self._call(lib.cw_client_room_leave))

    def current_room(self) -> Tuple[str, RoomMode]:
        """Rooms: (name, mode) of this client's room; "" is the public room."""
        name = ctypes.c_void_p()
        mode = ctypes.c_int32()
        _check(self._call(lib.cw_client_room_current, ctypes.byref(name), ctypes.byref(mode)))
        try:
            return ctypes.string_at(name.value or 0).decode("utf-8"), RoomMode(mode.value)
        finally:
            lib.cw_string_free(name)

    def members(self, room: str = "") -> List[str]:
        """Rooms: the names in a room ("" for the public room)."""
        return self._strings(lib.cw_client_room_members, _enc(room))

    def peers(self) -> List[str]:
        """Rooms: the peers of the current decentralised room."""
        return self._strings(lib.cw_client_room_peers)

    def users(self) -> List[str]:
        """Rooms: every rooms user on the server, whatever the room, sorted."""
        return self._strings(lib.cw_client_room_users)

    def invite(self, user: str) -> None:
        """Rooms: invite a user into the current private room."""
        _check(self._call(lib.cw_client_room_invite, _enc(user)))

    def answer_invitation(self, room: str, accept: bool = True) -> None:
        """Rooms: answer a ROOM_INVITATION (within 60 s); accepting returns
        once this client is in the room (RoomFull if it was not moved)."""
        _check(self._call(lib.cw_client_room_answer_invitation, _enc(room),
                                                    1 if accept else 0))
