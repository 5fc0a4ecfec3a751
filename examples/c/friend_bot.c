/*
 * friend_bot.c - an accounts-dialect bot on libchinwag.
 *
 *     friend_bot HOST PORT PSEUDO PASSWORD FRIEND
 *
 * Registers PSEUDO (email PSEUDO@example.org) unless it exists, logs in,
 * asks FRIEND to be a friend, and then serves events: it accepts friend
 * requests, answers each message with "got: <text>" (acknowledged by the
 * server), answers calls with its own voice port (a UDP port it does not
 * use: signalling only), and on the message "quit" prints the last page of
 * its history with the sender and exits. Prints one line per step.
 */
#include <chinwag.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 10000
#define VOICE_PORT 40404

static int fail(const char *what, cw_result r) {
    fprintf(stderr, "%s: %s (%s)\n", what, cw_result_str((int)r), cw_last_error());
    return 1;
}

static int print_history(cw_client *c, const char *peer) {
    uint64_t me = 0;
    cw_history *page = NULL;
    cw_result r = cw_client_account_id(c, &me);
    if (r != CW_OK)
        return fail("account id", r);
    r = cw_client_history(c, peer, 0, WAIT_MS, &page);
    if (r != CW_OK)
        return fail("history", r);
    printf("history with %s: %zu messages\n", peer, cw_history_count(page));
    for (size_t i = 0; i < cw_history_count(page); i++)
        printf("  [%s] %s\n", cw_history_sender_id(page, i) == me ? "me" : peer,
               cw_history_text(page, i));
    cw_history_free(page);
    return 0;
}

static int serve(cw_client *c) {
    for (;;) {
        cw_event *ev = NULL;
        cw_result r = cw_client_next_event(c, 30000, &ev);
        if (r != CW_OK)
            return fail("waiting for events", r);
        const char *peer = cw_event_peer(ev);
        int done = 0, status = 0;
        switch (cw_event_kind(ev)) {
        case CW_EVENT_FRIEND_REQUEST:
            r = cw_client_accept_friend(c, peer, WAIT_MS);
            printf("accepted %s: %s\n", peer, cw_result_str((int)r));
            break;
        case CW_EVENT_FRIEND_ACCEPTED:
            printf("%s is now a friend\n", peer);
            break;
        case CW_EVENT_PRIVATE_MESSAGE:
            printf("<%s> %s\n", peer, cw_event_text(ev));
            if (strcmp(cw_event_text(ev), "quit") == 0) {
                status = print_history(c, peer);
                done = 1;
            } else {
                char reply[2100];
                snprintf(reply, sizeof reply, "got: %s", cw_event_text(ev));
                r = cw_client_send_to_friend(c, peer, reply, WAIT_MS);
                printf("reply to %s: %s\n", peer, cw_result_str((int)r));
            }
            break;
        case CW_EVENT_CALL_INCOMING:
            printf("call from %s at %s:%u\n", peer, cw_event_address(ev),
                   (unsigned)cw_event_port(ev));
            r = cw_client_answer_call(c, peer, NULL, VOICE_PORT);
            printf("answered %s: %s\n", peer, cw_result_str((int)r));
            break;
        case CW_EVENT_CALL_ENDED:
            printf("%s hung up\n", peer);
            break;
        case CW_EVENT_ERROR:
        case CW_EVENT_DISCONNECTED:
            fprintf(stderr, "disconnected: %s\n", cw_event_text(ev));
            status = 1;
            done = 1;
            break;
        default:
            break;
        }
        cw_event_free(ev);
        if (done)
            return status;
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT PSEUDO PASSWORD FRIEND\n", argv[0]);
        return 2;
    }
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bad port %s\n", argv[2]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a pipe as they happen */
    const char *pseudo = argv[3], *password = argv[4], *friend_ = argv[5];
    char email[300];
    snprintf(email, sizeof email, "%s@example.org", pseudo);

    cw_client *c = NULL;
    cw_result r = cw_client_connect(argv[1], (uint16_t)port, CW_DIALECT_ACCOUNTS, &c);
    if (r != CW_OK)
        return fail("connect", r);
    int status = 1;
    r = cw_client_register(c, email, pseudo, password, WAIT_MS);
    if (r != CW_OK && r != CW_EMAIL_TAKEN && r != CW_PSEUDO_TAKEN) {
        fail("register", r);
        goto out;
    }
    r = cw_client_login_password(c, email, password, WAIT_MS);
    if (r != CW_OK) {
        fail("login", r);
        goto out;
    }
    char *name = NULL;
    uint64_t id = 0;
    if (cw_client_login_name(c, &name) == CW_OK && cw_client_account_id(c, &id) == CW_OK) {
        printf("logged in as %s (account %llu)\n", name, (unsigned long long)id);
        cw_string_free(name);
    }
    r = cw_client_request_friend(c, friend_, WAIT_MS);
    printf("friend request to %s: %s\n", friend_, cw_result_str((int)r));
    status = serve(c);
out:
    cw_client_close(c);
    cw_client_free(c);
    return status;
}
