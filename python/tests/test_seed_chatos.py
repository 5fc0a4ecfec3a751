"""chatos (seeds 004 + 002, NOTES.md) byte for byte, as a third-party
client against chinwagd and as a third-party server for the library.

From the seed: opcode 1 byte; INT 4-byte big-endian signed; STRING = INT
byte length + UTF-8; LONG 8 bytes big-endian (NOTES: "every implementation
... writes it with Java's putLong"). Login at most 30 bytes, msg at most
1024 bytes. Opcodes 0 LOGIN, 1 LOGIN_ACCEPTED, 2 LOGIN_REFUSED, 3 MESSAGE,
4 MESSAGE_PRIVATE, 5 REQUEST_PRIVATE, 6 OK_PRIVATE, 7 KO_PRIVATE,
8 ID_PRIVATE, 9 LOGIN_PRIVATE, 10 ESTABLISHED, 11 CLOSE_CONNECTION,
12 ACCEPT_CLOSE_CONNECTION."""

import socket
import struct
from typing import Any, Dict, Tuple

from conftest import chinwag, unique
from seedwire import FakeServer, closed_by_peer, connect, recv_exact, silent, event


def s(text: str) -> bytes:
    b = text.encode("utf-8")
    return struct.pack(">i", len(b)) + b


def read_string(c: socket.socket) -> str:
    (n,) = struct.unpack(">i", recv_exact(c, 4))
    assert 0 <= n <= 1024, n
    return recv_exact(c, n).decode("utf-8")


def login(port: int, name: str) -> socket.socket:
    c = connect(port)
    c.sendall(b"\x00" + s(name))
    assert recv_exact(c, 1) == b"\x01"  # LOGIN_ACCEPTED is the single byte 01
    return c


# -- a third-party client against chinwagd -----------------------------------


def test_login_accepted_refused_and_retry_on_the_same_connection(chatos: int) -> None:
    name = unique("ca")
    a = login(chatos, name)
    b = connect(chatos)
    b.sendall(b"\x00" + s(name))
    assert recv_exact(b, 1) == b"\x02"  # taken: LOGIN_REFUSED, one byte
    # "le client doit en proposer une nouvelle": same connection, new login
    b.sendall(b"\x00" + s(name + "x"))
    assert recv_exact(b, 1) == b"\x01"
    assert silent(b) == b""
    a.close()
    b.close()


def test_login_of_30_bytes_is_accepted_and_31_is_not(chatos: int) -> None:
    name30 = (unique("c") + "é" * 15)
    while len(name30.encode()) > 30:
        name30 = name30[:-1]
    name30 += "z" * (30 - len(name30.encode()))
    assert len(name30.encode()) == 30
    c = login(chatos, name30)
    # Beyond the seed's 30 bytes: chinwagd treats it as a framing error and
    # closes (docs/protocols/chatos.md, "Bad input"); it never accepts it.
    d = connect(chatos)
    d.sendall(b"\x00" + s(unique("d") + "w" * 30))
    assert closed_by_peer(d)
    # and an empty login is refused (02), the connection kept
    e = connect(chatos)
    e.sendall(b"\x00" + s(""))
    assert recv_exact(e, 1) == b"\x02"
    e.sendall(b"\x00" + s(unique("e")))
    assert recv_exact(e, 1) == b"\x01"
    for x in (c, d, e):
        x.close()


def test_one_identification_only_and_forged_or_early_commands(chatos: int) -> None:
    an, bn = unique("oa"), unique("ob")
    a, b = login(chatos, an), login(chatos, bn)
    # "L'identification ne peut avoir lieu qu'une seule fois avec succès"
    a.sendall(b"\x00" + s(unique("again")))
    assert recv_exact(a, 1) == b"\x02"
    # a MESSAGE whose login is not the sender's is never delivered
    a.sendall(b"\x03" + s(bn) + s("forged"))
    a.sendall(b"\x03" + s(an) + s("real"))
    want = b"\x03" + s(an) + s("real")
    assert recv_exact(b, len(want)) == want
    # before identification only LOGIN / LOGIN_PRIVATE: anything else closes
    c = connect(chatos)
    c.sendall(b"\x03" + s("x") + s("y"))
    assert closed_by_peer(c)
    # a msg over 1024 bytes, an unknown opcode, a negative length: closed
    for bad in (b"\x03" + s(an) + s("z" * 1025), b"\x0d", b"\x03" + struct.pack(">i", -1)):
        d = login(chatos, unique("bd"))
        d.sendall(bad)
        assert closed_by_peer(d), bad[:8]
        d.close()
    for x in (a, b, c):
        x.close()


