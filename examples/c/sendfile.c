/*
 * sendfile.c - send a file over a chatos private connection and check it.
 *
 *   sendfile recv HOST PORT LOGIN SENDER OUTFILE   wait for SENDER, save the file
 *   sendfile send HOST PORT LOGIN RECEIVER FILE    send FILE to RECEIVER
 *
 * Start the receiver first (it prints "ready" once logged in). On the
 * private connection the sender writes an 8-byte big-endian length, the
 * bytes, then their 64-bit FNV-1a digest; it then shuts down writing. The
 * receiver computes the digest itself, refuses the file on a mismatch,
 * and answers with the digest it computed, which the sender checks.
 * Exit status 0 means both sides agree.
 *
 * Build: cc sendfile.c $(pkg-config --cflags --libs chinwag) -o sendfile
 */
#include <chinwag.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every wait in this example is bounded, so a lost peer ends it. */
#define WAIT_MS 20000

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

static void put_u64(uint8_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_u64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

static int fail(const char *what, cw_result r)
{
    fprintf(stderr, "%s: %s (%s)\n", what, cw_result_str(r), cw_last_error());
    return 1;
}

/* Read exactly n bytes; CW_CLOSED before that is an error. */
static cw_result read_exact(cw_stream *s, uint8_t *buf, size_t n)
{
    while (n > 0) {
        size_t got = 0;
        cw_result r = cw_stream_read(s, buf, n, WAIT_MS, &got);
        if (r != CW_OK)
            return r;
        buf += got;
        n -= got;
    }
    return CW_OK;
}

/* Wait for the private connection to open and take its stream. */
static cw_stream *wait_stream(cw_client *c, const char *peer, int accept_from_peer)
{
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(c, WAIT_MS, &ev);
        if (r != CW_OK) {
            fail("waiting for the private connection", r);
            return NULL;
        }
        cw_event_type kind = cw_event_kind(ev);
        const char *who = cw_event_peer(ev);
        int from_peer = who && strcmp(who, peer) == 0;
        cw_stream *s = NULL;
        if (kind == CW_EVENT_PRIVATE_REQUEST) {
            if (accept_from_peer && from_peer)
                r = cw_client_accept_private(c, who);
            else
                r = cw_client_refuse_private(c, who);
            if (r != CW_OK)
                fail("answering the request", r);
        } else if (kind == CW_EVENT_PRIVATE_ESTABLISHED && from_peer) {
            if (cw_event_take_stream(ev, &s) != CW_OK)
                s = NULL;
            cw_event_free(ev);
            return s;
        } else if (kind == CW_EVENT_PRIVATE_REFUSED || kind == CW_EVENT_PRIVATE_FAILED ||
                   kind == CW_EVENT_ERROR || kind == CW_EVENT_DISCONNECTED) {
            fprintf(stderr, "no private connection: event %d %s\n", (int)kind,
                    cw_event_text(ev) ? cw_event_text(ev) : "");
            cw_event_free(ev);
            return NULL;
        }
        cw_event_free(ev);
    }
}

static int receive(cw_client *c, const char *sender, const char *path)
{
    cw_stream *s = wait_stream(c, sender, 1);
    if (!s)
        return 1;
    int status = 1;
    uint8_t head[8], tail[8];
    uint8_t *data = NULL;
    cw_result r = read_exact(s, head, 8);
    if (r != CW_OK) {
        fail("reading the length", r);
        goto out;
    }
    uint64_t len = get_u64(head);
    if (len > (1ULL << 30)) {
        fprintf(stderr, "refusing a %llu-byte file\n", (unsigned long long)len);
        goto out;
    }
    data = malloc(len ? len : 1);
    if (!data)
        goto out;
    if ((r = read_exact(s, data, len)) != CW_OK || (r = read_exact(s, tail, 8)) != CW_OK) {
        fail("reading the file", r);
        goto out;
    }
    uint64_t mine = fnv1a(FNV_OFFSET, data, len);
    uint64_t theirs = get_u64(tail);
    uint8_t answer[8];
    put_u64(answer, mine);
    if ((r = cw_stream_write(s, answer, 8)) != CW_OK || (r = cw_stream_shutdown_write(s)) != CW_OK) {
        fail("answering", r);
        goto out;
    }
    /* The sender has shut down writing: anything more is a protocol error. */
    size_t got = 0;
    r = cw_stream_read(s, tail, 1, WAIT_MS, &got);
    if (r != CW_CLOSED) {
        fprintf(stderr, "expected the end of the stream, got %s\n", cw_result_str(r));
        goto out;
    }
    if (mine != theirs) {
        fprintf(stderr, "digest mismatch: received %016llx, sender says %016llx\n",
                (unsigned long long)mine, (unsigned long long)theirs);
        goto out;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        goto out;
    }
    printf("received %llu bytes fnv1a64 %016llx OK\n", (unsigned long long)len,
           (unsigned long long)mine);
    status = 0;
out:
    free(data);
    cw_stream_close(s);
    cw_stream_free(s);
    return status;
}

static int send_file(cw_client *c, const char *receiver, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0) {
        fclose(f);
        return 1;
    }
    cw_result r = cw_client_request_private(c, receiver);
    if (r != CW_OK) {
        fclose(f);
        return fail("request_private", r);
    }
    cw_stream *s = wait_stream(c, receiver, 0);
    if (!s) {
        fclose(f);
        return 1;
    }
    int status = 1;
    uint8_t head[8], buf[64 * 1024];
    uint64_t digest = FNV_OFFSET;
    put_u64(head, (uint64_t)size);
    if ((r = cw_stream_write(s, head, 8)) != CW_OK) {
        fail("write", r);
        goto out;
    }
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        digest = fnv1a(digest, buf, n);
        if ((r = cw_stream_write(s, buf, n)) != CW_OK) {
            fail("write", r);
            goto out;
        }
    }
    put_u64(head, digest);
    if ((r = cw_stream_write(s, head, 8)) != CW_OK || (r = cw_stream_shutdown_write(s)) != CW_OK) {
        fail("finishing", r);
        goto out;
    }
    if ((r = read_exact(s, head, 8)) != CW_OK) {
        fail("reading the receiver's digest", r);
        goto out;
    }
    if (get_u64(head) != digest) {
        fprintf(stderr, "receiver computed %016llx, sent %016llx\n",
                (unsigned long long)get_u64(head), (unsigned long long)digest);
        goto out;
    }
    printf("sent %ld bytes fnv1a64 %016llx, receiver agrees\n", size, (unsigned long long)digest);
    status = 0;
out:
    fclose(f);
    cw_stream_close(s);
    cw_stream_free(s);
    return status;
}

int main(int argc, char **argv)
{
    if (argc != 7 || (strcmp(argv[1], "send") != 0 && strcmp(argv[1], "recv") != 0)) {
        fprintf(stderr, "usage: %s send|recv HOST PORT LOGIN PEER FILE\n", argv[0]);
        return 2;
    }
    cw_client *c = NULL;
    cw_result r = cw_client_connect(argv[2], (uint16_t)atoi(argv[3]), CW_DIALECT_CHATOS, &c);
    if (r != CW_OK)
        return fail("connect", r);
    r = cw_client_login(c, argv[4], WAIT_MS);
    if (r != CW_OK) {
        cw_client_free(c);
        return fail("login", r);
    }
    printf("ready\n");
    fflush(stdout);
    int status = strcmp(argv[1], "send") == 0 ? send_file(c, argv[5], argv[6])
                                              : receive(c, argv[5], argv[6]);
    cw_client_close(c);
    cw_client_free(c);
    return status;
}
