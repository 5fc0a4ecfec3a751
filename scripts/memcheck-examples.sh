#!/bin/sh
# Run the C examples under valgrind memcheck against a local chinwagd and
# fail on any memory error or definite leak, in the examples or in
# libchinwag itself (valgrind sees the whole process, Rust included).
#
#   scripts/memcheck-examples.sh
#
# Uses CARGO_TARGET_DIR when set (default: target). Needs cc, valgrind.
set -eu
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PORT:-$((20000 + $$ % 20000))}
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build -q -p chinwag -p chinwagd
LIB="$TARGET/debug"
for ex in chat sendfile; do
    cc -std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude "examples/c/$ex.c" \
        -L"$LIB" -Wl,-rpath,"$(cd "$LIB" && pwd)" -lchinwag -lpthread -o "$WORK/$ex"
done

"$LIB/chinwagd" --bind 127.0.0.1 --chatos-port "$PORT" --babel-port 0 --accounts-port 0 --rooms-port 0 --db :memory: >"$WORK/server.log" 2>&1 &
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

if [ "$status" -eq 0 ]; then
    echo "memcheck: no errors, no definite leaks"
else
    echo "memcheck: FAILED (see valgrind output above)" >&2
fi
exit "$status"
