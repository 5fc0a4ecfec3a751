/*
 * voice_call.c - one side of a voice call whose audio libchinwag carries:
 * PCM from a WAV file goes in, what the peer says comes out into another.
 *
 *   voice_call HOST PORT babel NAME          answer    IN.wav OUT.wav [ADV_PORT]
 *   voice_call HOST PORT babel NAME          call PEER IN.wav OUT.wav [ADV_PORT]
 *   voice_call HOST PORT accounts EMAIL PASS answer    IN.wav OUT.wav [ADV_PORT]
 *   voice_call HOST PORT accounts EMAIL PASS call PEER IN.wav OUT.wav [ADV_PORT]
 *
 * babel logs in as NAME; accounts logs in to an existing account (PEER must
 * be a friend). The answering side prints "ready", takes the first call;
 * the calling side rings PEER (babel: once PEER is online). Once the call
 * is established, every 20 ms each side pushes the next 20 ms of IN.wav
 * (16-bit PCM, 48 kHz, mono or stereo: converted to the call's channels)
 * with cw_call_send_pcm and pulls 20 ms with cw_call_recv_pcm, which is
 * always full (decoded, concealed or silence). The caller hangs up one
 * second after its input ends; the answerer goes on until the call is over
 * (cw_call_recv_pcm returns CW_CLOSED). Both write what they pulled to
 * OUT.wav (48 kHz, the call's channels) and print the call's statistics.
 * ADV_PORT: the port the signalling names instead of the call's own (a
 * forwarder in front of it), see cw_client_set_voice_ports.
 *
 * Every wait is bounded. Exit status 0 means this side did its part; any
 * failure prints a message on stderr and exits 1 (2: bad usage).
 *
 * Build: cc voice_call.c $(pkg-config --cflags --libs chinwag) -o voice_call
 */
#define _POSIX_C_SOURCE 200809L

#include <chinwag.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGIN_MS 10000
#define CONTACT_MS 10000 /* babel caller: wait for PEER to be online */
#define RING_MS 30000    /* both: wait for the call to be set up */
#define TICK_NS 20000000L /* 20 ms */
#define TAIL_TICKS 50     /* caller: 1 s after its input before hanging up */
#define LINGER_TICKS 500  /* answerer: at most 10 s after its input */
#define MAX_INPUT_SECONDS 600

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

static int32_t left_ms(long long deadline)
{
    long long left = deadline - now_ms();
    return left > 0 ? (int32_t)left : 0;
}

/* --- WAV files: 16-bit PCM only ----------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * Read a 48 kHz 16-bit PCM WAV file as `channels`-channel samples (mono is
 * copied to both channels; stereo is mixed down to mono). Returns the
 * samples (malloc'd) and their frame count, or NULL after printing why.
 */
static int16_t *read_wav(const char *path, unsigned channels, size_t *frames)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    uint8_t head[12], chunk[8], fmt[16];
    unsigned file_channels = 0;
    int16_t *out = NULL;
    if (fread(head, 1, 12, f) != 12 || memcmp(head, "RIFF", 4) || memcmp(head + 8, "WAVE", 4))
        goto bad;
    for (;;) {
        if (fread(chunk, 1, 8, f) != 8)
            goto bad;
        uint32_t size = le32(chunk + 4);
        if (!memcmp(chunk, "fmt ", 4)) {
            if (size < 16 || fread(fmt, 1, 16, f) != 16)
                goto bad;
            file_channels = le16(fmt + 2);
            if (le16(fmt) != 1 || le32(fmt + 4) != CW_SAMPLE_RATE || le16(fmt + 14) != 16 ||
                file_channels < 1 || file_channels > 2) {
                fprintf(stderr, "%s: need 16-bit PCM at 48 kHz, mono or stereo\n", path);
                fclose(f);
                return NULL;
            }
            if (fseek(f, (long)(size - 16 + (size & 1)), SEEK_CUR))
                goto bad;
        } else if (!memcmp(chunk, "data", 4)) {
            if (!file_channels)
                goto bad;
            size_t n = size / (2 * file_channels);
            if (n > (size_t)MAX_INPUT_SECONDS * CW_SAMPLE_RATE)
                n = (size_t)MAX_INPUT_SECONDS * CW_SAMPLE_RATE;
            out = malloc((n ? n : 1) * channels * sizeof *out);
            if (!out)
                goto bad;
            for (size_t i = 0; i < n; i++) {
                uint8_t s[4];
                if (fread(s, 2, file_channels, f) != file_channels) {
                    n = i;
                    break;
                }
                int left = (int16_t)le16(s);
                int right = file_channels == 2 ? (int16_t)le16(s + 2) : left;
                if (channels == 1) {
                    out[i] = (int16_t)((left + right) / 2);
                } else {
                    out[2 * i] = (int16_t)left;
                    out[2 * i + 1] = (int16_t)right;
                }
            }
            fclose(f);
            *frames = n;
            return out;
        } else if (fseek(f, (long)(size + (size & 1)), SEEK_CUR)) {
            goto bad;
        }
    }
