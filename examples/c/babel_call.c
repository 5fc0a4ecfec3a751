/*
 * babel_call.c - a babel voice call over libchinwag, one side per process.
 *
 *   babel_call HOST PORT NAME answer                      take the first call
 *   babel_call HOST PORT NAME call PEER [FRAMES [SIZE]]   call PEER
 *
 * Both sides log in as NAME and print the contacts that come and go. The
 * answering side prints "waiting for a call", accepts the first incoming
 * call, receives voice payloads until the caller hangs up, checks that
 * each one carries the test pattern below and prints their count and
 * 64-bit FNV-1a digest. The calling side waits until PEER is online,
 * rings it, and once the call is established sends FRAMES payloads
 * (default 50) of SIZE bytes (default 160), prints the same count and
 * digest, and hangs up. The payloads stand in for Opus packets: the
 * library carries them as they are.
 *
 * Every wait is bounded. Exit status 0 means this side did its part;
 * any failure prints a message on stderr and exits 1 (2: bad usage).
 *
 * Build: cc babel_call.c $(pkg-config --cflags --libs chinwag) -o babel_call
 */
#define _POSIX_C_SOURCE 200809L

#include <chinwag.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGIN_MS 5000
#define CONTACT_MS 10000 /* caller: wait for PEER to be online */
#define RING_MS 30000    /* both: wait for the call to be set up */
#define VOICE_MS 10000   /* answerer: the longest silence within a call */
#define ENDED_MS 5000    /* answerer: wait for CALL_ENDED after the last payload */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Byte j of payload i: depends on both, so a lost, repeated or reordered
 * payload is noticed. */
static uint8_t pattern(unsigned long i, size_t j)
{
    return (uint8_t)((i * 131u + j * 7u + 1u) & 0xffu);
}

