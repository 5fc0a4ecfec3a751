#!/usr/bin/env python3
"""echo_bot.py - a chatos bot built on chinwag.py.

    python3 echo_bot.py HOST PORT LOGIN

It answers each private message with "echo: <text>", accepts every
private connection, reads it to the end and answers with the 64-bit
FNV-1a digest of what it received (8 bytes, big-endian), and leaves when
a private message says "quit". Prints "ready" once logged in.
"""

import sys

import chinwag

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = (1 << 64) - 1


def fnv1a(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def drain(stream):
    """Read the peer's bytes to the end and answer with their digest."""
    digest, total = FNV_OFFSET, 0
    with stream:
        while True:
            chunk = stream.read(65536, timeout=20)
            if not chunk:
                break
            digest = fnv1a(chunk, digest)
            total += len(chunk)
        stream.write(digest.to_bytes(8, "big"))
        stream.shutdown_write()
    print("stream from %s: %d bytes fnv1a64 %016x" % (stream.peer, total, digest), flush=True)


def main():
    host, port, login = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with chinwag.Client(host, port) as client:
        try:
            client.login(login)
        except chinwag.ChinwagError as e:
            print("login failed: %s" % e, file=sys.stderr)
            return 1
        print("ready as %s (libchinwag %s)" % (client.login_name, chinwag.version()), flush=True)
        for ev in client.events(timeout=30):
            if ev.kind == chinwag.EventKind.PRIVATE_MESSAGE:
                if ev.text == "quit":
                    print("bye", flush=True)
                    return 0
                client.send_private(ev.peer, "echo: " + ev.text)
            elif ev.kind == chinwag.EventKind.PRIVATE_REQUEST:
                client.accept_private(ev.peer)
            elif ev.kind == chinwag.EventKind.PRIVATE_ESTABLISHED:
                drain(ev.stream)
            elif ev.kind in (chinwag.EventKind.ERROR, chinwag.EventKind.DISCONNECTED):
                print("disconnected: %s" % ev.text, file=sys.stderr)
                return 1
    print("no event for 30 s, leaving", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
