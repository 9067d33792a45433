/* The handler interface: everything a module in modules/ sees of the core.
 *
 * The core calls a route's module when a WebSocket opens, for each complete
 * (reassembled) data message, and when it closes. The module answers through
 * ws_send() / ws_close(); data passed to on_message is only valid during the
 * call, and ws_send copies what it queues. */
#ifndef WSECHOD_MODULE_H
#define WSECHOD_MODULE_H

#include <stddef.h>
#include <stdint.h>

struct ws_conn; /* one open WebSocket, owned by the core */

enum ws_msg_type { WS_MSG_TEXT = 1, WS_MSG_BINARY = 2 };

struct module {
    const char *name;
    /* Optional. Return 0 to accept; anything else closes with 1011. */
    int  (*on_open)(struct ws_conn *c);
    void (*on_message)(struct ws_conn *c, enum ws_msg_type type,
                       const uint8_t *data, size_t len);
    /* Optional. code is the peer's close code, or 1006 if the TCP
     * connection ended without a close handshake. */
    void (*on_close)(struct ws_conn *c, uint16_t code);
};

/* Queues a message; returns 0, or -1 if the connection is closing. */
int   ws_send(struct ws_conn *c, enum ws_msg_type type, const uint8_t *data, size_t len);
/* Starts the close handshake with code (1000..4999) and an optional reason. */
void  ws_close(struct ws_conn *c, uint16_t code, const char *reason);
/* One pointer of per-connection module state. */
void *ws_data(struct ws_conn *c);
void  ws_set_data(struct ws_conn *c, void *data);

#endif
