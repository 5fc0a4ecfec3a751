"""babel (seed 001, NOTES.md) byte for byte, as a third-party client
against chinwagd, as a third-party server for the library, and as a
third-party peer of the library's peer-to-peer voice.

From the seed and notes: a frame is [u64 length][u16 opcode][payload],
little-endian, the length counting opcode plus payload. string = u64 length
+ bytes; list<string> = u64 count + strings; list<u8> = u64 count + bytes;
port u16. Opcodes 1 HelloConnect, 2 Login, 3 LoginSuccess, 4 LoginFailed,
5 AddContact, 6 CallRequest, 7 VoiceData, 8 ErrorResponse, 9 CallRefused,
10 DelContact, 11 ConnectionEstablished. HelloConnect on accept is
02 00 00 00 00 00 00 00 01 00."""

import socket
import struct
from typing import Any, Dict, List, Tuple

from conftest import chinwag, port, unique
from seedwire import FakeServer, closed_by_peer, connect, recv_exact, silent, poll, event

HELLO = bytes.fromhex("0200000000000000" "0100")


def frame(op: int, payload: bytes = b"") -> bytes:
    return struct.pack("<QH", 2 + len(payload), op) + payload


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def slist(names: List[str]) -> bytes:
    return struct.pack("<Q", len(names)) + b"".join(s(n) for n in names)


def read_frame(c: socket.socket) -> Tuple[int, bytes]:
    (n,) = struct.unpack("<Q", recv_exact(c, 8))
    assert 2 <= n <= 1 << 20, n
    body = recv_exact(c, n)
    return struct.unpack("<H", body[:2])[0], body[2:]


def parse_string(b: bytes, at: int = 0) -> Tuple[str, int]:
    (n,) = struct.unpack_from("<Q", b, at)
    at += 8
    assert at + n <= len(b)
    return b[at:at + n].decode(), at + n


def parse_list(b: bytes) -> List[str]:
    (n,) = struct.unpack_from("<Q", b, 0)
    at, out = 8, []
    for _ in range(n):
        x, at = parse_string(b, at)
        out.append(x)
    assert at == len(b), "trailing bytes"
    return out


def babel() -> int:
    return port("babel")


def login(name: str) -> Tuple[socket.socket, List[str]]:
    c = connect(babel())
    assert recv_exact(c, 10) == HELLO  # first, before anything is sent
    c.sendall(frame(2, s(name)))
    assert read_frame(c) == (3, b"")  # LoginSuccess: 02 00.. 03 00
    op, body = read_frame(c)
    assert op == 5, op  # AddContact: who is already logged in
    return c, parse_list(body)


def contacts_until(c: socket.socket, op: int, name: str) -> None:
    """Read until the AddContact (5) or DelContact (10) naming just
    ``name``; updates about other tests' users, who come and go, are
    skipped."""
    while True:
        got = read_frame(c)
        if got == (op, slist([name])):
            return
        assert got[0] in (5, 10), got


def next_frame(c: socket.socket) -> Tuple[int, bytes]:
    """The next frame that is not a contact update (other tests' users)."""
    while True:
        got = read_frame(c)
        if got[0] not in (5, 10):
            return got


# -- a third-party client against chinwagd -----------------------------------


def test_hello_login_and_contact_lists() -> None:
    an, bn = unique("ba"), unique("bb")
    a, before = login(an)
    b, others = login(bn)
    assert an in others and bn not in others, others
    contacts_until(a, 5, bn)  # the others get only the new name
    # duplicate: LoginFailed with a reason string, connection still usable
    d = connect(babel())
    assert recv_exact(d, 10) == HELLO
    d.sendall(frame(2, s(an)))
    op, body = read_frame(d)
    assert op == 4
    reason, end = parse_string(body)
    assert end == len(body) and reason == "username already used"
    # a leaving client is announced with DelContact
    b.close()
    contacts_until(a, 10, bn)
    a.close()
    d.close()


