"""The package against a real chinwagd: errors by class, context managers,
the event descriptor with select and asyncio, Ctrl-C while waiting, log
lines, and the stored times of accounts messages."""

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import pytest

from conftest import ROOT, chinwag, port, unique


def test_every_result_code_maps_to_an_exception_class() -> None:
    for code in chinwag.Result:
        if code == chinwag.Result.OK:
            continue
        cls = chinwag.error_class(code)
        assert issubclass(cls, chinwag.ChinwagError)
        assert cls is not chinwag.ChinwagError, code
    assert chinwag.error_class(12345) is chinwag.ChinwagError
    e = chinwag.error_class(chinwag.Result.TOO_LONG)(chinwag.Result.TOO_LONG, "x")
    assert isinstance(e, chinwag.ArgumentError) and e.code == chinwag.Result.TOO_LONG


def test_a_failed_connect_raises_and_leaves_no_noise_behind() -> None:
    # Garbage collecting the half-made Client must not print "Exception
    # ignored in Client.__del__" on the application's stderr.
    ignored = []
    old = sys.unraisablehook
    sys.unraisablehook = ignored.append
    try:
        with pytest.raises(chinwag.ArgumentError):
            chinwag.Client("127.0.0.1", 1, 9)  # no such dialect
        with pytest.raises(chinwag.ArgumentError):
            chinwag.Client("127.0.0.1\0", 1)
        import gc
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert [str(u.exc_value) for u in ignored] == []


def test_a_text_with_a_nul_is_refused_not_cut(chatos: int, name: str) -> None:
    # C strings end at NUL: "hi\0there" would go out as "hi" without a word.
    with chinwag.Client("127.0.0.1", chatos) as c:
        with pytest.raises(chinwag.ArgumentError) as info:
            c.login(name + "\0x")
        assert info.value.code == chinwag.Result.INVALID_ARGUMENT
        assert c.login_name is None
        c.login(name)
        with pytest.raises(chinwag.ArgumentError):
            c.send_message("hi\0there")
        with pytest.raises(chinwag.ArgumentError):
            c.send_private(name, b"bytes\0too")
        c.send_message("whole")  # chatos echoes global messages to the sender
        ev = c.next_event(10)
        assert ev is not None and ev.text == "whole"


def test_a_refused_login_raises_login_refused(chatos: int, name: str) -> None:
    with chinwag.Client("127.0.0.1", chatos) as a, chinwag.Client("127.0.0.1", chatos) as b:
        a.login(name)
        with pytest.raises(chinwag.LoginRefused) as info:
            b.login(name)
        assert info.value.code == chinwag.Result.LOGIN_REFUSED
        with pytest.raises(chinwag.Unsupported):
            a.register("x@example.org", "x", "password1")
    with pytest.raises(chinwag.Closed):
        a.send_message("after the block")


def test_the_event_descriptor_works_with_select(chatos: int, name: str) -> None:
    with chinwag.Client("127.0.0.1", chatos) as c:
        c.login(name)
        assert select.select([c], [], [], 0)[0] == []
        c.send_message("echo me")  # chatos echoes global messages to the sender
        assert select.select([c], [], [], 10)[0] == [c]
        ev = c.next_event(0)
        assert ev is not None and ev.kind == chinwag.EventKind.MESSAGE and ev.text == "echo me"
        assert select.select([c], [], [], 0)[0] == []
        assert c.next_event(0.05) is None


def test_asyncio_awaits_events_on_the_descriptor(chatos: int) -> None:
    async def main() -> list:
        loop = asyncio.get_running_loop()
        a_name, b_name = unique("aa"), unique("ab")
        async with chinwag.Client("127.0.0.1", chatos) as a, \
                chinwag.Client("127.0.0.1", chatos) as b:
            a.login(a_name)
            b.login(b_name)
            assert await a.next_event_async(timeout=0.05) is None
            got = []
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = loop.create_task(ticker())
            waiter = loop.create_task(a.next_event_async(timeout=10))
            await asyncio.sleep(0.1)  # the loop runs while a waits
            b.send_private(a_name, "hello async")
            ev = await waiter
            t.cancel()
            got.append((ev.kind, ev.peer, ev.text))
            assert ticks >= 5, "the event loop was not blocked"
            a.close()
            with pytest.raises(chinwag.Closed):
                await a.next_event_async()
            return got

    got = asyncio.run(main())
    assert got[0][0] == chinwag.EventKind.PRIVATE_MESSAGE and got[0][2] == "hello async"


def test_ctrl_c_interrupts_a_wait_for_events(chatos: int) -> None:
    _interrupted(
        "c = chinwag.Client('127.0.0.1', %d)\n"
        "c.login(%r)\n"
        "try:\n"
        "    print('waiting', flush=True)\n"
        "    c.next_event()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    c.free()\n"
        % (chatos, unique("int")))


