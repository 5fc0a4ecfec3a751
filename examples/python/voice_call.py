"""voice_call.py - one side of a voice call whose audio libchinwag carries:
PCM from a WAV file goes in, what the peer says comes out into another.

    python3 voice_call.py HOST PORT babel NAME answer IN.wav OUT.wav [ADV_PORT]
    python3 voice_call.py HOST PORT babel NAME call PEER IN.wav OUT.wav [ADV_PORT]
    python3 voice_call.py HOST PORT accounts EMAIL PASSWORD answer IN.wav OUT.wav [ADV_PORT]
    python3 voice_call.py HOST PORT accounts EMAIL PASSWORD call PEER IN.wav OUT.wav [ADV_PORT]

The same program as examples/c/voice_call.c: babel logs in as NAME,
accounts to an existing account (PEER a friend). The answering side prints
"ready" and takes the first call; the caller rings PEER. Every 20 ms each
side pushes the next 20 ms of IN.wav (16-bit, 48 kHz, mono or stereo) and
pulls 20 ms, always full. The caller hangs up a second after its input
ends; the answerer goes on until the call is over. Both write what they
pulled to OUT.wav and print the call's statistics. ADV_PORT: the port the
signalling names instead of the call's own (a forwarder in front).
"""

import array
import sys
import time
import wave

import chinwag

RING_TIMEOUT = 30.0
TAIL_TICKS = 50      # caller: 1 s after its input
LINGER_TICKS = 500   # answerer: at most 10 s after its input


def wait_for(client, kind, peer=None, timeout=RING_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        ev = client.next_event(max(0.0, deadline - time.monotonic()))
        if ev is None:
            raise SystemExit("nothing within the time limit while waiting for %s" % kind.name)
        if ev.kind == kind and (peer is None or ev.peer == peer):
            return ev
        if ev.kind in (chinwag.EventKind.CALL_FAILED, chinwag.EventKind.ERROR,
                       chinwag.EventKind.DISCONNECTED):
            raise SystemExit("%s: %s" % (ev.kind.name, ev.text))
        if ev.call is not None:
            ev.call.close()


def read_wav(path, channels):
    """48 kHz 16-bit PCM as `channels`-channel samples (array('h'))."""
    with wave.open(path, "rb") as w:
        if w.getframerate() != chinwag.SAMPLE_RATE or w.getsampwidth() != 2:
            raise SystemExit("%s: need 16-bit PCM at 48 kHz" % path)
        have = w.getnchannels()
        pcm = array.array("h")
        pcm.frombytes(w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        pcm.byteswap()
    if have == channels:
        return pcm
    if have == 1:  # mono to stereo
        out = array.array("h", bytes(4 * len(pcm)))
        out[0::2] = pcm
        out[1::2] = pcm
        return out
    # stereo to mono
    return array.array("h", ((a + b) // 2 for a, b in zip(pcm[0::2], pcm[1::2])))


def write_wav(path, pcm, channels):
    data = array.array("h", pcm)
    if sys.byteorder != "little":
        data.byteswap()
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(chinwag.SAMPLE_RATE)
        w.writeframes(data.tobytes())


def talk(client, call, calling, pcm, out_path):
    ch = call.channels
    step = chinwag.FRAME_SAMPLES * ch
    heard = array.array("h")
    sent, after = 0, 0
    next_tick = time.monotonic()
    while True:
        if sent < len(pcm):
            chunk = pcm[sent:sent + step]
            if len(chunk) < step:
                chunk.extend([0] * (step - len(chunk)))
            try:
                call.send_pcm(chunk)
            except chinwag.Closed:
                break
            sent += step
        else:
            after += 1
            if after >= (TAIL_TICKS if calling else LINGER_TICKS):
                break
        try:
            heard.extend(call.recv_pcm(chinwag.FRAME_SAMPLES))
        except chinwag.Closed:
            break  # over, and everything received was played
        while True:
            ev = client.next_event(0)
            if ev is None:
                break
            if ev.kind == chinwag.EventKind.CALL_ENDED:
                print("the peer hung up", flush=True)
        next_tick += 0.020
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    s = call.stats()
    print("stats sent=%d received=%d lost=%d late=%d concealed=%d fec=%d delay=%.1fms "
          "jitter=%.1fms rtt=%.1fms" % (s.packets_sent, s.packets_received, s.packets_lost,
                                        s.packets_late, s.frames_concealed,
                                        s.frames_concealed_fec, s.playout_delay_ms,
                                        s.jitter_ms, s.rtt_ms), flush=True)
    if calling:
        call.hangup()
        print("hung up", flush=True)
    write_wav(out_path, heard, ch)
    print("wrote %d frames of %d channel(s) to %s" % (len(heard) // ch, ch, out_path),
          flush=True)


def main(argv):
    usage = ("usage: voice_call.py HOST PORT babel NAME (answer | call PEER) IN OUT [ADV_PORT]\n"
             "       voice_call.py HOST PORT accounts EMAIL PASSWORD (answer | call PEER) "
             "IN OUT [ADV_PORT]")
    if len(argv) < 7 or argv[3] not in ("babel", "accounts"):
        raise SystemExit(usage)
    host, port, dialect = argv[1], int(argv[2]), argv[3]
    i = 5 if dialect == "babel" else 6
    peer = None
    if i < len(argv) and argv[i] == "call" and i + 1 < len(argv):
        peer = argv[i + 1]
        i += 1
    elif i >= len(argv) or argv[i] != "answer":
        raise SystemExit(usage)
    rest = argv[i + 1:]
    if len(rest) not in (2, 3):
        raise SystemExit(usage)
    in_path, out_path = rest[0], rest[1]
    adv = int(rest[2]) if len(rest) == 3 else 0

    kind = chinwag.Dialect.BABEL if dialect == "babel" else chinwag.Dialect.ACCOUNTS
    with chinwag.Client(host, port, kind) as client:
        if dialect == "babel":
            client.login(argv[4])
        else:
            client.login_password(argv[4], argv[5])
        if adv:
            client.set_voice_ports(0, adv)
        print("logged in", flush=True)
        if peer:
            if dialect == "babel":
                wait_for(client, chinwag.EventKind.CONTACT_ADDED, peer)
            client.place_voice_call(peer)
            print("ringing %s" % peer, flush=True)
            who = peer
        else:
            print("ready", flush=True)
            ring = wait_for(client, chinwag.EventKind.CALL_INCOMING)
            who = ring.peer
            client.answer_voice_call(who)
        ev = wait_for(client, chinwag.EventKind.CALL_ESTABLISHED, who)
        with ev.call as call:
            print("call established with %s, %d channel(s)" % (call.peer, call.channels),
                  flush=True)
            talk(client, call, peer is not None, read_wav(in_path, call.channels), out_path)


if __name__ == "__main__":
    main(sys.argv)