bad:
    fprintf(stderr, "%s: not a WAV file this example reads\n", path);
    free(out);
    fclose(f);
    return NULL;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static int write_wav(const char *path, const int16_t *pcm, size_t frames, unsigned channels)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint32_t bytes = (uint32_t)(frames * channels * 2);
    uint8_t h[44];
    memcpy(h, "RIFF", 4);
    put32(h + 4, 36 + bytes);
    memcpy(h + 8, "WAVEfmt ", 8);
    put32(h + 16, 16);
    put16(h + 20, 1);
    put16(h + 22, (uint16_t)channels);
    put32(h + 24, CW_SAMPLE_RATE);
    put32(h + 28, CW_SAMPLE_RATE * channels * 2);
    put16(h + 32, (uint16_t)(channels * 2));
    put16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    put32(h + 40, bytes);
    int ok = fwrite(h, 1, 44, f) == 44;
    for (size_t i = 0; ok && i < frames * channels; i++) {
        uint8_t s[2];
        put16(s, (uint16_t)pcm[i]);
        ok = fwrite(s, 1, 2, f) == 2;
    }
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "%s: write failed\n", path);
        return 1;
    }
    return 0;
}

/* --- the call ------------------------------------------------------------ */

/*
 * Take events until one of kind `want` (from `peer`, unless NULL) arrives
 * or `deadline` passes; a failed call or a lost connection ends the wait.
 */
static cw_event *wait_for(cw_client *c, cw_event_type want, const char *peer, long long deadline,
                          const char *what)
{
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(c, left_ms(deadline), &ev);
        if (r != CW_OK) {
            fail(what, r);
            return NULL;
        }
        cw_event_type kind = cw_event_kind(ev);
        const char *who = cw_event_peer(ev);
        if (kind == want && (peer == NULL || strcmp(who, peer) == 0))
            return ev;
        if (kind == CW_EVENT_CALL_FAILED || kind == CW_EVENT_ERROR ||
            kind == CW_EVENT_DISCONNECTED) {
            fprintf(stderr, "%s: %s (%s)\n", what, cw_event_text(ev),
                    cw_result_str((int)cw_event_result(ev)));
            cw_event_free(ev);
            return NULL;
        }
        cw_event_free(ev);
    }
}

static void tick(struct timespec *next)
{
    next->tv_nsec += TICK_NS;
    if (next->tv_nsec >= 1000000000L) {
        next->tv_nsec -= 1000000000L;
        next->tv_sec++;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) == EINTR) {
    }
}

/*
 * Push `in` and pull into a growing buffer, 20 ms per tick, until the
 * input is done (plus the tail for a caller) or the call is over.
 */
static int talk(cw_client *c, cw_call *call, int calling, const int16_t *in, size_t in_frames,
                const char *out_path)
{
    unsigned ch = cw_call_channels(call);
    size_t cap = in_frames + (size_t)LINGER_TICKS * CW_FRAME_SAMPLES + CW_FRAME_SAMPLES;
    int16_t *out = malloc(cap * ch * sizeof *out);
    int16_t *frame = calloc((size_t)CW_FRAME_SAMPLES * ch, sizeof *frame);
    if (!out || !frame) {
        fprintf(stderr, "out of memory\n");
        free(out);
        free(frame);
        return 1;
    }
    size_t sent = 0, got = 0;
    size_t ticks_after = 0;
    int status = 0, over = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!over) {
        if (sent < in_frames) {
            size_t n = in_frames - sent < CW_FRAME_SAMPLES ? in_frames - sent : CW_FRAME_SAMPLES;
            memset(frame, 0, (size_t)CW_FRAME_SAMPLES * ch * sizeof *frame);
            memcpy(frame, in + sent * ch, n * ch * sizeof *frame);
            cw_result r = cw_call_send_pcm(call, frame, CW_FRAME_SAMPLES);
            if (r == CW_CLOSED)
                break;
            if (r != CW_OK) {
                status = fail("send pcm", r);
                break;
            }
            sent += n;
        } else if (++ticks_after >= (calling ? TAIL_TICKS : LINGER_TICKS)) {
            break;
        }
        if (got + CW_FRAME_SAMPLES > cap)
            break;
        cw_result r = cw_call_recv_pcm(call, out + got * ch, CW_FRAME_SAMPLES);
        if (r == CW_CLOSED)
            over = 1;
        else if (r != CW_OK) {
            status = fail("recv pcm", r);
            break;
        } else
            got += CW_FRAME_SAMPLES;
        cw_event *ev = NULL;
        while (cw_client_next_event(c, 0, &ev) == CW_OK) {
            if (cw_event_kind(ev) == CW_EVENT_CALL_ENDED)
                printf("the peer hung up\n");
            cw_event_free(ev);
        }
        tick(&next);
    }
    cw_audio_stats st;
    if (cw_call_stats(call, &st) == CW_OK)
        printf("stats sent=%llu received=%llu lost=%llu late=%llu concealed=%llu fec=%llu "
               "delay=%.1fms jitter=%.1fms rtt=%.1fms\n",
               (unsigned long long)st.packets_sent, (unsigned long long)st.packets_received,
               (unsigned long long)st.packets_lost, (unsigned long long)st.packets_late,
               (unsigned long long)st.frames_concealed,
               (unsigned long long)st.frames_concealed_fec, st.playout_delay_ms, st.jitter_ms,
               st.rtt_ms);
    if (calling) {
        cw_call_hangup(call);
        printf("hung up\n");
    }
    if (status == 0) {
        status = write_wav(out_path, out, got, ch);
        if (status == 0)
            printf("wrote %zu frames of %u channel(s) to %s\n", got, ch, out_path);
    }
    free(frame);
    free(out);
    return status;
}

