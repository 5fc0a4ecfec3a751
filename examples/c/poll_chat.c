/*
 * poll_chat.c - a single-threaded chat client over libchinwag (chatos):
 * one poll(2) loop waits on standard input, the client's event descriptor
 * and the library's log descriptor, and never blocks anywhere else.
 *
 *   poll_chat HOST PORT LOGIN
 *
 * A plain line is sent to everyone; "/quit" (or end of input) leaves.
 * Events print as "<peer> text"; the library's log lines (INFO and up)
 * print as "[log LEVEL TARGET] text".
 *
 * Build: cc poll_chat.c $(pkg-config --cflags --libs chinwag) -o poll_chat
 */
#define _POSIX_C_SOURCE 200809L
#include <chinwag.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *level_name(cw_log_level l)
{
    switch (l) {
    case CW_LOG_ERROR: return "ERROR";
    case CW_LOG_WARN: return "WARN";
    case CW_LOG_INFO: return "INFO";
    case CW_LOG_DEBUG: return "DEBUG";
    case CW_LOG_TRACE: return "TRACE";
    default: return "?";
    }
}

/* Print every waiting log line; never waits. */
static void drain_log(void)
{
    cw_log_line *l = NULL;
    while (cw_log_next(0, &l) == CW_OK) {
        printf("[log %s %s] %s\n", level_name(cw_log_line_level(l)), cw_log_line_target(l),
               cw_log_line_text(l));
        cw_log_line_free(l);
    }
    fflush(stdout);
}

/* Print every waiting event; never waits. Returns 0 once the client is over. */
static int drain_events(cw_client *c)
{
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(c, 0, &ev);
        if (r == CW_TIMEOUT)
            return 1;
        if (r != CW_OK)
            return 0;
        switch (cw_event_kind(ev)) {
        case CW_EVENT_MESSAGE:
            printf("<%s> %s\n", cw_event_peer(ev), cw_event_text(ev));
            break;
        case CW_EVENT_PRIVATE_MESSAGE:
            printf("*%s* %s\n", cw_event_peer(ev), cw_event_text(ev));
            break;
        case CW_EVENT_ERROR:
        case CW_EVENT_DISCONNECTED:
            printf("-- disconnected: %s\n", cw_event_text(ev));
            break;
        default:
            break;
        }
        cw_event_free(ev);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT LOGIN\n", argv[0]);
        return 2;
    }
    if (cw_log_set_level(CW_LOG_INFO) != CW_OK) {
        fprintf(stderr, "log level: %s\n", cw_last_error());
        return 1;
    }
    cw_client *c = NULL;
    if (cw_client_connect(argv[1], (uint16_t)atoi(argv[2]), CW_DIALECT_CHATOS, &c) != CW_OK) {
        fprintf(stderr, "connect: %s\n", cw_last_error());
        return 1;
    }
    if (cw_client_login(c, argv[3], 5000) != CW_OK) {
        fprintf(stderr, "login: %s\n", cw_last_error());
        cw_client_free(c);
        return 1;
    }
    int event_fd = -1, log_fd = -1;
    if (cw_client_event_fd(c, &event_fd) != CW_OK || cw_log_fd(&log_fd) != CW_OK) {
        fprintf(stderr, "descriptors: %s\n", cw_last_error());
        cw_client_free(c);
        return 1;
    }
    printf("logged in as %s\n", argv[3]);
    fflush(stdout);

    int running = 1;
    char buf[4096];
    size_t have = 0;
    while (running) {
        struct pollfd fds[3] = {
            {.fd = event_fd, .events = POLLIN},
            {.fd = log_fd, .events = POLLIN},
            {.fd = 0, .events = POLLIN},
        };
        if (poll(fds, 3, -1) < 0)
            break;
        if (fds[1].revents & POLLIN)
            drain_log();
        if (fds[0].revents & POLLIN)
            running = drain_events(c);
        if (fds[2].revents & (POLLIN | POLLHUP)) {
            /* read(2), not stdio: poll sees only what no buffer holds. */
            ssize_t n = read(0, buf + have, sizeof buf - 1 - have);
            if (n <= 0) {
                running = 0;
                continue;
            }
            have += (size_t)n;
            char *start = buf, *nl;
            while (running && (nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
                *nl = 0;
                if (strcmp(start, "/quit") == 0)
                    running = 0;
                else if (cw_client_send_message(c, start) != CW_OK)
                    fprintf(stderr, "send: %s\n", cw_last_error());
                start = nl + 1;
            }
            have -= (size_t)(start - buf);
            memmove(buf, start, have);
            if (have == sizeof buf - 1)
                have = 0; /* a line longer than the buffer is dropped */
        }
    }
    cw_client_close(c);
    cw_client_free(c);
    drain_log();
    printf("-- bye\n");
    return 0;
}
