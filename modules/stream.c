#include "stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stream_conf {
    uint64_t interval_ms;
    size_t size;
    uint64_t count;
};

static const struct stream_conf stream_defaults = { 1000, 64, 0 };

static const struct module_key stream_keys[] = {
    { "interval", MODULE_KEY_DURATION, offsetof(struct stream_conf, interval_ms), 1, 86400000 },
    { "size", MODULE_KEY_SIZE, offsetof(struct stream_conf, size), 0, 16 << 20 },
    { "count", MODULE_KEY_UINT, offsetof(struct stream_conf, count), 0, UINT32_MAX },
    { NULL, 0, 0, 0, 0 },
};

struct stream_state {
    struct ws_timer *timer;
    uint64_t first;         /* the first number sent */
    uint64_t sent;          /* the next number to send */
    uint64_t next_due;
};

/* The worker's message buffer, shared by its streams (one runs at a time):
 * made by init, grown to the biggest size asked, freed by exit. */
static uint8_t *buf;
static size_t buf_cap;

static const struct stream_conf *conf_of(struct ws_conn *c)
{
    const struct stream_conf *cf = ws_route_conf(c);
    return cf ? cf : &stream_defaults;
}

static const uint8_t *message(uint64_t seq, size_t size)
{
    char num[24];
    if (size > buf_cap) {
        uint8_t *grown = realloc(buf, size);
        if (grown == NULL)
            return NULL;
        buf = grown;
        buf_cap = size;
    }
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
    memset(buf, '.', size);
    memcpy(buf, num, (size_t)n < size ? (size_t)n : size);
    return buf;
}

static void tick(struct ws_conn *c, void *arg)
{
    struct stream_state *st = arg;
    const struct stream_conf *cf = conf_of(c);
    uint64_t now = ws_now_ms();
    /* The client does not read: skip this tick rather than queue it. */
    if (ws_pending(c) < ws_output_limit(c)) {
        const uint8_t *m = message(st->sent, cf->size);
        if (m == NULL || ws_send(c, WS_MSG_TEXT, m, cf->size) < 0)
            return; /* closing, or out of memory: the stream ends here */
        if (++st->sent == st->first + cf->count) {
            ws_close(c, 1000, "stream complete");
            return;
        }
    }
    /* A steady rate; after a pause, the next tick is an interval away. */
    st->next_due += cf->interval_ms;
    if (st->next_due <= now)
        st->next_due = now + cf->interval_ms;
    ws_timer_start(st->timer, st->next_due - now);
}

static int start(struct ws_conn *c, uint64_t first, uint64_t sent)
{
    struct stream_state *st = calloc(1, sizeof(*st));
    if (st == NULL || (st->timer = ws_timer_new(c, tick, st)) == NULL) {
        free(st);
        return -1;
    }
    st->first = first;
    st->sent = sent;
    st->next_due = ws_now_ms() + conf_of(c)->interval_ms;
    ws_set_data(c, st);
    ws_timer_start(st->timer, conf_of(c)->interval_ms);
    return 0;
}

/* "?from=N" in the request: the numbering starts at N (a client resuming
 * a stream after a reconnect). Anything else in the query is ignored. */
static uint64_t first_number(const struct ws_request *req)
{
    const char *q = req->query, *end = req->query + req->query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if (stop - q > 5 && memcmp(q, "from=", 5) == 0) {
            uint64_t n = 0;
            for (q += 5; q < stop && *q >= '0' && *q <= '9' && n < UINT64_MAX / 10; q++)
                n = n * 10 + (uint64_t)(*q - '0');
            return n;
        }
        q = stop + 1;
    }
    return 0;
}

static int stream_open(struct ws_conn *c, const struct ws_request *req)
{
    uint64_t first = first_number(req);
    return start(c, first, first);
}

static void stream_message(struct ws_conn *c, enum ws_msg_type type,
                           const uint8_t *data, size_t len)
{
    (void)c, (void)type, (void)data, (void)len;
}

static void stream_close(struct ws_conn *c, uint16_t code)
{
    struct stream_state *st = ws_data(c);
    (void)code;
    if (st != NULL) {
        ws_timer_free(st->timer);
        free(st);
        ws_set_data(c, NULL);
    }
}

/* What travels on reload: where the numbering started and where it is. */
static int stream_export(struct ws_conn *c, uint8_t *state, size_t cap)
{
    const struct stream_state *st = ws_data(c);
    uint64_t v[2];
    if (st == NULL || cap < sizeof(v))
        return -1;
    v[0] = st->first;
    v[1] = st->sent;
    memcpy(state, v, sizeof(v));
    return (int)sizeof(v);
}

static int stream_adopt(struct ws_conn *c, const uint8_t *state, size_t len)
{
    uint64_t v[2];
    if (len != sizeof(v))
        return -1;
    memcpy(v, state, sizeof(v));
    return start(c, v[0], v[1]);
}

static int stream_init(void)
{
    buf = NULL;
    buf_cap = 0;
    return 0;
}

static void stream_exit(void)
{
    free(buf);
    buf = NULL;
    buf_cap = 0;
}

const struct module stream_module = {
    .name = "stream",
    .keys = stream_keys,
    .conf_size = sizeof(struct stream_conf),
    .conf_default = &stream_defaults,
    .init = stream_init,
    .exit = stream_exit,
    .on_open = stream_open,
    .on_message = stream_message,
    .on_close = stream_close,
    .export = stream_export,
    .on_adopt = stream_adopt,
};
