"""rooms (seed 003, NOTES.md) byte for byte over UDP, as a third-party
client against chinwagd and as a third-party server for the library.

From the seed and notes: TYPE_MESSAGE 5 bits | ID_USER 1 byte | NUM_SEQ 2
bytes | DATA; ID_USER 0 = not registered, 255 = the server; names end
with '#'; an answer reuses the request's NUM_SEQ; T = 100 ms. The seed
gives no padding or byte order: chinwag's choice (docs/protocols/rooms.md)
is the type in the high 5 bits of byte 0, big-endian numbers, and sub-byte
fields packed from the most significant bit of one byte."""

import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from conftest import chinwag, port, unique
from seedwire import udp, event

SERVER = 255


def msg(kind: int, user: int, seq: int, body: bytes = b"") -> bytes:
    return struct.pack(">BBH", kind << 3, user, seq) + body


def name(text: str) -> bytes:
    return text.encode() + b"#"


def parse(d: bytes) -> Tuple[int, int, int, bytes]:
    assert len(d) >= 4 and d[0] & 0x07 == 0, d  # the 3 low bits are zero
    (seq,) = struct.unpack(">H", d[2:4])
    return d[0] >> 3, d[1], seq, d[4:]


class Peer:
    """A seed-003 client: its own socket, its own NUM_SEQ."""

    def __init__(self, server: int) -> None:
        self.sock = udp(2.0)
        self.addr = ("127.0.0.1", server)
        self.seq = 1000
        self.id = 0
        self.inbox: List[bytes] = []
        self.answered: Dict[int, bytes] = {}

    def send(self, kind: int, body: bytes = b"", seq: Optional[int] = None) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.sock.sendto(msg(kind, self.id, seq, body), self.addr)
        return seq

    def recv(self, timeout: float = 2.0) -> Optional[bytes]:
        if self.inbox:
            return self.inbox.pop(0)
        self.sock.settimeout(timeout)
        try:
            d, src = self.sock.recvfrom(8192)
        except socket.timeout:
            return None
        assert src == self.addr
        return d

    def answer(self, kind: int, seq: int, timeout: float = 2.0) -> bytes:
        """The server's answer of type ``kind`` to NUM_SEQ ``seq``: the body.
        Requests the server starts meanwhile (texts from other tests'
        users in the public room, a room closed) are acknowledged and
        skipped."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            d = self.recv(end - time.monotonic())
            assert d is not None, "no answer %d to seq %d" % (kind, seq)
            k, u, s, body = parse(d)
            if (k, s) == (kind, seq):
                assert u == SERVER, d
                return body
            if s in self.answered:  # a copy of a request we answered
                self.sock.sendto(self.answered[s], self.addr)
                continue
            if k in (15, 23):  # a text, a room closed: acknowledge, same NUM_SEQ
                self.sock.sendto(msg(k + 1, self.id, s), self.addr)
                continue
            self.inbox.append(d)
            raise AssertionError("unexpected %r" % d)
        raise AssertionError("no answer %d to seq %d" % (kind, seq))

    def register(self, user: str) -> int:
        seq = self.send(1, name(user))
        body = self.answer(2, seq)
        assert len(body) == 2 and body[0] == 0x00, body  # STATUT 00, then ID
        assert 1 <= body[1] <= 254
        self.id = body[1]
        # keep-alive: CONNEXION with our id, empty; STATUT_CONNEXION 0
        seq = self.send(1)
        assert self.answer(2, seq) == b"\x00"
        return self.id

    def reply(self, kind: int, seq: int, body: bytes = b"") -> None:
        """Answer a request the server started; copies of that request
        (a retransmission that crossed the answer) get the same bytes."""
        d = msg(kind, self.id, seq, body)
        self.answered[seq] = d
        self.sock.sendto(d, self.addr)

    def expect(self, kind: int, timeout: float = 2.0) -> bytes:
        """The next datagram of type ``kind`` from the server, skipping (and
        answering again) copies of requests already answered."""
        while True:
            d = self.recv(timeout)
            assert d is not None, "no message of type %d" % kind
            k, u, s, body = parse(d)
            if s in self.answered:
                self.sock.sendto(self.answered[s], self.addr)
                continue
            assert k == kind, d
            return d

    def request(self, kind: int, body: bytes = b"") -> bytes:
        return self.answer(kind + 1, self.send(kind, body))

    def close(self) -> None:
        if self.id:
            self.request(21)
        self.sock.close()


def rooms() -> int:
    return port("rooms")


# -- a third-party client against chinwagd -----------------------------------


def test_registration_statuses_keep_alive_and_a_retransmitted_request() -> None:
    a = Peer(rooms())
    user = unique("r")[:10]
    seq = a.send(1, name(user))
    first = a.answer(2, seq)
    # the same CONNEXION again (a retransmission): the same answer bytes
    a.send(1, name(user), seq=seq)
    assert a.answer(2, seq) == first
    a.id = first[1]
    b = Peer(rooms())
    taken = b.answer(2, b.send(1, name(user)))
    assert taken == b"\x80\x00", taken  # 10: name taken; ID_USER 0 (none)
    bad = b.answer(2, b.send(1, name("x" * 11)))
    assert bad == b"\x40\x00", bad  # 01: invalid (11 bytes)
    bad = b.answer(2, b.send(1, b"nohash"))
    assert bad[0] == 0x40, bad
    ten = unique("t")[:10].ljust(10, "q")
    assert len(ten.encode()) == 10
    b.register(ten)  # 10 bytes is allowed
    # DECONNEXION: STATUT 0; the name is free again
    assert b.request(21) == b"\x00"
    b.id = 0
    c = Peer(rooms())
    c.register(ten)
    # a keep-alive with an unknown id gets STATUT_CONNEXION 1
    d = Peer(rooms())
    d.sock.sendto(msg(1, 7, 5, name("zz")), d.addr)  # register first so it is confirmed
    a.close()
    c.close()
    d.sock.close()
    b.sock.close()


def test_private_rooms_create_list_access_change_quit() -> None:
    a, b = Peer(rooms()), Peer(rooms())
    an, bn = unique("a")[:10], unique("b")[:10]
    a.register(an)
    b.register(bn)
    room = unique("salon")
    body = a.request(3, b"\x00" + name(room) + b"\x02")  # centralised, NUM_MAX 2
    assert len(body) == 2 and body[0] == 0x00 and 1 <= body[1] <= 255, body
    assert a.request(3, b"\x00" + name(room) + b"\x05")[0] == 0x80  # exists
    assert a.request(3, b"\x00" + name(unique("s")) + b"\x01")[0] == 0xC0  # NUM_MAX < 2
    assert a.request(3, b"\x00" + name("") + b"\x05")[0] == 0x40  # bad name
    assert a.request(3, b"\x00" + name("n" * 51) + b"\x05")[0] == 0x40  # over 50 bytes
    # the list holds our room: MODE byte, NAME '#', NUM_CLIENT
    lst = a.request(5)
    count, rest = lst[0], lst[1:]
    found = []
    for _ in range(count):
        mode = rest[0]
        assert mode in (0x00, 0x80)
        end = rest.index(b"#", 1)
        found.append((mode, rest[1:end].decode(), rest[end + 1]))
        rest = rest[end + 2:]
    assert rest == b""
    assert (0x00, room, 1) in found, found
    # access: granted 00, no such room 01, full 10; MODE | STATUT in one byte
    assert b.request(7, name(room)) == b"\x00"
    assert b.request(9, name(room))[0] == 2
    members = b.request(9, name(room))
    assert members[0] == 2 and sorted(members[1:].split(b"#")[:-1]) == sorted([an.encode(), bn.encode()])
    c = Peer(rooms())
    c.register(unique("c")[:10])
    assert c.request(7, name(room)) == b"\x40"  # full
    assert c.request(7, name(unique("none"))) == b"\x20"  # no such room
    assert c.request(17, name(room)) == b"\x40"  # CHANGER: same forms
    # QUITTER: 0, then 1 (not in a private room)
    assert c.request(19) == b"\x80"
    assert b.request(19) == b"\x00"
    # b left: a is alone, the room closes and a is told (chinwag's type 23)
    d = a.recv()
    assert d is not None
    k, u, s, body = parse(d)
    assert (k, u, body) == (23, SERVER, name(room)), d
    a.sock.sendto(msg(24, a.id, s), a.addr)
    for p in (a, b, c):
        p.close()


def test_decentralised_access_lists_addresses_ports_and_names() -> None:
    a, b = Peer(rooms()), Peer(rooms())
    an, bn = unique("da")[:10], unique("db")[:10]
    a.register(an)
    b.register(bn)
    room = unique("p2p")
    body = a.request(3, b"\x80" + name(room) + b"\x04")
    assert body[0] == 0x00
    acc = b.request(7, name(room))
    assert acc[0] == 0x80 and acc[1] >= 1, acc  # MODE 1, STATUT 00, count
    rest, seen = acc[2:], {}
    for _ in range(acc[1]):
        ip = socket.inet_ntoa(rest[:4])
        (p,) = struct.unpack(">H", rest[4:6])
        end = rest.index(b"#", 6)
        seen[rest[6:end].decode()] = (ip, p)
        rest = rest[end + 1:]
    assert rest == b""
    assert seen[an] == ("127.0.0.1", a.sock.getsockname()[1]), seen
    assert list(seen) == [an], seen  # the other members: not the requester
    # texts go peer to peer there: one sent to the server is ERREUR [TEXTE] 5
    seq = b.send(15, b"\x00\x02hi")
    assert b.answer(27, seq) == bytes([15 << 3, 5])
    # asking for the room one is in changes nothing: granted, same list
    assert b.request(7, name(room)) == acc
    a.close()
    b.close()


def test_texts_invitations_acknowledgements_and_retransmission() -> None:
    a, b = Peer(rooms()), Peer(rooms())
    an, bn = unique("ta")[:10], unique("tb")[:10]
    a.register(an)
    b.register(bn)
    room = unique("club")
    assert a.request(3, b"\x00" + name(room) + b"\x05")[0] == 0x00
    # INVITER with the USER_NAME as the seed draws it (no '#'): empty answer
    assert a.request(11, bn.encode()) == b""
    # a third user refuses an invitation (REPONSE 1): nothing changes
    c = Peer(rooms())
    cn = unique("tc")[:10]
    c.register(cn)
    assert a.request(11, cn.encode()) == b""
    d = c.expect(13)
    c.reply(14, parse(d)[2], b"\x80")
    c.close()
    d = b.expect(13)
    k, u, iseq, body = parse(d)
    assert u == SERVER
    assert body == name(an) + b"\x00" + name(room), body  # who, MODE byte, room
    b.reply(14, iseq, b"\x00")  # accept
    # b ends up in the room
    assert poll_members(a, room, 2)
    # a text: the author gets REPONSE_TEXTE (empty); b gets the TEXTE with
    # the author's ID_USER; unacknowledged, the same bytes come again
    text = "bonjour ✓".encode()
    assert a.request(15, struct.pack(">H", len(text)) + text) == b""
    first = b.expect(15)
    k, u, s, body = parse(first)
    assert (k, u, body) == (15, a.id, struct.pack(">H", len(text)) + text)
    t0 = time.monotonic()
    again = b.expect(15)
    assert again == first, again  # T later, same NUM_SEQ and bytes
    assert time.monotonic() - t0 >= 0.05
    b.reply(16, s)
    # acknowledged: the copies stop (a few may cross the REPONSE_TEXTE on a
    # loaded machine; unacknowledged, all M = 10 sends would come: 8 more)
    late = 0
    while True:
        d2 = b.recv(0.5)
        if d2 is None:
            break
        if d2 != first:  # a copy of the invitation
            assert parse(d2)[2] in b.answered, d2
            continue
        b.sock.sendto(b.answered[parse(first)[2]], b.addr)
        late += 1
        assert late <= 5, "retransmission went on after REPONSE_TEXTE"
    # an empty text and the 1,200-byte maximum
    for t in (b"", b"x" * 1200):
        assert a.request(15, struct.pack(">H", len(t)) + t) == b""
        got = b.expect(15)
        assert parse(got)[3] == struct.pack(">H", len(t)) + t
        b.reply(16, parse(got)[2])
    # an unknown type gets chinwag's ERREUR (27): [TYPE:5] byte, RAISON 1
    seq = a.send(28)
    assert a.answer(27, seq) == bytes([28 << 3, 1])
    a.close()
    b.close()


def poll_members(p: Peer, room: str, n: int) -> bool:
    end = time.monotonic() + 3
    while time.monotonic() < end:
        if p.request(9, name(room))[0] == n:
            return True
        time.sleep(0.02)
    return False


def test_error_answers_and_an_unknown_keep_alive() -> None:
    a = Peer(rooms())
    a.register(unique("ea")[:10])
    room = unique("seul")
    assert a.request(3, b"\x00" + name(room) + b"\x05")[0] == 0x00
    # alone in the room: ERREUR [TEXTE] 5 (no recipient)
    seq = a.send(15, b"\x00\x02hi")
    assert a.answer(27, seq) == bytes([15 << 3, 5])
    # a CHAT over 1,200 bytes: ERREUR [TEXTE] 3
    seq = a.send(15, struct.pack(">H", 1201) + b"x" * 1201)
    assert a.answer(27, seq) == bytes([15 << 3, 3])
    # a CHAT_LONGUEUR beyond the datagram: malformed, ERREUR [TEXTE] 2
    seq = a.send(15, struct.pack(">H", 10) + b"abc")
    assert a.answer(27, seq) == bytes([15 << 3, 2])
    # a type only the server sends: ERREUR [13] 4
    seq = a.send(13, name("x") + b"\x00" + name("y"))
    assert a.answer(27, seq) == bytes([13 << 3, 4])
    a.close()
    b = Peer(rooms())
    b.register(unique("eb")[:10])
    assert b.request(21) == b"\x00"  # DECONNEXION
    seq = b.send(1)  # a keep-alive after leaving: STATUT_CONNEXION 1
    assert b.answer(2, seq) == b"\x80"
    b.sock.close()


# -- a third-party server for the library ------------------------------------


class FakeRooms:
    """A scripted seed-003 server on 127.0.0.1:0 for one library client.
    A copy of a request already answered (the library retransmits every
    T until the answer arrives) gets the same answer again and is skipped,
    so a script sees each request once however slow the machine is; a
    keep-alive is answered (and kept in ``keepalives``) whenever it comes."""

    def __init__(self) -> None:
        self.sock = udp(3.0)
        self.port: int = self.sock.getsockname()[1]
        self.src: Tuple[str, int] = ("127.0.0.1", 0)
        self.answers: Dict[Tuple[int, int], bytes] = {}
        self.keepalives: List[bytes] = []

    def raw(self) -> bytes:
        d, self.src = self.sock.recvfrom(8192)
        return d

    def next(self, kind: int) -> bytes:
        while True:
            d = self.raw()
            k, u, s, body = parse(d)
            if (k, s) in self.answers:
                self.sock.sendto(self.answers[(k, s)], self.src)
                continue
            if k == 1 and u != 0 and kind != 1:  # a keep-alive: STATUT 0
                self.keepalives.append(d)
                self.answer(d, b"\x00")
                continue
            assert k == kind, "expected type %d, got %r" % (kind, d)
            return d

    def answer(self, request: bytes, body: bytes = b"") -> None:
        k, u, s, _ = parse(request)
        a = msg(k + 1, SERVER, s, body)
        self.answers[(k, s)] = a
        self.sock.sendto(a, self.src)

    def send(self, d: bytes) -> None:
        self.sock.sendto(d, self.src)

    def run(self, script: Callable[[], None]) -> Callable[[], None]:
        """Run ``script`` on a thread; the returned function joins it and
        re-raises what it raised."""
        out: Dict[str, BaseException] = {}

        def body() -> None:
            try:
                script()
            except BaseException as e:
                out["error"] = e

        th = threading.Thread(target=body, daemon=True)
        th.start()

        def join() -> None:
            th.join(5)
            self.sock.close()
            assert not th.is_alive(), "the scripted server did not finish"
            if "error" in out:
                raise out["error"]
        return join


def test_the_library_against_a_scripted_rooms_server() -> None:
    srv = FakeRooms()
    out: Dict[str, Any] = {}

    def script() -> None:
        # CONNEXION: unanswered once, to see the retransmission
        d1 = srv.next(1)
        t0 = time.monotonic()
        d2 = srv.raw()
        out["conn"] = (d1, d2, time.monotonic() - t0)
        srv.answer(d1, b"\x00\x07")
        d = out["creer"] = srv.next(3)
        srv.answer(d, b"\x00\x09")
        d = out["inviter"] = srv.next(11)
        srv.answer(d)
        d = out["texte"] = srv.next(15)
        srv.answer(d)
        # a text from user 9, twice (our retransmission): acknowledged twice
        t = msg(15, 9, 0xBEEF, struct.pack(">H", 2) + b"yo")
        srv.send(t)
        out["ack1"] = srv.next(16)
        srv.send(t)
        out["ack2"] = srv.next(16)
        # an invitation from the server
        srv.send(msg(13, SERVER, 0xBEF0, name("kim") + b"\x80" + name("den")))
        out["invite_answer"] = srv.next(14)
        d = out["quitter"] = srv.next(19)
        srv.answer(d, b"\x00")
        d = out["deco"] = srv.next(21)
        srv.answer(d, b"\x00")

    join = srv.run(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ROOMS) as cl:
        cl.login("leo")
        assert cl.user_id() == 7
        assert cl.create_room("salle", chinwag.RoomMode.CENTRALISED, 4) == 9
        cl.invite("kim")
        cl.send_message("hi")
        ev = event(cl, chinwag.EventKind.MESSAGE, 3)
        assert ev.text == "yo"
        ev = event(cl, chinwag.EventKind.ROOM_INVITATION, 3)
        assert (ev.peer, ev.text, ev.room_mode) == ("kim", "den", chinwag.RoomMode.DECENTRALISED)
        cl.answer_invitation("den", False)
        assert cl.next_event(0.3) is None  # the retransmitted text: one event
        cl.leave_room()
    join()
    d1, d2, gap = out["conn"]
    assert d1 == d2 and parse(d1)[:2] == (1, 0) and parse(d1)[3] == b"leo#"
    assert gap >= 0.05, gap  # T = 100 ms between sends
    # right after registration, a keep-alive: CONNEXION with id 7, empty
    assert srv.keepalives and srv.keepalives[0][:2] == b"\x08\x07", srv.keepalives
    assert len(srv.keepalives[0]) == 4
    assert parse(out["creer"])[:2] == (3, 7)
    assert parse(out["creer"])[3] == b"\x00salle#\x04"
    k, u, s, body = parse(out["inviter"])
    assert (k, u, body) == (11, 7, b"kim"), out["inviter"]  # USER_NAME, as drawn
    assert parse(out["texte"])[:2] == (15, 7)
    assert parse(out["texte"])[3] == b"\x00\x02hi"
    assert out["ack1"] == msg(16, 7, 0xBEEF) == out["ack2"]
    assert out["invite_answer"] == msg(14, 7, 0xBEF0, b"\x80")  # refuse: bit 1
    assert parse(out["quitter"])[:2] == (19, 7) and parse(out["quitter"])[3] == b""
    assert parse(out["deco"])[:2] == (21, 7) and parse(out["deco"])[3] == b""


def test_the_library_as_a_decentralised_room_peer() -> None:
    """Seed 003 4.3.15 case 2: in a decentralised room each client sends its
    text to every other member at the address the access answer listed,
    and whoever receives a text acknowledges it (REPONSE_TEXTE)."""
    srv, ann = FakeRooms(), udp(3.0)
    ann_port = ann.getsockname()[1]
    out: Dict[str, Any] = {}

    def script() -> None:
        srv.answer(srv.next(1), b"\x00\x21")
        out["lib"] = srv.src
        d = srv.next(7)  # DEMANDE_ACCES: decentralised, granted, ann
        out["acces"] = parse(d)[3]
        srv.answer(d, b"\x80\x01" + socket.inet_aton("127.0.0.1")
                   + struct.pack(">H", ann_port) + name("ann"))
        # before its own text the library asks again who is in p2p (the
        # seed's 4.3.15 case 2: the addresses come from this answer)
        d = srv.next(7)
        out["acces2"] = parse(d)[3]
        srv.answer(d, b"\x80\x01" + socket.inet_aton("127.0.0.1")
                   + struct.pack(">H", ann_port) + name("ann"))
        srv.answer(srv.next(21), b"\x00")

    join = srv.run(script)
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ROOMS) as cl:
        cl.login("max")
        cl.join_room("p2p")
        assert cl.peers() == ["ann"]
        # ann (ID_USER 12) writes to the library directly
        lib = out["lib"]
        t = msg(15, 12, 0x0101, b"\x00\x05salut")
        ann.sendto(t, lib)
        ack, src = ann.recvfrom(8192)
        assert ack == msg(16, 0x21, 0x0101) and src == lib, ack
        ev = event(cl, chinwag.EventKind.MESSAGE, 3)
        assert (ev.peer, ev.text) == ("ann", "salut")
        # the library writes to ann directly; ann acknowledges the second copy
        done = threading.Event()

        def ann_side() -> None:
            d1, src = ann.recvfrom(8192)
            d2, _ = ann.recvfrom(8192)
            out["texts"] = (d1, d2)
            ann.sendto(msg(16, 12, parse(d1)[2]), src)
            done.set()

        th2 = threading.Thread(target=ann_side, daemon=True)
        th2.start()
        cl.send_message("re")
        th2.join(5)
        assert done.is_set()
    join()
    ann.close()
    assert out["acces"] == b"p2p#" == out["acces2"]
    d1, d2 = out["texts"]
    assert d1 == d2 and parse(d1)[:2] == (15, 0x21) and parse(d1)[3] == b"\x00\x02re"


def test_the_library_reads_every_refusal_status() -> None:
    """REPONSE_CONNEXION 01 and 10, REPONSE_CREER 01/10/11, access and
    change answers 01/10, QUITTER 1, each as the error it means."""
    srv = FakeRooms()
    answers = [
        (1, b"\x40\x00"), (1, b"\x80\x00"), (1, b"\x00\x03"),
        (3, b"\x40\x00"), (3, b"\x80\x00"), (3, b"\xc0\x00"),
        (7, b"\x20"), (7, b"\x40"), (17, b"\x20"), (17, b"\x40"),
        (19, b"\x80"), (21, b"\x00"),
    ]

    def script() -> None:
        for kind, body in answers:
            srv.answer(srv.next(kind), body)

    join = srv.run(script)
    for _ in range(2):  # invalid, then taken
        with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ROOMS) as cl:
            try:
                cl.login("ivy")
                raise AssertionError("a refused registration was accepted")
            except chinwag.LoginRefused:
                pass
    with chinwag.Client("127.0.0.1", srv.port, chinwag.Dialect.ROOMS) as cl:
        cl.login("ivy")
        for err in (chinwag.ArgumentError, chinwag.RoomExists, chinwag.ArgumentError):
            try:
                cl.create_room("r", chinwag.RoomMode.CENTRALISED, 2)
                raise AssertionError("a refused creation succeeded")
            except err:
                pass
        for call in (cl.join_room, cl.change_room):
            for err2 in (chinwag.NoSuchRoom, chinwag.RoomFull):
                try:
                    call("r")
                    raise AssertionError("a refused access succeeded")
                except err2:
                    pass
        try:
            cl.leave_room()
            raise AssertionError("QUITTER 1 succeeded")
        except chinwag.NotInRoom:
            pass
    join()