def test_global_message_reaches_everyone_byte_for_byte(chatos: int) -> None:
    an, bn = unique("ga"), unique("gb")
    a, b = login(chatos, an), login(chatos, bn)
    for text in ["hi all", "", "x" * 1024, "çà et là ✓"]:
        frame = b"\x03" + s(an) + s(text)
        a.sendall(frame)
        for c in (b, a):  # "à tous les clients connectés": the sender too
            got = recv_exact(c, len(frame))
            assert got == frame, (text[:10], got[:20])
    a.close()
    b.close()


def test_the_notes_example_message_bytes(chatos: int) -> None:
    name = unique("n")
    a = login(chatos, name)
    a.sendall(b"\x03" + s(name) + s("hi all"))
    want = b"\x03" + s(name) + bytes.fromhex("00000006686920616c6c")
    assert recv_exact(a, len(want)) == want
    a.close()


def test_private_message_goes_to_the_target_only_and_unknown_is_ignored(chatos: int) -> None:
    an, bn, cn = unique("pa"), unique("pb"), unique("pc")
    a, b, c = login(chatos, an), login(chatos, bn), login(chatos, cn)
    for text in ["psst", "", "y" * 1024]:
        frame = b"\x04" + s(an) + s(bn) + s(text)
        a.sendall(frame)
        assert recv_exact(b, len(frame)) == frame
    # to nobody: ignored, and the connection goes on
    a.sendall(b"\x04" + s(an) + s(unique("nobody")) + s("lost"))
    a.sendall(b"\x04" + s(an) + s(bn) + s("after"))
    frame = b"\x04" + s(an) + s(bn) + s("after")
    assert recv_exact(b, len(frame)) == frame
    assert silent(a) == b"" and silent(c, 0.1) == b""
    for x in (a, b, c):
        x.close()


def _negotiate(chatos: int) -> Tuple[Any, ...]:
    rn, tn = unique("rq"), unique("tg")
    r, t = login(chatos, rn), login(chatos, tn)
    req = b"\x05" + s(rn) + s(tn)
    r.sendall(req)
    assert recv_exact(t, len(req)) == req  # forwarded exclusively to the target
    assert silent(r, 0.1) == b""
    t.sendall(b"\x06" + s(rn) + s(tn))
    ids = []
    for c in (r, t):
        head = b"\x08" + s(rn) + s(tn)
        assert recv_exact(c, len(head)) == head
        (cid,) = struct.unpack(">q", recv_exact(c, 8))  # LONG: 8 bytes
        ids.append(cid)
    assert ids[0] == ids[1]
    return rn, tn, r, t, ids[0]


def test_private_connection_refused_is_relayed_to_the_requester(chatos: int) -> None:
    rn, tn = unique("kr"), unique("kt")
    r, t = login(chatos, rn), login(chatos, tn)
    r.sendall(b"\x05" + s(rn) + s(tn))
    req = b"\x05" + s(rn) + s(tn)
    assert recv_exact(t, len(req)) == req
    ko = b"\x07" + s(rn) + s(tn)
    t.sendall(ko)
    assert recv_exact(r, len(ko)) == ko
    # a request to nobody is ignored
    r.sendall(b"\x05" + s(rn) + s(unique("ghost")))
    assert silent(r) == b""
    r.close()
    t.close()


def test_private_connection_is_established_and_relayed_both_ways(chatos: int) -> None:
    rn, tn, r, t, cid = _negotiate(chatos)
    pr, pt = connect(chatos), connect(chatos)
    pr.sendall(b"\x09" + struct.pack(">q", cid))
    assert silent(pr, 0.2) == b""  # nothing until the second one arrives
    pt.sendall(b"\x09" + struct.pack(">q", cid))
    assert recv_exact(pr, 1) == b"\x0a" and recv_exact(pt, 1) == b"\x0a"
    # Relayed raw bytes, whatever they are.
    blob = bytes(range(256)) * 40
    pr.sendall(blob)
    assert recv_exact(pt, len(blob)) == blob
    pt.sendall(b"\x00\xffback")
    assert recv_exact(pr, 6) == b"\x00\xffback"
    # "Lorsqu'un client ferme sa connexion en écriture, le serveur fait de
    # même sur la connexion correspondante", and the other way still works.
    pr.shutdown(socket.SHUT_WR)
    assert pt.recv(1) == b""
    pt.sendall(b"still")
    assert recv_exact(pr, 5) == b"still"
    for x in (r, t, pr, pt):
        x.close()


def test_login_private_with_an_id_never_given_is_closed(chatos: int) -> None:
    a = connect(chatos)
    a.sendall(b"\x09" + struct.pack(">q", -1234567))
    assert closed_by_peer(a)  # no 0a: the id was never given
    a.close()


