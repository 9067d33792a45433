#include "echo.h"

static void echo_message(struct ws_conn *c, enum ws_msg_type type,
                         const uint8_t *data, size_t len)
{
    /* A failure means the connection is already closing: nothing to echo to. */
    (void)ws_send(c, type, data, len);
}

const struct module echo_module = {
    .name = "echo",
    .on_message = echo_message,
};