static int fail(const char *what, cw_result r)
{
    fprintf(stderr, "%s: %s (%s)\n", what, cw_result_str((int)r), cw_last_error());
    return 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline`, at least 0. */
static int32_t left_ms(long long deadline)
{
    long long left = deadline - now_ms();
    return left > 0 ? (int32_t)left : 0;
}

/*
 * Take events until one of kind `want` (from `peer`, unless NULL) arrives
 * or `deadline` passes. Contact events are printed on the way; a failed
 * call or a lost connection ends the wait. Returns the event (owned by
 * the caller) or NULL after printing why.
 */
static cw_event *wait_for(cw_client *c, cw_event_type want, const char *peer, long long deadline,
                          const char *what)
{
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(c, left_ms(deadline), &ev);
        if (r == CW_TIMEOUT) {
            fprintf(stderr, "%s: nothing within the time limit\n", what);
            return NULL;
        }
        if (r != CW_OK) {
            fail(what, r);
            return NULL;
        }
        cw_event_type kind = cw_event_kind(ev);
        const char *who = cw_event_peer(ev);
        if (kind == want && (peer == NULL || strcmp(who, peer) == 0))
            return ev;
        switch (kind) {
        case CW_EVENT_CONTACT_ADDED:
            printf("contact added: %s\n", who);
            break;
        case CW_EVENT_CONTACT_REMOVED:
            printf("contact removed: %s\n", who);
            break;
        case CW_EVENT_CALL_FAILED:
            fprintf(stderr, "%s: call with %s failed: %s (%s)\n", what, who,
                    cw_event_text(ev), cw_result_str((int)cw_event_result(ev)));
            cw_event_free(ev);
            return NULL;
        case CW_EVENT_ERROR:
        case CW_EVENT_DISCONNECTED:
            fprintf(stderr, "%s: disconnected: %s\n", what, cw_event_text(ev));
            cw_event_free(ev);
            return NULL;
        case CW_EVENT_OVERFLOW:
            printf("%llu events were lost\n", (unsigned long long)cw_event_count(ev));
            break;
        default:
            break;
        }
        cw_event_free(ev);
    }
}

/* Wait for the established call and take it; NULL after printing why. */
static cw_call *take_established(cw_client *c, const char *peer)
{
    cw_event *ev = wait_for(c, CW_EVENT_CALL_ESTABLISHED, peer, now_ms() + RING_MS,
                            "waiting for the call");
    if (!ev)
        return NULL;
    cw_call *call = NULL;
    cw_result r = cw_event_take_call(ev, &call);
    cw_event_free(ev);
    if (r != CW_OK) {
        fail("take call", r);
        return NULL;
    }
    printf("call established with %s\n", cw_call_peer(call));
    return call;
}

static int do_call(cw_client *c, const char *peer, unsigned long frames, size_t size)
{
    /* The contacts online at login arrive as CONTACT_ADDED events too. */
    cw_event *ev = wait_for(c, CW_EVENT_CONTACT_ADDED, peer, now_ms() + CONTACT_MS,
                            "waiting for the peer to be online");
    if (!ev)
        return 1;
    printf("contact added: %s\n", peer);
    cw_event_free(ev);

    /* NULL, 0: listen on a free port of the interface that reaches the server. */
    cw_result r = cw_client_place_call(c, peer, NULL, 0);
    if (r != CW_OK)
        return fail("place call", r);
    printf("ringing %s\n", peer);
    cw_call *call = take_established(c, peer);
    if (!call)
        return 1;

    uint8_t *buf = malloc(size);
    if (!buf) {
        fprintf(stderr, "out of memory\n");
        cw_call_free(call);
        return 1;
    }
    uint64_t digest = FNV_OFFSET;
    int status = 0;
    for (unsigned long i = 0; i < frames; i++) {
        for (size_t j = 0; j < size; j++)
            buf[j] = pattern(i, j);
        r = cw_call_send_voice(call, buf, size);
        if (r != CW_OK) {
            status = fail("send voice", r);
            break;
        }
        digest = fnv1a(digest, buf, size);
    }
    free(buf);
    cw_call_hangup(call); /* the peer gets CW_EVENT_CALL_ENDED after the last payload */
    cw_call_free(call);
    if (status == 0) {
        printf("sent %lu payloads, %llu bytes, fnv1a64 %016llx\n", frames,
               (unsigned long long)frames * size, (unsigned long long)digest);
        printf("hung up\n");
    }
    return status;
}

static int do_answer(cw_client *c)
{
    printf("waiting for a call\n");
    fflush(stdout);
    cw_event *ev = wait_for(c, CW_EVENT_CALL_INCOMING, NULL, now_ms() + RING_MS,
                            "waiting for a call");
    if (!ev)
        return 1;
    char caller[64];
    snprintf(caller, sizeof caller, "%s", cw_event_peer(ev));
    printf("incoming call from %s at %s:%u\n", caller, cw_event_address(ev),
           (unsigned)cw_event_port(ev));
    cw_event_free(ev);
    cw_result r = cw_client_accept_call(c, caller);
    if (r != CW_OK)
        return fail("accept call", r);
    cw_call *call = take_established(c, caller);
    if (!call)
        return 1;

    /* CW_BABEL_MAX_VOICE bytes always hold the next payload. */
    uint8_t *buf = malloc(CW_BABEL_MAX_VOICE);
    if (!buf) {
        fprintf(stderr, "out of memory\n");
        cw_call_free(call);
        return 1;
    }
    uint64_t digest = FNV_OFFSET;
    unsigned long count = 0;
    unsigned long long bytes = 0;
    int status = 0;
    for (;;) {
        size_t got = 0;
        r = cw_call_recv_voice(call, buf, CW_BABEL_MAX_VOICE, VOICE_MS, &got);
        if (r == CW_CLOSED)
            break; /* over, and every payload taken */
        if (r != CW_OK) {
            status = fail("receive voice", r);
            break;
        }
        for (size_t j = 0; j < got; j++) {
            if (buf[j] != pattern(count, j)) {
                fprintf(stderr, "payload %lu: byte %zu is %u, expected %u\n", count, j,
                        (unsigned)buf[j], (unsigned)pattern(count, j));
                status = 1;
                break;
            }
        }
        if (status)
            break;
        digest = fnv1a(digest, buf, got);
        bytes += got;
        count++;
    }
    free(buf);
    cw_call_free(call);
    if (status)
        return status;
    if (count == 0) {
        fprintf(stderr, "the call ended without voice\n");
        return 1;
    }
    printf("received %lu payloads, %llu bytes, fnv1a64 %016llx, pattern OK\n", count, bytes,
           (unsigned long long)digest);

    ev = wait_for(c, CW_EVENT_CALL_ENDED, caller, now_ms() + ENDED_MS,
                  "waiting for the end of the call");
    if (!ev)
        return 1;
    printf("call ended by %s: %s\n", caller, cw_result_str((int)cw_event_result(ev)));
    cw_event_free(ev);
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s HOST PORT NAME answer\n"
            "       %s HOST PORT NAME call PEER [FRAMES [SIZE]]\n",
            argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return usage(argv[0]);
    int calling = strcmp(argv[4], "call") == 0;
    if (!calling && (strcmp(argv[4], "answer") != 0 || argc != 5))
        return usage(argv[0]);
    if (calling && (argc < 6 || argc > 8))
        return usage(argv[0]);
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bad port %s\n", argv[2]);
        return 2;
    }
    unsigned long frames = 50;
    unsigned long size = 160;
    if (calling && argc > 6)
        frames = strtoul(argv[6], NULL, 10);
    if (calling && argc > 7)
        size = strtoul(argv[7], NULL, 10);
    if (frames == 0 || frames > 100000 || size == 0 || size > CW_BABEL_MAX_VOICE) {
        fprintf(stderr, "FRAMES must be 1 to 100000 and SIZE 1 to %d\n", CW_BABEL_MAX_VOICE);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a pipe as they happen */
    if (strcmp(cw_version(), CW_VERSION_STRING) != 0)
        fprintf(stderr, "warning: header %s, library %s\n", CW_VERSION_STRING, cw_version());

    cw_client *c = NULL;
    cw_result r = cw_client_connect(argv[1], (uint16_t)port, CW_DIALECT_BABEL, &c);
    if (r != CW_OK)
        return fail("connect", r);
    int status;
    r = cw_client_login(c, argv[3], LOGIN_MS);
    if (r != CW_OK) {
        status = fail("login", r); /* CW_LOGIN_REFUSED: the reason is in cw_last_error */
    } else {
        printf("logged in as %s\n", argv[3]);
        status = calling ? do_call(c, argv[5], frames, (size_t)size) : do_answer(c);
    }
    /* Calls are peer to peer and were released above; now the client. */
    cw_client_close(c);
    cw_client_free(c);
    return status;
}