def pair(tag: str) -> Tuple[socket.socket, str, socket.socket, str]:
    """Two logged-in users; the first has heard of the second."""
    an, bn = unique(tag + "a"), unique(tag + "b")
    a, _ = login(an)
    b, _ = login(bn)
    contacts_until(a, 5, bn)
    return a, an, b, bn


def test_call_request_is_forwarded_with_the_host_filled_in() -> None:
    a, an, b, bn = pair("c")
    a.sendall(frame(6, s(bn) + s("") + struct.pack("<H", 40001)))
    assert next_frame(b) == (6, s(an) + s("127.0.0.1") + struct.pack("<H", 40001))
    # a host given by the caller is passed on as it is
    a.sendall(frame(6, s(bn) + s("10.1.2.3") + struct.pack("<H", 65535)))
    assert next_frame(b) == (6, s(an) + s("10.1.2.3") + struct.pack("<H", 65535))
    # refused: relayed to the caller with the refuser's name
    b.sendall(frame(9, s(an)))
    assert next_frame(a) == (9, s(bn))
    # to nobody: ErrorResponse(what)
    a.sendall(frame(6, s(unique("ghost")) + s("") + struct.pack("<H", 1)))
    op, body = next_frame(a)
    assert op == 8
    what, end = parse_string(body)
    assert end == len(body) and what
    # to oneself: ErrorResponse too
    a.sendall(frame(6, s(an) + s("") + struct.pack("<H", 1)))
    assert next_frame(a)[0] == 8
    a.close()
    b.close()


def test_unknown_opcode_closes_that_connection_and_others_get_del_contact() -> None:
    a, an, b, bn = pair("u")
    b.sendall(frame(0x7777, b"junk"))
    assert closed_by_peer(b)
    contacts_until(a, 10, bn)
    a.close()


# -- a third-party server, and a third-party voice peer ----------------------


def _listener() -> socket.socket:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(5)
    return ls


def test_the_library_against_a_scripted_babel_server_and_voice_peer() -> None:
    me = "libby"
    voice = _listener()  # where "carol" waits for the library's connection
    seen: Dict[str, Any] = {}

    def script(accept):  # type: ignore[no-untyped-def]
        c = accept()
        c.sendall(HELLO)
        op, body = read_frame(c)
        seen["login"] = (op, body)
        c.sendall(frame(3) + frame(5, slist(["alice", "bob"])))
        c.sendall(frame(5, slist(["carol"])) + frame(10, slist(["bob"])))
        # carol calls: the library should connect to her host:port
        c.sendall(frame(6, s("carol") + s("127.0.0.1") +
                        struct.pack("<H", voice.getsockname()[1])))
        # the library calls dave, who refuses
        seen["call"] = read_frame(c)
        c.sendall(frame(9, s("dave")))
        # the library calls erin: we (erin) connect to its port
        seen["call2"] = read_frame(c)
        assert closed_by_peer(c, 10)

    srv = FakeServer(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.BABEL) as cl:
        cl.login(me)
        assert poll(lambda: cl.contacts() == ["alice", "carol"]), cl.contacts()
        kinds = []
        while True:
            ev = cl.next_event(5)
            assert ev is not None
            kinds.append((ev.kind, ev.peer))
            if ev.kind == chinwag.EventKind.CALL_INCOMING:
                break
        assert (chinwag.EventKind.CONTACT_REMOVED, "bob") in kinds, kinds
        assert ev.peer == "carol" and ev.port == voice.getsockname()[1], ev
        cl.accept_call("carol")
        p, _ = voice.accept()
        p.settimeout(5)
        # we accepted the library's connection: ConnectionEstablished first
        p.sendall(frame(11))
        ev = event(cl, chinwag.EventKind.CALL_ESTABLISHED, 5)
        assert ev.call is not None
        with ev.call as call:
            # VoiceData is list<u8>: u64 count, then the bytes, both ways
            call.send(b"\xf8\x01\x02")
            assert read_frame(p) == (7, struct.pack("<Q", 3) + b"\xf8\x01\x02")
            p.sendall(frame(7, struct.pack("<Q", 4) + b"\xfc\xff\x00\x7f"))
            assert call.recv(5) == b"\xfc\xff\x00\x7f"
        assert closed_by_peer(p)
        p.close()
        cl.place_voice_call("dave")
        ev = event(cl, chinwag.EventKind.CALL_FAILED, 5)
        cl.place_voice_call("erin")
        assert poll(lambda: "call2" in seen)
        op, body = seen["call2"]
        assert op == 6
        who, at = parse_string(body)
        host, at = parse_string(body, at)
        (lport,) = struct.unpack_from("<H", body, at)
        assert who == "erin" and at + 2 == len(body)
        q = socket.create_connection(("127.0.0.1", lport), timeout=5)
        q.settimeout(5)
        # the library accepted our connection: it sends ConnectionEstablished
        assert read_frame(q) == (11, b"")
        ev = event(cl, chinwag.EventKind.CALL_ESTABLISHED, 5)
        assert ev.call is not None
        with ev.call as call:
            q.sendall(frame(7, struct.pack("<Q", 0)))  # an empty list<u8>
            q.sendall(frame(7, struct.pack("<Q", 1) + b"\xf8"))
            assert call.recv(5) == b""
            assert call.recv(5) == b"\xf8"
            call.send(b"")
            assert read_frame(q) == (7, struct.pack("<Q", 0))
        q.close()
    srv.join()
    voice.close()
    assert seen["login"] == (2, s(me))
    op, body = seen["call"]
    assert op == 6
    who, at = parse_string(body)
    host, at = parse_string(body, at)
    assert who == "dave" and at + 2 == len(body), body


