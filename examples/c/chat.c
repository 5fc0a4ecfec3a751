/*
 * chat.c - a small terminal chat client over libchinwag (chatos dialect).
 *
 *   chat HOST PORT LOGIN
 *
 * A plain line is sent to everyone; "/msg NAME text" sends a private
 * message; "/quit" (or end of input) leaves. Incoming events are printed
 * by a second thread, which polls the client; the main thread reads stdin.
 *
 * Build: cc chat.c $(pkg-config --cflags --libs chinwag) -lpthread -o chat
 */
#include <chinwag.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_event(cw_event *ev)
{
    const char *peer = cw_event_peer(ev);
    const char *text = cw_event_text(ev);
    switch (cw_event_kind(ev)) {
    case CW_EVENT_MESSAGE:
        printf("<%s> %s\n", peer, text);
        break;
    case CW_EVENT_PRIVATE_MESSAGE:
        printf("*%s* %s\n", peer, text);
        break;
    case CW_EVENT_PRIVATE_REQUEST:
        printf("-- %s asks for a private connection (refused: this client has no use for one)\n", peer);
        break;
    case CW_EVENT_OVERFLOW:
        printf("-- %llu events were lost\n", (unsigned long long)cw_event_count(ev));
        break;
    case CW_EVENT_ERROR:
    case CW_EVENT_DISCONNECTED:
        printf("-- disconnected: %s\n", text);
        break;
    default:
        printf("-- event %d\n", (int)cw_event_kind(ev));
        break;
    }
    fflush(stdout);
}

static void *event_loop(void *arg)
{
    cw_client *client = arg;
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(client, -1, &ev);
        if (r == CW_CLOSED)
            break;
        if (r != CW_OK) {
            fprintf(stderr, "next_event: %s\n", cw_last_error());
            break;
        }
        print_event(ev);
        if (cw_event_kind(ev) == CW_EVENT_PRIVATE_REQUEST)
            cw_client_refuse_private(client, cw_event_peer(ev));
        cw_event_free(ev);
    }
    return NULL;
}

static void report(const char *what, cw_result r)
{
    if (r != CW_OK)
        fprintf(stderr, "%s: %s (%s)\n", what, cw_result_str(r), cw_last_error());
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT LOGIN\n", argv[0]);
        return 2;
    }
    if (strcmp(cw_version(), CW_VERSION_STRING) != 0)
        fprintf(stderr, "warning: header %s, library %s\n", CW_VERSION_STRING, cw_version());

    cw_client *client = NULL;
    cw_result r = cw_client_connect(argv[1], (uint16_t)atoi(argv[2]), CW_DIALECT_CHATOS, &client);
    if (r != CW_OK) {
        report("connect", r);
        return 1;
    }
    r = cw_client_login(client, argv[3], 5000);
    if (r != CW_OK) {
        report("login", r);
        cw_client_free(client);
        return 1;
    }
    printf("-- logged in as %s\n", argv[3]);
    fflush(stdout);

    pthread_t events;
    if (pthread_create(&events, NULL, event_loop, client) != 0) {
        cw_client_free(client);
        return 1;
    }

    char line[2048];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "/quit") == 0)
            break;
        if (strncmp(line, "/msg ", 5) == 0) {
            char *name = line + 5;
            char *text = strchr(name, ' ');
            if (!text) {
                fprintf(stderr, "usage: /msg NAME text\n");
                continue;
            }
            *text++ = '\0';
            report("send_private", cw_client_send_private(client, name, text));
        } else if (line[0] != '\0') {
            report("send_message", cw_client_send_message(client, line));
        }
    }

    /* The documented shutdown: close (wakes the event thread), join, free. */
    cw_client_close(client);
    pthread_join(events, NULL);
    cw_client_free(client);
    printf("-- bye\n");
    return 0;
}
