"""accounts (seed 000) on the wire, as a third-party client against
chinwagd and as a third-party server for the library.

Seed 000 fixes the instruction codes, who sends each and the order of the
fields; NOTES.md says chinwag defines the bytes (docs/protocols/accounts.md):
header magic "CWAC" u32, code u16, payload length u32, all big-endian;
string = u16 length + UTF-8; list<string> = u16 count + strings. The checks
below hold chinwagd to the seed's sequences (200 -> 201 first; 100 -> 101 /
102 / 103; 110 -> 111 pseudo id / 112; 120 -> 121 / 122 / 123, later 124 /
125; 130 -> 131 / 132; 140 -> 141 / 142; 143 -> 144 / 145; 146 -> 147;
150 -> 152 / 153 and 151 to the recipient; 160 -> 161; 170 -> 171;
180 -> 181) and to the documented layouts, byte for byte."""

import socket
import struct
from typing import Any, Dict, List, Tuple

from conftest import chinwag, unique
from seedwire import FakeServer, closed_by_peer, connect, recv_exact, udp, event

MAGIC = b"CWAC"


def frame(code: int, payload: bytes = b"") -> bytes:
    return MAGIC + struct.pack(">HI", code, len(payload)) + payload


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def slist(names: List[str]) -> bytes:
    return struct.pack(">H", len(names)) + b"".join(s(n) for n in names)


def read_frame(c: socket.socket) -> Tuple[int, bytes]:
    head = recv_exact(c, 10)
    assert head[:4] == MAGIC, head
    code, n = struct.unpack(">HI", head[4:])
    assert n <= 131072
    return code, recv_exact(c, n)


def parse_string(b: bytes, at: int = 0) -> Tuple[str, int]:
    (n,) = struct.unpack_from(">H", b, at)
    assert at + 2 + n <= len(b)
    return b[at + 2:at + 2 + n].decode(), at + 2 + n


def hello(port: int) -> socket.socket:
    c = connect(port)
    c.sendall(frame(200))
    assert recv_exact(c, 10) == bytes.fromhex("43574143 00c9 00000000")
    return c


def account(port: int, tag: str) -> Tuple[socket.socket, str, int]:
    """A registered, logged-in connection: (socket, pseudo, id)."""
    pseudo = unique(tag)
    email = pseudo + "@example.org"
    c = hello(port)
    c.sendall(frame(100, s(email) + s(pseudo) + s("password1")))
    assert read_frame(c) == (101, b"")
    c.sendall(frame(110, s(email) + s("password1")))
    code, body = read_frame(c)
    assert code == 111, code
    name, at = parse_string(body)
    (ident,) = struct.unpack_from(">Q", body, at)
    assert name == pseudo and at + 8 == len(body)
    return c, pseudo, ident


# -- a third-party client against chinwagd -----------------------------------


def test_hello_must_come_first(accounts: int) -> None:
    c = connect(accounts)
    c.sendall(frame(170))
    assert closed_by_peer(c)
    c.close()


def test_register_answers_101_102_103_and_login_111_112(accounts: int) -> None:
    pseudo = unique("re")
    email = pseudo + "@example.org"
    c = hello(accounts)
    c.sendall(frame(100, s(email) + s(pseudo) + s("password1")))
    assert read_frame(c) == (101, b"")
    c.sendall(frame(100, s(email) + s(pseudo + "x") + s("password1")))
    assert read_frame(c) == (102, b"")  # email taken
    c.sendall(frame(100, s("x" + email) + s(pseudo) + s("password1")))
    assert read_frame(c) == (103, b"")  # pseudo taken
    c.sendall(frame(110, s(email) + s("wrong-password")))
    assert read_frame(c) == (112, b"")
    c.sendall(frame(110, s(email) + s("password1")))
    code, body = read_frame(c)
    assert code == 111
    name, at = parse_string(body)
    assert name == pseudo and len(body) == at + 8
    c.close()