def test_the_library_waits_for_hello_and_takes_a_login_without_a_contact_list() -> None:
    seen: Dict[str, Any] = {}

    def script(accept):  # type: ignore[no-untyped-def]
        c = accept()
        # "The client shouldn't send any packet before receiving this one"
        seen["early"] = silent(c, 0.3)
        c.sendall(HELLO)
        seen["login"] = read_frame(c)
        # the original server: LoginSuccess alone when nobody else is online
        c.sendall(frame(3))
        # a call to nobody: ErrorResponse(what)
        seen["call"] = read_frame(c)
        c.sendall(frame(8, s("ghost is not connected")))
        assert closed_by_peer(c)

    srv = FakeServer(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.BABEL) as cl:
        cl.login("solo")
        assert cl.contacts() == []
        cl.place_voice_call("ghost")
        ev = event(cl, chinwag.EventKind.CALL_FAILED, 5)
        assert ev.peer == "ghost"
    srv.join()
    assert seen["early"] == b""
    assert seen["login"] == (2, s("solo"))
    assert seen["call"][0] == 6


def test_login_edge_cases() -> None:
    a, _ = login(unique("le"))
    a.sendall(frame(2, s(unique("again"))))  # a second Login after success
    op, body = next_frame(a)
    assert op == 4 and parse_string(body) == ("already logged in", len(body))
    d = connect(babel())
    assert recv_exact(d, 10) == HELLO
    d.sendall(frame(2, s("")))  # an empty name
    op, body = next_frame(d)
    assert op == 4 and parse_string(body)[0] == "invalid username"
    d.sendall(frame(2, s("w" * 31)))  # over the shared 30-byte name limit
    assert closed_by_peer(d)
    # before Login only Login: a CallRequest closes the connection
    e = connect(babel())
    assert recv_exact(e, 10) == HELLO
    e.sendall(frame(6, s("x") + s("") + struct.pack("<H", 1)))
    assert closed_by_peer(e)
    for x in (a, d, e):
        x.close()
