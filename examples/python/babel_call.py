#!/usr/bin/env python3
"""babel_call.py - two babel users on one chinwag server, built on chinwag.py.

    python3 babel_call.py HOST PORT NAME_A NAME_B

PORT is the server's babel port. The script logs both users in, checks
each sees the other in its contact list, then NAME_A calls NAME_B: NAME_B
accepts, the library opens the peer-to-peer TCP connection, and both send
voice payloads (stand-ins for Opus packets: the library carries the bytes
as they are). NAME_A hangs up and NAME_B sees the call end. Finally a
second call is refused. It prints one line per step and exits 0 when
everything matched.
"""

import sys

import chinwag

BABEL = chinwag.Dialect.BABEL
K = chinwag.EventKind


def wait_for(client, kind, timeout=10):
    """The next event of `kind`, skipping others."""
    for ev in client.events(timeout=timeout):
        if ev.kind == kind:
            return ev
        if ev.kind in (K.ERROR, K.DISCONNECTED):
            raise SystemExit("connection lost: %s" % ev.text)
        if ev.call is not None:
            ev.call.close()
    raise SystemExit("no %s event within %s s" % (kind.name, timeout))


def check(cond, what):
    if not cond:
        raise SystemExit("mismatch: %s" % what)


def main():
    host, port, name_a, name_b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with chinwag.Client(host, port, BABEL) as a, chinwag.Client(host, port, BABEL) as b:
        a.login(name_a)
        b.login(name_b)
        try:
            chinwag.Client(host, port, BABEL).login(name_a)
            raise SystemExit("a duplicate name was accepted")
        except chinwag.ChinwagError as e:
            check(e.code == chinwag.Result.LOGIN_REFUSED, e)
            print("duplicate refused: %s" % e.message, flush=True)
        check(b.contacts() == [name_a], b.contacts())
        check(wait_for(a, K.CONTACT_ADDED).peer == name_b, "contact event")
        check(a.contacts() == [name_b], a.contacts())
        print("contacts: %s sees %s" % (name_a, ", ".join(a.contacts())), flush=True)

        a.place_call(name_b, 0)
        ring = wait_for(b, K.CALL_INCOMING)
        print("call: %s rings from %s:%d" % (ring.peer, ring.address, ring.port), flush=True)
        b.accept_call(ring.peer)
        with wait_for(a, K.CALL_ESTABLISHED).call as ca, wait_for(b, K.CALL_ESTABLISHED).call as cb:
            for i in range(10):
                ca.send(bytes([i]) * 120)
            cb.send(b"hello back")
            got = [cb.recv(timeout=10) for _ in range(10)]
            check(got == [bytes([i]) * 120 for i in range(10)], "voice a -> b")
            check(ca.recv(timeout=10) == b"hello back", "voice b -> a")
            print("voice: 10 payloads one way, 1 the other", flush=True)
            ca.hangup()
            ended = wait_for(b, K.CALL_ENDED)
            check(ended.peer == name_a and ended.result == chinwag.Result.CLOSED, ended)
            try:
                cb.recv(timeout=10)
                raise SystemExit("voice after hang-up")
            except chinwag.Closed:
                pass
            print("hung up: %s saw the call end" % name_b, flush=True)

        a.place_call(name_b, 0)
        wait_for(b, K.CALL_INCOMING)
        b.refuse_call(name_a)
        failed = wait_for(a, K.CALL_FAILED)
        print("refused: %s" % failed.text, flush=True)
        a.place_call("nobody-here", 0)
        print("offline: %s" % wait_for(a, K.CALL_FAILED).text, flush=True)
    print("ok")


if __name__ == "__main__":
    main()