def test_close_connection_is_answered_with_accept_close(chatos: int) -> None:
    rn, tn, r, t, cid = _negotiate(chatos)
    pr, pt = connect(chatos), connect(chatos)
    pr.sendall(b"\x09" + struct.pack(">q", cid))
    pt.sendall(b"\x09" + struct.pack(">q", cid))
    assert recv_exact(pr, 1) == b"\x0a" and recv_exact(pt, 1) == b"\x0a"
    r.sendall(b"\x0b" + struct.pack(">q", cid) + s(rn) + s(tn))
    # chinwagd answers both users, each with the *other* party's login
    # (docs/protocols/chatos.md, CLOSE_CONNECTION): the requester gets
    # login_target as seed 002 writes it.
    assert recv_exact(r, 1 + 4 + len(tn)) == b"\x0c" + s(tn)
    assert recv_exact(t, 1 + 4 + len(rn)) == b"\x0c" + s(rn)
    assert closed_by_peer(pr) and closed_by_peer(pt)
    for x in (r, t, pr, pt):
        x.close()


# -- a third-party server for the library ------------------------------------


def test_the_library_against_a_scripted_chatos_server() -> None:
    me, peer = "lib_user", "alice"
    seen: Dict[str, Any] = {}

    def script(accept):  # type: ignore[no-untyped-def]
        c = accept()
        # LOGIN refused once, then accepted
        assert recv_exact(c, 1) == b"\x00"
        assert read_string(c) == "taken"
        c.sendall(b"\x02")
        assert recv_exact(c, 1) == b"\x00"
        assert read_string(c) == me
        c.sendall(b"\x01")
        # MESSAGE from the library: its own login and the text
        assert recv_exact(c, 1) == b"\x03"
        seen["msg"] = (read_string(c), read_string(c))
        # MESSAGE_PRIVATE from the library
        assert recv_exact(c, 1) == b"\x04"
        seen["priv"] = (read_string(c), read_string(c), read_string(c))
        # What the server pushes
        c.sendall(b"\x03" + s(peer) + s("hi all"))
        c.sendall(b"\x04" + s(peer) + s(me) + s("only you"))
        c.sendall(b"\x05" + s(peer) + s(me))
        # REQUEST_PRIVATE from the library, then our ID_PRIVATE
        assert recv_exact(c, 1) == b"\x06"
        seen["ok"] = (read_string(c), read_string(c))
        c.sendall(b"\x08" + s(peer) + s(me) + struct.pack(">q", 0x0102030405060708))
        p = accept()
        seen["login_private"] = recv_exact(p, 9)
        p.sendall(b"\x0a")
        seen["relayed"] = recv_exact(p, 5)
        p.sendall(b"pong!")
        # the library's own request, refused by the target
        assert recv_exact(c, 1) == b"\x05"
        seen["req"] = (read_string(c), read_string(c))
        c.sendall(b"\x07" + s(me) + s("bob"))
        # closing the stream early: CLOSE_CONNECTION(11) id requester target
        assert recv_exact(c, 1) == b"\x0b"
        seen["close"] = (struct.unpack(">q", recv_exact(c, 8))[0], read_string(c),
                         read_string(c))
        c.sendall(b"\x0c" + s(peer))
        assert closed_by_peer(p)

    srv = FakeServer(script)
    with chinwag.Client("127.0.0.1", srv.port) as cl:
        try:
            cl.login("taken")
            raise AssertionError("a refused login was accepted")
        except chinwag.LoginRefused:
            pass
        cl.login(me)
        cl.send_message("hello")
        cl.send_private(peer, "secret")
        ev = event(cl, chinwag.EventKind.MESSAGE, 5)
        assert (ev.peer, ev.text) == (peer, "hi all")
        ev = event(cl, chinwag.EventKind.PRIVATE_MESSAGE, 5)
        assert (ev.peer, ev.text) == (peer, "only you")
        ev = event(cl, chinwag.EventKind.PRIVATE_REQUEST, 5)
        assert ev.peer == peer
        cl.accept_private(peer)
        ev = event(cl, chinwag.EventKind.PRIVATE_ESTABLISHED, 5)
        assert ev.stream is not None
        with ev.stream as st:
            assert st.connect_id == 0x0102030405060708
            st.write(b"ping!")
            got = b""
            while len(got) < 5:
                got += st.read(5 - len(got), 5)
            assert got == b"pong!"
            cl.request_private("bob")
            ev = event(cl, chinwag.EventKind.PRIVATE_REFUSED, 5)
            assert ev.peer == "bob"
        ev = event(cl, chinwag.EventKind.PRIVATE_CLOSED, 5)
        assert ev.peer == peer
    srv.join()
    assert seen["msg"] == (me, "hello")
    assert seen["priv"] == (me, peer, "secret")
    assert seen["ok"] == (peer, me)
    assert seen["login_private"] == b"\x09\x01\x02\x03\x04\x05\x06\x07\x08"
    assert seen["relayed"] == b"ping!"
    assert seen["req"] == (me, "bob")
    assert seen["close"] == (0x0102030405060708, me, peer)