def _interrupted(script: str) -> None:
    """Run ``script`` in a Python of its own; once it prints ``waiting``,
    press Ctrl-C (SIGINT): it must print ``interrupted`` within 10 s.
    Python leaves SIGINT alone when it starts ignored (as in a background
    job); a terminal's Ctrl-C reaches its default handler, so set that."""
    prelude = "import signal, chinwag\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    p = subprocess.Popen([sys.executable, "-c", prelude + script], stdout=subprocess.PIPE,
                         env=env, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "waiting"
        # Most likely inside the wait by then (the point); a signal that
        # comes before it still lands in the try and is answered the same.
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=10)
    finally:
        p.kill()
    assert out.strip() == "interrupted"
    assert p.returncode == 0


def test_ctrl_c_interrupts_a_stream_read_without_time_out(chatos: int) -> None:
    # The library retries a read a signal interrupts (a signal must not end
    # a stream), so the package waits in slices for Python to see Ctrl-C.
    a, b = unique("sa"), unique("sb")
    _interrupted(
        "a = chinwag.Client('127.0.0.1', %d); a.login(%r)\n"
        "b = chinwag.Client('127.0.0.1', %d); b.login(%r)\n"
        "a.request_private(%r)\n"
        "for ev in b.events(10):\n"
        "    if ev.kind == chinwag.EventKind.PRIVATE_REQUEST:\n"
        "        b.accept_private(ev.peer)\n"
        "    elif ev.kind == chinwag.EventKind.PRIVATE_ESTABLISHED:\n"
        "        held = ev.stream\n"
        "        break\n"
        "for ev in a.events(10):\n"
        "    if ev.kind == chinwag.EventKind.PRIVATE_ESTABLISHED:\n"
        "        s = ev.stream\n"
        "        break\n"
        "try:\n"
        "    print('waiting', flush=True)\n"
        "    s.read()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        % (chatos, a, chatos, b, b))


def test_ctrl_c_interrupts_a_call_receive_without_time_out() -> None:
    babel = port("babel")
    a, b = unique("ca"), unique("cb")
    _interrupted(
        "B = chinwag.Dialect.BABEL\n"
        "a = chinwag.Client('127.0.0.1', %d, B); a.login(%r)\n"
        "b = chinwag.Client('127.0.0.1', %d, B); b.login(%r)\n"
        "a.place_call(%r, 0)\n"
        "for ev in b.events(10):\n"
        "    if ev.kind == chinwag.EventKind.CALL_INCOMING:\n"
        "        b.accept_call(ev.peer)\n"
        "    elif ev.kind == chinwag.EventKind.CALL_ESTABLISHED:\n"
        "        held = ev.call\n"
        "        break\n"
        "for ev in a.events(10):\n"
        "    if ev.kind == chinwag.EventKind.CALL_ESTABLISHED:\n"
        "        call = ev.call\n"
        "        break\n"
        "try:\n"
        "    print('waiting', flush=True)\n"
        "    call.recv()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        % (babel, a, babel, b, b))


def _logged_in_pair(at: int, dialect: chinwag.Dialect) -> Tuple[chinwag.Client, chinwag.Client]:
    """Two clients of ``dialect`` on port ``at``, logged in."""
    pair = (chinwag.Client("127.0.0.1", at, dialect), chinwag.Client("127.0.0.1", at, dialect))
    for c in pair:
        c.login(unique("tp"))
    return pair


def _both_ends(a: chinwag.Client, b: chinwag.Client, ask: chinwag.EventKind,
               answer: Callable[[chinwag.Client, str], None],
               done: chinwag.EventKind) -> List[chinwag.Event]:
    """b answers the ``ask`` event a's request brought; then the ``done``
    event on each side: [a's, b's]."""
    ends: List[chinwag.Event] = []
    for c in (b, a):
        for ev in c.events(10):
            if ev.kind == ask:
                answer(c, ev.peer or "")
            elif ev.kind == done:
                ends.insert(0, ev)
                break
    assert len(ends) == 2
    return ends


def test_closing_what_another_thread_waits_in_frees_it_only_once_that_thread_is_out(
        chatos: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The C API forbids freeing a stream or call while another thread is
    # inside a call on it (the memory goes under that thread's feet). Every
    # entry point below is watched: no free while a wait on that handle runs.
    inside: Dict[int, int] = {}
    lock = threading.Lock()
    bad: List[str] = []

    def watch(name: str) -> None:
        real = getattr(chinwag.lib, name)

        def wrapper(h: int, *args: Any) -> Any:
            with lock:
                inside[h] = inside.get(h, 0) + 1
            try:
                return real(h, *args)
            finally:
                with lock:
                    inside[h] -= 1
        monkeypatch.setattr(chinwag.lib, name, wrapper)

    def watch_free(name: str) -> None:
        real = getattr(chinwag.lib, name)

        def wrapper(h: int) -> None:
            with lock:
                if inside.get(h):
                    bad.append(name)
            real(h)
        monkeypatch.setattr(chinwag.lib, name, wrapper)

    for name in ("cw_stream_read", "cw_call_recv_voice"):
        watch(name)
    for name in ("cw_stream_free", "cw_call_free"):
        watch_free(name)

    def closed_under(wait: Callable[[], object], handle: int, close: Callable[[], None]) -> None:
        ended: List[str] = []

        def run() -> None:
            try:
                ended.append(repr(wait()))
            except chinwag.Closed:
                ended.append("Closed")
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 10
        while not inside.get(handle):  # the wait is inside the library
            assert time.monotonic() < deadline
            time.sleep(0.01)
        close()
        t.join(10)
        assert not t.is_alive() and ended in (["b''"], ["Closed"]), ended

    K = chinwag.EventKind
    for at, dialect in ((chatos, chinwag.Dialect.CHATOS), (port("babel"), chinwag.Dialect.BABEL)):
        a, b = _logged_in_pair(at, dialect)
        chatting = dialect == chinwag.Dialect.CHATOS
        if chatting:
            a.request_private(b.login_name or "")
            ends = _both_ends(a, b, K.PRIVATE_REQUEST, chinwag.Client.accept_private,
                              K.PRIVATE_ESTABLISHED)
        else:
            a.place_call(b.login_name or "", 0)
            ends = _both_ends(a, b, K.CALL_INCOMING, chinwag.Client.accept_call,
                              K.CALL_ESTABLISHED)
        mine, theirs = [e.stream if chatting else e.call for e in ends]
        assert mine is not None and theirs is not None
        wait = mine.read if isinstance(mine, chinwag.Stream) else mine.recv
        closed_under(wait, mine._h or 0, mine.close)
        theirs.close()
        a.free()
        b.free()
    assert bad == []


def test_freeing_a_client_another_thread_waits_for_events_in_ends_that_wait(chatos: int) -> None:
    c = chinwag.Client("127.0.0.1", chatos)
    c.login(unique("tw"))
    ended: List[str] = []

    def run() -> None:
        try:
            ended.append(repr(c.next_event()))
        except chinwag.Closed:
            ended.append("Closed")
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    c.free()
    t.join(10)
    assert not t.is_alive() and ended == ["Closed"], ended


def test_log_lines_reach_the_queue_and_logging(chatos: int, caplog: pytest.LogCaptureFixture) -> None:
    chinwag.set_log_level(chinwag.LogLevel.INFO)
    assert chinwag.log_level() == chinwag.LogLevel.INFO
    while chinwag.next_log_line(0) is not None:
        pass
    with chinwag.Client("127.0.0.1", chatos):
        pass
    assert select.select([chinwag.log_fileno()], [], [], 10)[0]
    line = chinwag.next_log_line(5)
    assert line is not None
    assert line.level == chinwag.LogLevel.INFO and line.target == "chinwag::chatos"
    assert line.text.startswith("connected to 127.0.0.1:%d" % chatos)
    with chinwag.Client("127.0.0.1", chatos):
        pass
    with caplog.at_level(logging.INFO):
        deadline = time.monotonic() + 10
        while not any("connected to" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            select.select([chinwag.log_fileno()], [], [], 1)
            chinwag.forward_logs()
    rec = [r for r in caplog.records if "connected to" in r.getMessage()][0]
    assert rec.name == "chinwag.chatos" and rec.levelno == logging.INFO
    chinwag.set_log_level(chinwag.LogLevel.OFF)


def test_accounts_messages_and_history_carry_stored_times(accounts: int) -> None:
    al, bo = unique("al"), unique("bo")
    before = int(time.time())
    with chinwag.Client("127.0.0.1", accounts, chinwag.Dialect.ACCOUNTS) as a, \
            chinwag.Client("127.0.0.1", accounts, chinwag.Dialect.ACCOUNTS, stamps=False) as b:
        assert a.features == chinwag.ACCOUNTS_STAMPS and b.features == 0
        a.register(al + "@example.org", al, "correct horse")
        b.register(bo + "@example.org", bo, "correct horse")
        a.login_password(al + "@example.org", "correct horse")
        b.login_password(bo + "@example.org", "correct horse")
        a.request_friend(bo)
        deadline = time.monotonic() + 10
        while True:
            try:
                b.accept_friend(al)
                break
            except chinwag.NoSuchRequest:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        deadline = time.monotonic() + 10
        while True:
            try:
                b.send_to_friend(al, "dated")
                break
            except chinwag.MessageFailed:  # the friendship is still being stored
                assert time.monotonic() < deadline
                time.sleep(0.02)
        ev = next(e for e in a.events(timeout=10) if e.kind == chinwag.EventKind.PRIVATE_MESSAGE)
        assert ev.text == "dated"
        assert ev.time is not None and before <= ev.time <= time.time()
        assert ev.when is not None and ev.when.tzinfo is not None
        (entry,) = a.history(bo)
        assert entry.text == "dated" and entry.time == ev.time
        (plain,) = b.history(al)
        assert plain.time is None and plain.when is None
