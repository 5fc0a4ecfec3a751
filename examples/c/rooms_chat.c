/*
 * rooms_chat.c - a terminal client for chinwag rooms over libchinwag.
 *
 *   rooms_chat HOST PORT NAME                 stay in the public room
 *   rooms_chat HOST PORT NAME create ROOM     create the private room ROOM
 *   rooms_chat HOST PORT NAME join ROOM       join the private room ROOM
 *
 * Each line read from stdin is sent as a text to everyone in the current
 * room; "/quit" (or end of input) leaves. A second thread prints the texts
 * that arrive ("<author> text"; the protocol names most authors by their
 * id only, shown as "#<id>") and the invitations. To keep the example
 * non-interactive there is no prompt: this client accepts every invitation
 * (the server would wait 60 s for an answer) and moves into that room.
 *
 * Rooms calls are bounded by the library (CW_ROOMS_TRIES sends, every
 * CW_ROOMS_RETRY_MS). Exit status 0 when every text was acknowledged,
 * 1 after any failure (reported on stderr), 2 for bad usage.
 *
 * Build: cc rooms_chat.c $(pkg-config --cflags --libs chinwag) -lpthread -o rooms_chat
 */
#include <chinwag.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOGIN_MS 5000

static const char *mode_name(int32_t mode)
{
    return mode == CW_ROOM_DECENTRALISED ? "decentralised" : "centralised";
}

static int report(const char *what, cw_result r)
{
    if (r == CW_OK)
        return 0;
    fprintf(stderr, "%s: %s (%s)\n", what, cw_result_str((int)r), cw_last_error());
    return 1;
}

/* The event thread's outcome: 0, or 1 after a failure it reported. */
static int events_failed;

static void *event_loop(void *arg)
{
    cw_client *client = arg;
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(client, -1, &ev);
        if (r == CW_CLOSED)
            break; /* cw_client_close from the main thread */
        if (r != CW_OK) {
            events_failed = report("next event", r);
            break;
        }
        const char *peer = cw_event_peer(ev);
        const char *text = cw_event_text(ev);
        switch (cw_event_kind(ev)) {
        case CW_EVENT_MESSAGE:
            printf("<%s> %s\n", peer, text);
            break;
        case CW_EVENT_ROOM_INVITATION:
            printf("-- %s invites you into %s (%s)\n", peer, text,
                   mode_name(cw_event_room_mode(ev)));
            /* Answer at once (the server accepts an answer for 60 s). */
            r = cw_client_room_answer_invitation(client, text, 1);
            if (r == CW_OK)
                printf("-- accepted: now in %s\n", text);
            else
                report("accept invitation", r); /* not fatal: we stay where we are */
            break;
        case CW_EVENT_OVERFLOW:
            printf("-- %llu events were lost\n", (unsigned long long)cw_event_count(ev));
            break;
        case CW_EVENT_ERROR:
        case CW_EVENT_DISCONNECTED:
            fprintf(stderr, "disconnected: %s\n", text);
            events_failed = 1;
            break;
        default:
            break;
        }
        fflush(stdout);
        cw_event_free(ev);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (!(argc == 4 || (argc == 6 && (strcmp(argv[4], "create") == 0 ||
                                      strcmp(argv[4], "join") == 0)))) {
        fprintf(stderr, "usage: %s HOST PORT NAME [create ROOM | join ROOM]\n", argv[0]);
        return 2;
    }
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bad port %s\n", argv[2]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a pipe as they happen */
    if (strcmp(cw_version(), CW_VERSION_STRING) != 0)
        fprintf(stderr, "warning: header %s, library %s\n", CW_VERSION_STRING, cw_version());

    /* Connecting binds a UDP socket; nothing is sent before the login. */
    cw_client *client = NULL;
    cw_result r = cw_client_connect(argv[1], (uint16_t)port, CW_DIALECT_ROOMS, &client);
    if (report("connect", r))
        return 1;
    r = cw_client_login(client, argv[3], LOGIN_MS);
    if (report("login", r)) { /* "name taken" or "invalid name" in cw_last_error */
        cw_client_free(client);
        return 1;
    }
    uint8_t me = 0;
    if (report("user id", cw_client_room_user_id(client, &me))) {
        cw_client_free(client);
        return 1;
    }
    printf("-- logged in as %s (#%u)\n", argv[3], (unsigned)me);

    if (argc == 6) {
        const char *room = argv[5];
        if (strcmp(argv[4], "create") == 0) {
            uint8_t id = 0;
            r = cw_client_room_create(client, room, CW_ROOM_CENTRALISED, 16, &id);
            if (r == CW_OK)
                printf("-- created %s (room %u)\n", room, (unsigned)id);
        } else {
            r = cw_client_room_join(client, room);
            if (r == CW_OK)
                printf("-- joined %s\n", room);
        }
        if (report(argv[4], r)) {
            cw_client_close(client);
            cw_client_free(client);
            return 1;
        }
    }

    pthread_t events;
    if (pthread_create(&events, NULL, event_loop, client) != 0) {
        fprintf(stderr, "cannot start the event thread\n");
        cw_client_close(client);
        cw_client_free(client);
        return 1;
    }

    int status = 0;
    char line[1300]; /* a text is at most 1200 bytes */
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "/quit") == 0)
            break;
        if (line[0] == '\0')
            continue;
        /* Returns once the server (or, decentralised, every peer) acknowledged it. */
        if (report("send", cw_client_send_message(client, line)))
            status = 1;
    }

    /* The documented shutdown: close (wakes the event thread), join, free. */
    cw_client_close(client);
    pthread_join(events, NULL);
    cw_client_free(client);
    if (events_failed)
        status = 1;
    printf("-- bye\n");
    return status;
}