def test_friends_requests_lists_and_answers(accounts: int) -> None:
    a, an, _ = account(accounts, "fa")
    b, bn, _ = account(accounts, "fb")
    d, dn, _ = account(accounts, "fd")
    a.sendall(frame(120, s(bn)))
    assert read_frame(a) == (121, s(bn))
    assert read_frame(b) == (130, s(an))  # live, since b is online
    b.sendall(frame(180))
    assert read_frame(b) == (181, slist([an]))
    b.sendall(frame(131, s(an)))
    assert read_frame(a) == (124, s(bn))
    a.sendall(frame(120, s(bn)))
    assert read_frame(a) == (123, s(bn))  # already friends
    ghost = unique("nobody")
    a.sendall(frame(120, s(ghost)))
    assert read_frame(a) == (122, s(ghost))
    a.sendall(frame(170))
    assert read_frame(a) == (171, slist([bn]))
    # refused
    d.sendall(frame(120, s(an)))
    assert read_frame(d) == (121, s(an))
    assert read_frame(a) == (130, s(dn))
    a.sendall(frame(132, s(dn)))
    assert read_frame(d) == (125, s(an))
    d.sendall(frame(170))
    assert read_frame(d) == (171, struct.pack(">H", 0))  # empty list
    d.sendall(frame(180))
    assert read_frame(d) == (181, struct.pack(">H", 0))
    for x in (a, b, d):
        x.close()


def _friends(accounts: int) -> Tuple[Any, ...]:
    a, an, aid = account(accounts, "ma")
    b, bn, bid = account(accounts, "mb")
    a.sendall(frame(120, s(bn)))
    assert read_frame(a) == (121, s(bn))
    assert read_frame(b) == (130, s(an))
    b.sendall(frame(131, s(an)))
    assert read_frame(a) == (124, s(bn))
    return a, an, aid, b, bn, bid


def test_messages_are_acknowledged_and_kept_in_history(accounts: int) -> None:
    a, an, aid, b, bn, bid = _friends(accounts)
    for text in ["salut", "", "é" * 1024]:
        a.sendall(frame(150, s(bn) + s(text)))
        assert read_frame(a) == (152, b"")
        assert read_frame(b) == (151, s(an) + s(text))
    b.sendall(frame(150, s(an) + s("retour")))
    assert read_frame(b) == (152, b"")
    assert read_frame(a) == (151, s(bn) + s("retour"))
    a.sendall(frame(150, s(unique("stranger")) + s("lost")))
    assert read_frame(a) == (153, b"")
    a.sendall(frame(160, s(bn) + struct.pack(">Q", 0)))
    code, body = read_frame(a)
    assert code == 161
    who, at = parse_string(body)
    (count,) = struct.unpack_from(">H", body, at)
    at += 2
    assert who == bn and count == 4
    entries = []
    for _ in range(count):
        mid, sender = struct.unpack_from(">QQ", body, at)
        text, at = parse_string(body, at + 16)
        entries.append((sender, text))
        assert mid > 0
    assert at == len(body)  # no stamps block: this client asked for none
    assert entries == [(aid, "salut"), (aid, ""), (aid, "é" * 1024), (bid, "retour")]
    # the page before the third entry: the two oldest
    third = struct.unpack_from(">Q", body, len(s(bn)) + 2 + 2 * 16 + len(s("salut")) + len(s("")))[0]
    a.sendall(frame(160, s(bn) + struct.pack(">Q", third)))
    code, body = read_frame(a)
    assert code == 161 and body[:len(s(bn)) + 2] == s(bn) + struct.pack(">H", 2), body
    a.close()
    b.close()


def test_call_signalling_ring_answer_decline_hang_up(accounts: int) -> None:
    a, an, _, b, bn, _ = _friends(accounts)
    a.sendall(frame(140, s(bn) + s("") + struct.pack(">H", 40000)))
    code, body = read_frame(b)
    assert code == 143
    who, at = parse_string(body)
    addr, at = parse_string(body, at)
    assert (who, addr) == (an, "127.0.0.1")
    assert body[at:] == struct.pack(">H", 40000)
    b.sendall(frame(144, s(an) + s("") + struct.pack(">H", 40002)))
    assert read_frame(a) == (141, s(bn) + s("127.0.0.1") + struct.pack(">H", 40002))
    a.sendall(frame(146, s(bn)))
    assert read_frame(b) == (147, s(an))
    # declined
    b.sendall(frame(140, s(an) + s("") + struct.pack(">H", 1)))
    assert read_frame(a)[0] == 143
    a.sendall(frame(145, s(bn)))
    assert read_frame(b) == (142, s(an))
    # to a stranger
    a.sendall(frame(140, s(unique("nobody")) + s("") + struct.pack(">H", 1)))
    code, body = read_frame(a)
    assert code == 142
    assert parse_string(body)[0].startswith("nobody")
    # answered, then the caller's connection drops: the callee gets 147
    a.sendall(frame(140, s(bn) + s("") + struct.pack(">H", 40000)))
    assert read_frame(b)[0] == 143
    b.sendall(frame(144, s(an) + s("") + struct.pack(">H", 40002)))
    assert read_frame(a)[0] == 141
    a.close()
    assert read_frame(b) == (147, s(an))
    a.close()
    b.close()


