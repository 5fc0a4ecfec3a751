#!/usr/bin/env python3
"""rooms_chat.py - three rooms users on one chinwag server, built on chinwag.py.

    python3 rooms_chat.py HOST PORT NAME_A NAME_B NAME_C

PORT is the server's rooms port (UDP). The script logs the three users in
(a duplicate name is refused), exchanges a text in the public room,
NAME_A creates a centralised room and invites NAME_B (who accepts) and
NAME_C (who refuses); NAME_A leaves, so the server closes the room
around NAME_B; then NAME_A creates a decentralised room that NAME_C
joins, and the two exchange texts peer to peer. It prints one line
per step and exits 0 when everything matched.
"""

import sys

import chinwag

ROOMS = chinwag.Dialect.ROOMS
K = chinwag.EventKind
Mode = chinwag.RoomMode


def wait_for(client, kind, timeout=5):
    """The next event of `kind`, skipping others."""
    for ev in client.events(timeout=timeout):
        if ev.kind == kind:
            return ev
        if ev.kind in (K.ERROR, K.DISCONNECTED):
            raise SystemExit("connection lost: %s" % ev.text)
    raise SystemExit("no %s event within %s s" % (kind.name, timeout))


def check(cond, what):
    if not cond:
        raise SystemExit("mismatch: %s" % what)


def main():
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    host, port, na, nb, nc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    with chinwag.Client(host, port, ROOMS) as a, chinwag.Client(host, port, ROOMS) as b, \
            chinwag.Client(host, port, ROOMS) as c:
        a.login(na)
        try:
            b.login(na)
            raise SystemExit("duplicate name accepted")
        except chinwag.ChinwagError as e:
            check(e.code == chinwag.Result.LOGIN_REFUSED, e.code)
            print("duplicate refused: %s" % e.message)
        b.login(nb)
        c.login(nc)
        print("ids: %s=%d %s=%d %s=%d" % (na, a.user_id(), nb, b.user_id(), nc, c.user_id()))
        check(sorted(a.members()) == sorted([na, nb, nc]), a.members())
        check(c.users() == sorted([na, nb, nc]), c.users())

        a.send_message("hello, public room")
        ev = wait_for(b, K.MESSAGE)
        # The protocol names the author by id only: "#<id>" unless learned.
        check(ev.text == "hello, public room" and ev.peer == "#%d" % a.user_id(), ev)
        wait_for(c, K.MESSAGE)
        print("public: %s got %r from %s" % (nb, ev.text, ev.peer))

        a.create_room("club", Mode.CENTRALISED, 3)
        a.invite(nb)
        ev = wait_for(b, K.ROOM_INVITATION)
        check(ev.peer == na and ev.text == "club" and ev.room_mode == Mode.CENTRALISED, ev)
        b.answer_invitation("club", accept=True)
        a.invite(nc)
        ev = wait_for(c, K.ROOM_INVITATION)
        c.answer_invitation(ev.text, accept=False)
        check(sorted(a.members("club")) == sorted([na, nb]), a.members("club"))
        print("invitations: %s accepted, %s refused" % (nb, nc))
        a.send_message("welcome to the club")
        check(wait_for(b, K.MESSAGE).text == "welcome to the club", "club text")
        check(c.next_event(timeout=0.3) is None, "%s is not in the club" % nc)
        print("rooms: %r" % (a.rooms(),))

        a.leave_room()
        # b is alone in the club: the server closes it and moves b back.
        ev = wait_for(b, K.ROOM_CLOSED)
        check(ev.text == "club" and b.current_room() == ("", Mode.CENTRALISED), ev)
        print("closed: %s is back in the public room" % nb)
        a.create_room("den", Mode.DECENTRALISED, 2)
        c.join_room("den")
        check(c.current_room() == ("den", Mode.DECENTRALISED), c.current_room())
        check(c.peers() == [na], c.peers())
        try:
            b.join_room("den")
            raise SystemExit("a full room let a third member in")
        except chinwag.ChinwagError as e:
            check(e.code == chinwag.Result.ROOM_FULL, e.code)
        c.send_message("straight to you")
        check(wait_for(a, K.MESSAGE).text == "straight to you", "peer text")
        a.send_message("and back")
        ev = wait_for(c, K.MESSAGE)
        check(ev.text == "and back" and ev.peer == na, ev)
        print("peer to peer: %s got %r from %s" % (nc, ev.text, ev.peer))
        try:
            a.leave_room()
            a.leave_room()
            raise SystemExit("left the public room")
        except chinwag.ChinwagError as e:
            check(e.code == chinwag.Result.NOT_IN_ROOM, e.code)
    print("ok")


if __name__ == "__main__":
    main()
