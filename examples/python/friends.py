#!/usr/bin/env python3
"""friends.py - two accounts on one chinwag server, built on chinwag.py.

    python3 friends.py HOST PORT PSEUDO_A PSEUDO_B

PORT is the server's accounts port. The script registers both accounts
(password "<pseudo> example password", email "<pseudo>@example.org"), logs
both in, makes them friends, exchanges acknowledged messages, reads the
history back, then places a call and sends one voice packet over UDP to the
address the call signalling gave. It prints one line per step and exits 0
when everything matched.
"""

import socket
import sys

import chinwag

ACCOUNTS = chinwag.Dialect.ACCOUNTS
K = chinwag.EventKind


def wait_for(client, kind, timeout=10):
    """The next event of `kind`, skipping others."""
    for ev in client.events(timeout=timeout):
        if ev.kind == kind:
            return ev
        if ev.kind in (K.ERROR, K.DISCONNECTED):
            raise SystemExit("connection lost: %s" % ev.text)
    raise SystemExit("no %s event within %s s" % (kind.name, timeout))


def account(host, port, pseudo):
    client = chinwag.Client(host, port, ACCOUNTS)
    email, password = pseudo + "@example.org", pseudo + " example password"
    try:
        client.register(email, pseudo, password)
        print("registered %s" % pseudo, flush=True)
    except chinwag.ChinwagError as e:
        if e.code not in (chinwag.Result.EMAIL_TAKEN, chinwag.Result.PSEUDO_TAKEN):
            raise
        print("%s was already registered" % pseudo, flush=True)
    name, account_id = client.login_password(email, password)
    print("logged in as %s (account %d)" % (name, account_id), flush=True)
    return client


def main():
    host, port, a_name, b_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with account(host, port, a_name) as a, account(host, port, b_name) as b:
        # Friends: a asks, b sees the request and accepts, a hears about it.
        if b_name not in a.friends():
            a.request_friend(b_name)
            ev = wait_for(b, K.FRIEND_REQUEST)
            assert ev.peer == a_name, ev
            assert a_name in b.friend_requests()
            b.accept_friend(a_name)
            wait_for(a, K.FRIEND_ACCEPTED)
        assert a.friends() == [b_name] and b.friends() == [a_name]
        print("%s and %s are friends" % (a_name, b_name), flush=True)

        # Messages come back acknowledged; the friend gets an event.
        a.send_to_friend(b_name, "hello from python")
        ev = wait_for(b, K.PRIVATE_MESSAGE)
        print("%s got %r from %s" % (b_name, ev.text, ev.peer), flush=True)
        b.send_to_friend(a_name, "hello back")
        wait_for(a, K.PRIVATE_MESSAGE)
        try:
            a.send_to_friend("nobody-" + a_name, "lost")
            raise SystemExit("a message to a stranger was stored")
        except chinwag.ChinwagError as e:
            assert e.code == chinwag.Result.MESSAGE_FAILED, e

        page = a.history(b_name)
        texts = [entry.text for entry in page[-2:]]
        assert texts == ["hello from python", "hello back"], page
        assert page[-1].sender_id == b.account_id
        print("history: %d messages, last %r" % (len(page), page[-1].text), flush=True)

        # Call signalling; then one voice packet, peer to peer.
        a_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a_udp.bind(("127.0.0.1", 0))
        b_udp.bind(("127.0.0.1", 0))
        b_udp.settimeout(5)
        try:
            a.place_call(b_name, a_udp.getsockname()[1])
            ring = wait_for(b, K.CALL_INCOMING)
            b.answer_call(a_name, b_udp.getsockname()[1], "127.0.0.1")
            ok = wait_for(a, K.CALL_ACCEPTED)
            print("call: %s rings from %s:%d, %s answers at %s:%d"
                  % (ring.peer, ring.address, ring.port, ok.peer, ok.address, ok.port),
                  flush=True)
            a_udp.sendto(chinwag.voice_packet(b"pretend opus"), (ok.address, ok.port))
            packet, _ = b_udp.recvfrom(2048)
            assert chinwag.voice_frame(packet) == b"pretend opus"
            a.hangup_call(b_name)
            wait_for(b, K.CALL_ENDED)
            print("voice packet delivered, call ended", flush=True)
        finally:
            a_udp.close()
            b_udp.close()
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
