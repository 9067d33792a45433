#include "echo.h"

#include <stdlib.h>
#include <string.h>

struct echo_conf {
    uint64_t delay_ms;
};

static const struct echo_conf echo_defaults = { 0 };

static const struct module_key echo_keys[] = {
    { "delay", MODULE_KEY_DURATION, offsetof(struct echo_conf, delay_ms), 0, 3600000 },
    { NULL, 0, 0, 0, 0 },
};

/* A message waiting for its time. */
struct delayed {
    struct delayed *next;
    uint64_t due;
    size_t len;
    enum ws_msg_type type;
    uint8_t data[];
};

/* Only connections of a delaying route have one, once they got a message. */
struct echo_state {
    struct ws_timer *timer;
    struct delayed *head, **tail;
};

static long cost(const struct delayed *d)
{
    return (long)(sizeof(*d) + d->len);
}

/* Sends what is due, then waits for the next one. */
static void on_due(struct ws_conn *c, void *arg)
{
    struct echo_state *st = arg;
    uint64_t now = ws_now_ms();
    while (st->head != NULL && st->head->due <= now) {
        struct delayed *d = st->head;
        st->head = d->next;
        (void)ws_send(c, d->type, d->data, d->len);
        ws_hold(c, -cost(d));
        free(d);
    }
    if (st->head == NULL)
        st->tail = &st->head;
    else
        ws_timer_start(st->timer, st->head->due - now);
}

static struct echo_state *state_of(struct ws_conn *c)
{
    struct echo_state *st = ws_data(c);
    if (st != NULL)
        return st;
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return NULL;
    if ((st->timer = ws_timer_new(c, on_due, st)) == NULL) {
        free(st);
        return NULL;
    }
    st->tail = &st->head;
    ws_set_data(c, st);
    return st;
}

static void echo_later(struct ws_conn *c, uint64_t delay, enum ws_msg_type type,
                       const uint8_t *data, size_t len)
{
    struct echo_state *st = state_of(c);
    struct delayed *d = st ? malloc(sizeof(*d) + len) : NULL;
    if (d == NULL) {
        ws_close(c, 1011, "out of memory");
        return;
    }
    d->next = NULL;
    d->due = ws_now_ms() + delay;
    d->len = len;
    d->type = type;
    memcpy(d->data, data, len);
    ws_hold(c, cost(d));
    if (st->head == NULL)
        ws_timer_start(st->timer, delay); /* the ones behind are due later */
    *st->tail = d;
    st->tail = &d->next;
}

static void echo_message(struct ws_conn *c, enum ws_msg_type type,
                         const uint8_t *data, size_t len)
{
    const struct echo_conf *cf = ws_route_conf(c);
    if (cf != NULL && cf->delay_ms > 0)
        echo_later(c, cf->delay_ms, type, data, len);
    else
        (void)ws_send(c, type, data, len); /* fails only when closing: nothing to echo to */
}

static void echo_close(struct ws_conn *c, uint16_t code)
{
    struct echo_state *st = ws_data(c);
    (void)code;
    if (st == NULL)
        return;
    while (st->head != NULL) {
        struct delayed *d = st->head;
        st->head = d->next;
        free(d);
    }
    ws_timer_free(st->timer);
    free(st);
    ws_set_data(c, NULL);
}

/* Moves when no echo waits; nothing else to carry. */
static int echo_export(struct ws_conn *c, uint8_t *state, size_t cap)
{
    const struct echo_state *st = ws_data(c);
    (void)state;
    (void)cap;
    return st != NULL && st->head != NULL ? -1 : 0;
}

const struct module echo_module = {
    .name = "echo",
    .keys = echo_keys,
    .conf_size = sizeof(struct echo_conf),
    .conf_default = &echo_defaults,
    .on_message = echo_message,
    .on_close = echo_close,
    .export = echo_export,
};