# -- a third-party server for the library ------------------------------------


def test_the_library_against_a_scripted_accounts_server() -> None:
    seen: Dict[str, Any] = {}
    voice = udp()
    vport = voice.getsockname()[1]

    def script(accept):  # type: ignore[no-untyped-def]
        c = accept()
        seen["hello"] = read_frame(c)
        c.sendall(frame(201))
        seen["register"] = read_frame(c)
        c.sendall(frame(103))
        seen["login"] = read_frame(c)
        c.sendall(frame(111, s("zoe") + struct.pack(">Q", 77)))
        seen["friend"] = read_frame(c)
        c.sendall(frame(123, s("yan")))
        seen["list"] = read_frame(c)
        c.sendall(frame(171, slist(["amy", "bo"])))
        seen["requests"] = read_frame(c)
        c.sendall(frame(181, slist([])))
        seen["msg"] = read_frame(c)
        c.sendall(frame(152))
        seen["history"] = read_frame(c)
        c.sendall(frame(161, s("amy") + struct.pack(">H", 2)
                        + struct.pack(">QQ", 5, 9) + s("one")
                        + struct.pack(">QQ", 6, 77) + s("")))
        c.sendall(frame(151, s("amy") + s("hey")))
        c.sendall(frame(130, s("cy")))
        seen["accept"] = read_frame(c)
        c.sendall(frame(143, s("amy") + s("127.0.0.1") + struct.pack(">H", vport)))
        seen["answer"] = read_frame(c)
        seen["hangup"] = read_frame(c)
        assert closed_by_peer(c)

    srv = FakeServer(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ACCOUNTS, stamps=False) as cl:
        try:
            cl.register("zoe@example.org", "zoe", "password1")
            raise AssertionError("103 was not an error")
        except chinwag.PseudoTaken:
            pass
        assert cl.login_password("zoe@example.org", "password1") == ("zoe", 77)
        try:
            cl.request_friend("yan")
            raise AssertionError("123 was not an error")
        except chinwag.AlreadyFriends:
            pass
        assert cl.friends() == ["amy", "bo"]
        assert cl.friend_requests() == []
        cl.send_to_friend("amy", "hello")
        h = cl.history("amy")
        assert [(e.id, e.sender_id, e.text) for e in h] == [(5, 9, "one"), (6, 77, "")], h
        ev = event(cl, chinwag.EventKind.PRIVATE_MESSAGE, 5)
        assert (ev.peer, ev.text) == ("amy", "hey")
        ev = event(cl, chinwag.EventKind.FRIEND_REQUEST, 5)
        assert ev.peer == "cy"
        cl.accept_friend("cy")
        ev = event(cl, chinwag.EventKind.CALL_INCOMING, 5)
        assert (ev.peer, ev.address, ev.port) == ("amy", "127.0.0.1", vport)
        cl.answer_voice_call("amy")
        ev = event(cl, chinwag.EventKind.CALL_ESTABLISHED, 5)
        assert ev.call is not None
        with ev.call as call:
            call.send(b"\x01\x02")
            data, src = voice.recvfrom(2048)
            assert data == b"CWVC\x01\x02", data  # int32 magic, then the body
            call.hangup()
    srv.join()
    voice.close()
    assert seen["hello"] == (200, b"")
    assert seen["register"] == (100, s("zoe@example.org") + s("zoe") + s("password1"))
    assert seen["login"] == (110, s("zoe@example.org") + s("password1"))
    assert seen["friend"] == (120, s("yan"))
    assert seen["list"] == (170, b"")
    assert seen["requests"] == (180, b"")
    assert seen["msg"] == (150, s("amy") + s("hello"))
    assert seen["history"] == (160, s("amy") + struct.pack(">Q", 0))
    assert seen["accept"] == (131, s("cy"))
    code, body = seen["answer"]
    assert code == 144
    who, at = parse_string(body)
    addr, at = parse_string(body, at)
    assert who == "amy" and at + 2 == len(body)
    assert seen["hangup"] == (146, s("amy"))


