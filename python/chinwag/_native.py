"""The ctypes layer of the chinwag package: where libchinwag is found, and
the signature (restype, argtypes) of every C function of include/chinwag.h.

Nothing here is public API. ``python/tests/test_header.py`` checks
``SIGNATURES`` against the header, so the two cannot drift; the default
``int`` return type of ctypes would truncate pointers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any, Iterator, List, Optional, Sequence, Tuple

__all__ = ["lib", "lib_path", "SIGNATURES"]

_NAMES = {"darwin": "libchinwag.dylib", "win32": "chinwag.dll"}
LIB_NAME = _NAMES.get(sys.platform, "libchinwag.so")


def _candidates() -> Iterator[str]:
    """Where to look, in order: $CHINWAG_LIB; the library bundled in this
    package (an installed wheel); the checkout's target/ directories (a
    source tree); the system's search path."""
    env = os.environ.get("CHINWAG_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, LIB_NAME)
    root = os.path.dirname(os.path.dirname(here))
    for profile in ("debug", "release"):
        yield os.path.join(root, "target", profile, LIB_NAME)
    found = ctypes.util.find_library("chinwag")
    if found:
        yield found


def _load() -> Tuple[ctypes.CDLL, str]:
    tried: List[str] = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        return ctypes.CDLL(path), path
    raise OSError("libchinwag not found; set CHINWAG_LIB (tried: %s)" % ", ".join(tried))


lib, lib_path = _load()

_c_client_p = ctypes.c_void_p
_c_event_p = ctypes.c_void_p
_c_stream_p = ctypes.c_void_p
_c_strings_p = ctypes.c_void_p
_c_history_p = ctypes.c_void_p
_c_call_p = ctypes.c_void_p
_c_rooms_p = ctypes.c_void_p
_c_log_line_p = ctypes.c_void_p
_size_p = ctypes.POINTER(ctypes.c_size_t)

_res = ctypes.c_int
_str = ctypes.c_char_p

# (name, restype, argtypes) for every exported function.
_SIGNATURES: List[Tuple[str, Any, List[Any]]] = [
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
    # call audio (babel and accounts); the stats pointer is a cw_audio_stats
    ("cw_client_place_voice_call", _res, [_c_client_p, _str, _str]),
    ("cw_client_answer_voice_call", _res, [_c_client_p, _str, _str]),
    ("cw_client_set_voice_ports", _res, [_c_client_p, ctypes.c_uint16, ctypes.c_uint16]),
    ("cw_call_channels", ctypes.c_uint32, [_c_call_p]),
    ("cw_call_send_pcm", _res, [_c_call_p, ctypes.c_void_p, ctypes.c_size_t]),
    ("cw_call_recv_pcm", _res, [_c_call_p, ctypes.c_void_p, ctypes.c_size_t]),
    ("cw_call_stats", _res, [_c_call_p, ctypes.c_void_p]),
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
    ("cw_client_room_users", _res, [_c_client_p, ctypes.POINTER(_c_strings_p)]),
    ("cw_client_room_invite", _res, [_c_client_p, _str]),
    ("cw_client_room_answer_invitation", _res, [_c_client_p, _str, ctypes.c_int32]),
    ("cw_event_room_mode", ctypes.c_int32, [_c_event_p]),
    # stored times (accounts, CW_ACCOUNTS_STAMPS)
    ("cw_client_connect_with", _res, [_str, ctypes.c_uint16, ctypes.c_int32, ctypes.c_uint32,
                                      ctypes.POINTER(_c_client_p)]),
    ("cw_client_features", _res, [_c_client_p, ctypes.POINTER(ctypes.c_uint32)]),
    ("cw_event_time", ctypes.c_uint64, [_c_event_p]),
    ("cw_history_time", ctypes.c_uint64, [_c_history_p, ctypes.c_size_t]),
    # descriptors and log lines
    ("cw_client_event_fd", _res, [_c_client_p, ctypes.POINTER(ctypes.c_int)]),
    ("cw_log_set_level", _res, [ctypes.c_int]),
    ("cw_log_get_level", ctypes.c_int, []),
    ("cw_log_next", _res, [ctypes.c_int32, ctypes.POINTER(_c_log_line_p)]),
    ("cw_log_fd", _res, [ctypes.POINTER(ctypes.c_int)]),
    ("cw_log_line_level", ctypes.c_int, [_c_log_line_p]),
    ("cw_log_line_target", ctypes.c_char_p, [_c_log_line_p]),
    ("cw_log_line_text", ctypes.c_char_p, [_c_log_line_p]),
    ("cw_log_line_free", None, [_c_log_line_p]),
]


SIGNATURES: Sequence[Tuple[str, Any, List[Any]]] = _SIGNATURES

for _name, _restype, _argtypes in _SIGNATURES:
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes
