#!/bin/sh
# Run the C examples under valgrind memcheck against a local chinwagd and
# fail on any memory error or definite leak, in the examples or in
# libchinwag itself (valgrind sees the whole process, Rust included).
#
#   scripts/memcheck-examples.sh
#
# Uses CARGO_TARGET_DIR when set (default: target). Needs cc, valgrind,
# python3 (to write the test tones of voice_call.c).
# chinwagd listens on PORT (chatos), BABEL_PORT (PORT+1) and ROOMS_PORT
# (PORT+2, UDP); each may be set in the environment.
set -eu
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PORT:-$((20000 + $$ % 20000))}
BABEL_PORT=${BABEL_PORT:-$((PORT + 1))}
ROOMS_PORT=${ROOMS_PORT:-$((PORT + 2))}
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build -q -p chinwag -p chinwagd
LIB="$TARGET/debug"
for ex in chat sendfile babel_call rooms_chat voice_call; do
    cc -std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude "examples/c/$ex.c" \
        -L"$LIB" -Wl,-rpath,"$(cd "$LIB" && pwd)" -lchinwag -lpthread -o "$WORK/$ex"
done

"$LIB/chinwagd" --bind 127.0.0.1 --chatos-port "$PORT" --babel-port "$BABEL_PORT" --accounts-port 0 --rooms-port "$ROOMS_PORT" --db :memory: >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
sleep 1

VG="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
status=0

echo "== chat.c"
( sleep 2; echo "hello from valgrind"; echo "/msg nobody psst"; sleep 1; echo "/quit" ) |
    timeout 120 $VG "$WORK/chat" 127.0.0.1 "$PORT" vgchat >"$WORK/chat.out" 2>"$WORK/chat.err" || status=1
cat "$WORK/chat.out"; cat "$WORK/chat.err" >&2

echo "== sendfile.c (1 MiB)"
head -c 1048576 /dev/urandom >"$WORK/in.bin"
timeout 180 $VG "$WORK/sendfile" recv 127.0.0.1 "$PORT" vgrecv vgsend "$WORK/out.bin" \
    >"$WORK/recv.out" 2>"$WORK/recv.err" &
RECV=$!
sleep 3
timeout 180 $VG "$WORK/sendfile" send 127.0.0.1 "$PORT" vgsend vgrecv "$WORK/in.bin" \
    >"$WORK/send.out" 2>"$WORK/send.err" || status=1
wait "$RECV" || status=1
cat "$WORK/send.out" "$WORK/recv.out"; cat "$WORK/send.err" "$WORK/recv.err" >&2
cmp -s "$WORK/in.bin" "$WORK/out.bin" || { echo "file differs" >&2; status=1; }

echo "== babel_call.c (50 payloads of 160 bytes)"
timeout 120 $VG "$WORK/babel_call" 127.0.0.1 "$BABEL_PORT" vgann answer \
    >"$WORK/answer.out" 2>"$WORK/answer.err" &
ANSWER=$!
sleep 3
timeout 120 $VG "$WORK/babel_call" 127.0.0.1 "$BABEL_PORT" vgbob call vgann 50 160 \
    >"$WORK/call.out" 2>"$WORK/call.err" || status=1
wait "$ANSWER" || status=1
cat "$WORK/call.out" "$WORK/answer.out"; cat "$WORK/call.err" "$WORK/answer.err" >&2
sent=$(sed -n 's/^sent \(.*\)$/\1/p' "$WORK/call.out")
got=$(sed -n 's/^received \(.*\), pattern OK$/\1/p' "$WORK/answer.out")
[ -n "$sent" ] && [ "$sent" = "$got" ] || { echo "babel payloads differ" >&2; status=1; }

echo "== rooms_chat.c (two clients in one room)"
( sleep 10; echo "hello from vgcara"; sleep 8; echo "/quit" ) |
    timeout 120 $VG "$WORK/rooms_chat" 127.0.0.1 "$ROOMS_PORT" vgcara create vgroom \
    >"$WORK/cara.out" 2>"$WORK/cara.err" &
CARA=$!
sleep 3
( sleep 5; echo "hello from vgdan"; sleep 8 ) |
    timeout 120 $VG "$WORK/rooms_chat" 127.0.0.1 "$ROOMS_PORT" vgdan join vgroom \
    >"$WORK/dan.out" 2>"$WORK/dan.err" || status=1
wait "$CARA" || status=1
cat "$WORK/cara.out" "$WORK/dan.out"; cat "$WORK/cara.err" "$WORK/dan.err" >&2
grep -q "> hello from vgcara" "$WORK/dan.out" || { echo "vgdan missed a text" >&2; status=1; }
grep -q "> hello from vgdan" "$WORK/cara.out" || { echo "vgcara missed a text" >&2; status=1; }

echo "== voice_call.c (a babel call carrying 2 s of tones both ways as PCM)"
python3 - "$WORK" <<'PY'
import math, struct, sys, wave
for name, freqs in (("up", (450, 850, 1250, 1650)), ("down", (3150, 2550, 1950, 550))):
    with wave.open("%s/%s.wav" % (sys.argv[1], name), "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(48000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * f * i / 48000)))
                               for f in freqs for i in range(24000)))
PY
timeout 300 $VG "$WORK/voice_call" 127.0.0.1 "$BABEL_PORT" babel vgvan answer "$WORK/down.wav" "$WORK/van.wav" \
    >"$WORK/van.out" 2>"$WORK/van.err" &
VAN=$!
sleep 3
timeout 300 $VG "$WORK/voice_call" 127.0.0.1 "$BABEL_PORT" babel vgvic call vgvan "$WORK/up.wav" "$WORK/vic.wav" \
    >"$WORK/vic.out" 2>"$WORK/vic.err" || status=1
wait "$VAN" || status=1
cat "$WORK/vic.out" "$WORK/van.out"; cat "$WORK/vic.err" "$WORK/van.err" >&2
grep -q "^wrote" "$WORK/van.out" || { echo "voice_call (answer) wrote nothing" >&2; status=1; }
grep -q "^hung up" "$WORK/vic.out" || { echo "voice_call (call) did not finish" >&2; status=1; }

if [ "$status" -eq 0 ]; then
    echo "memcheck: no errors, no definite leaks"
else
    echo "memcheck: FAILED (see valgrind output above)" >&2
fi
exit "$status"
