"""Byte-level helpers for the seed conformance tests (test_seed_*.py).

These tests play third-party programs written from the seed texts alone
(/work/shared/seeds, summarised in each test's docstring): they build and
check every byte with ``struct`` and never use chinwag's codecs. Every
socket is on 127.0.0.1 with a deadline, so a test stops by itself."""

import socket
import threading
import time
from typing import Any, Callable, List, Optional

DEADLINE = 5.0


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    s.settimeout(DEADLINE)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly n bytes, or AssertionError if the peer closes first."""
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "peer closed after %d of %d bytes: %r" % (len(out), n, out)
        out += chunk
    return out


def silent(s: socket.socket, wait: float = 0.3) -> bytes:
    """What arrives within ``wait`` seconds (b"" when nothing does); used
    to check that the server sent nothing. The socket's timeout is restored."""
    old = s.gettimeout()
    s.settimeout(wait)
    try:
        return s.recv(4096)
    except socket.timeout:
        return b""
    finally:
        s.settimeout(old)


def closed_by_peer(s: socket.socket, timeout: float = DEADLINE) -> bool:
    """True once the peer has closed (EOF or reset) within ``timeout``;
    any bytes that arrive first are skipped."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def poll(cond: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class FakeServer:
    """A one-port scripted TCP server on 127.0.0.1:0. ``script(conns)`` runs
    on its own thread with a function returning the next accepted
    connection; anything it raises is re-raised by ``join()``."""

    def __init__(self, script: Callable[[Callable[[], socket.socket]], None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(DEADLINE)
        self.port: int = self.sock.getsockname()[1]
        self.error: Optional[BaseException] = None
        self.accepted: List[socket.socket] = []
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _accept(self) -> socket.socket:
        c, _ = self.sock.accept()
        c.settimeout(DEADLINE)
        self.accepted.append(c)
        return c

    def _run(self, script: Callable[[Callable[[], socket.socket]], None]) -> None:
        try:
            script(self._accept)
        except BaseException as e:  # reported by join()
            self.error = e

    def join(self, timeout: float = 3 * DEADLINE) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "fake server script did not finish"
        for c in self.accepted:
            c.close()
        self.sock.close()
        if self.error is not None:
            raise self.error


def event(client: Any, kind: Any, timeout: float = DEADLINE) -> Any:
    """The client's next event, which must be of ``kind``."""
    ev = client.next_event(timeout)
    assert ev is not None and ev.kind == kind, (kind, ev)
    return ev


def udp(timeout: float = DEADLINE) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


__all__ = ["connect", "recv_exact", "silent", "closed_by_peer", "poll", "FakeServer", "udp",
           "event"]