static int run(cw_client *c, int babel, const char *peer, const char *in_path,
               const char *out_path)
{
    cw_result r;
    char who[64];
    if (peer) {
        if (babel) {
            cw_event *ev = wait_for(c, CW_EVENT_CONTACT_ADDED, peer, now_ms() + CONTACT_MS,
                                    "waiting for the peer to be online");
            if (!ev)
                return 1;
            cw_event_free(ev);
        }
        r = cw_client_place_voice_call(c, peer, NULL);
        if (r != CW_OK)
            return fail("place call", r);
        printf("ringing %s\n", peer);
        snprintf(who, sizeof who, "%s", peer);
    } else {
        printf("ready\n");
        cw_event *ev = wait_for(c, CW_EVENT_CALL_INCOMING, NULL, now_ms() + RING_MS,
                                "waiting for a call");
        if (!ev)
            return 1;
        snprintf(who, sizeof who, "%s", cw_event_peer(ev));
        cw_event_free(ev);
        r = cw_client_answer_voice_call(c, who, NULL);
        if (r != CW_OK)
            return fail("answer call", r);
    }
    cw_event *ev = wait_for(c, CW_EVENT_CALL_ESTABLISHED, who, now_ms() + RING_MS,
                            "waiting for the call");
    if (!ev)
        return 1;
    cw_call *call = NULL;
    r = cw_event_take_call(ev, &call);
    cw_event_free(ev);
    if (r != CW_OK)
        return fail("take call", r);
    printf("call established with %s, %u channel(s)\n", cw_call_peer(call),
           cw_call_channels(call));

    size_t frames = 0;
    int16_t *in = read_wav(in_path, cw_call_channels(call), &frames);
    int status = in ? talk(c, call, peer != NULL, in, frames, out_path) : 1;
    free(in);
    cw_call_free(call);
    return status;
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s HOST PORT babel NAME (answer | call PEER) IN.wav OUT.wav [ADV_PORT]\n"
            "       %s HOST PORT accounts EMAIL PASSWORD (answer | call PEER) IN.wav OUT.wav "
            "[ADV_PORT]\n",
            argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 7)
        return usage(argv[0]);
    long port = strtol(argv[2], NULL, 10);
    int babel = strcmp(argv[3], "babel") == 0;
    if (!babel && strcmp(argv[3], "accounts") != 0)
        return usage(argv[0]);
    int i = babel ? 5 : 6; /* the role */
    if (i >= argc)
        return usage(argv[0]);
    const char *peer = NULL;
    if (strcmp(argv[i], "call") == 0) {
        if (++i >= argc)
            return usage(argv[0]);
        peer = argv[i];
    } else if (strcmp(argv[i], "answer") != 0) {
        return usage(argv[0]);
    }
    if (argc != i + 3 && argc != i + 4)
        return usage(argv[0]);
    const char *in_path = argv[i + 1], *out_path = argv[i + 2];
    long adv = argc == i + 4 ? strtol(argv[i + 3], NULL, 10) : 0;
    if (port <= 0 || port > 65535 || adv < 0 || adv > 65535) {
        fprintf(stderr, "bad port\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a pipe as they happen */

    cw_client *c = NULL;
    cw_result r = cw_client_connect(argv[1], (uint16_t)port,
                                    babel ? CW_DIALECT_BABEL : CW_DIALECT_ACCOUNTS, &c);
    if (r != CW_OK)
        return fail("connect", r);
    int status;
    r = babel ? cw_client_login(c, argv[4], LOGIN_MS)
              : cw_client_login_password(c, argv[4], argv[5], LOGIN_MS);
    if (r != CW_OK) {
        status = fail("login", r);
    } else if (adv && (r = cw_client_set_voice_ports(c, 0, (uint16_t)adv)) != CW_OK) {
        status = fail("voice ports", r);
    } else {
        printf("logged in\n");
        status = run(c, babel, peer, in_path, out_path);
    }
    cw_client_close(c);
    cw_client_free(c);
    return status;
}