def test_refusals_offline_delivery_and_the_stamps_extension(accounts: int) -> None:
    c = hello(accounts)
    pseudo = unique("sh")
    c.sendall(frame(100, s(pseudo + "@example.org") + s(pseudo) + s("short")))
    code, body = read_frame(c)
    assert code == 104 and parse_string(body)[1] == len(body) and parse_string(body)[0]
    c.sendall(frame(110, s(unique("none") + "@example.org") + s("password1")))
    assert read_frame(c) == (112, b"")
    c.close()
    # b goes offline; a's request and message wait for b's next login, and
    # come right after 111: requests, then answers, then messages
    a, an, aid, b, bn, bid = _friends(accounts)
    email_b = bn + "@example.org"
    b.close()
    e, en, _ = account(accounts, "oe")
    e.sendall(frame(120, s(bn)))
    assert read_frame(e) == (121, s(bn))
    a.sendall(frame(150, s(bn) + s("while away")))
    assert read_frame(a) == (152, b"")
    # b comes back asking for STAMPS: 200 with features, 201 grants them
    b = connect(accounts)
    b.sendall(frame(200, struct.pack(">I", 1)))
    assert read_frame(b) == (201, struct.pack(">I", 1))
    b.sendall(frame(110, s(email_b) + s("password1")))
    code, body = read_frame(b)
    assert code == 111 and body == s(bn) + struct.pack(">Q", bid)
    assert read_frame(b) == (130, s(en))
    code, body = read_frame(b)
    assert code == 151 and body[:-8] == s(an) + s("while away")  # then stamp:u64
    (stamp,) = struct.unpack(">Q", body[-8:])
    import time
    assert abs(stamp - time.time()) < 120
    for x in (a, b, e):
        x.close()


def test_the_library_places_calls_on_a_scripted_accounts_server() -> None:
    """140 -> 141 (the callee's UDP end point; the library then sends it
    magic-prefixed datagrams) and 147; 140 -> 142."""
    seen: Dict[str, Any] = {}
    peer = udp()
    pport = peer.getsockname()[1]

    def script(accept):  # type: ignore[no-untyped-def]
        c = accept()
        assert read_frame(c) == (200, struct.pack(">I", 1))  # asks for STAMPS
        c.sendall(frame(201, struct.pack(">I", 0)))  # granted none
        assert read_frame(c)[0] == 110
        c.sendall(frame(111, s("una") + struct.pack(">Q", 1)))
        seen["call"] = read_frame(c)
        c.sendall(frame(141, s("vic") + s("127.0.0.1") + struct.pack(">H", pport)))
        seen["datagram"] = peer.recvfrom(2048)[0]  # media or report
        c.sendall(frame(147, s("vic")))
        seen["call2"] = read_frame(c)
        c.sendall(frame(142, s("wes")))
        assert closed_by_peer(c)

    srv = FakeServer(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ACCOUNTS) as cl:
        cl.login_password("una@example.org", "password1")
        cl.place_voice_call("vic")
        ev = event(cl, chinwag.EventKind.CALL_ACCEPTED)
        assert (ev.peer, ev.address, ev.port) == ("vic", "127.0.0.1", pport)
        ev = event(cl, chinwag.EventKind.CALL_ESTABLISHED)
        assert ev.peer == "vic" and ev.call is not None
        with ev.call:
            ev = event(cl, chinwag.EventKind.CALL_ENDED)
            assert ev.peer == "vic"
        cl.place_voice_call("wes")
        ev = event(cl, chinwag.EventKind.CALL_FAILED)
        assert ev.peer == "wes"
    srv.join()
    peer.close()
    code, body = seen["call"]
    who, at = parse_string(body)
    addr, at = parse_string(body, at)
    assert code == 140 and who == "vic" and at + 2 == len(body)
    assert addr in ("", "127.0.0.1"), addr
    assert seen["call2"][0] == 140
    data = seen["datagram"]
    assert data[:4] == b"CWVC" and data[4] in (1, 2), data[:8]  # int32 magic first
