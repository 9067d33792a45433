#include "broadcast.h"

#include <stdlib.h>

struct broadcast_conf {
    uint64_t self;
};

static const struct broadcast_conf broadcast_defaults = { 0 };

static const struct module_key broadcast_keys[] = {
    { "self", MODULE_KEY_UINT, offsetof(struct broadcast_conf, self), 0, 1 },
    { NULL, 0, 0, 0, 0 },
};

/* A room's members in a ring; a route's configuration block, unique to the
 * route, names its room. */
struct member {
    struct member *prev, *next;
    struct ws_conn *c;      /* NULL: the ring's head, in its room */
    size_t room;            /* index: the rooms array may move */
};

struct room {
    const void *route;
    struct member head;
};

/* The worker's rooms: one per broadcast route, made as they are first used. */
static struct room *rooms;
static size_t nrooms;

static struct room *room_of(const void *route)
{
    for (size_t i = 0; i < nrooms; i++)
        if (rooms[i].route == route)
            return &rooms[i];
    struct room *grown = realloc(rooms, (nrooms + 1) * sizeof(*grown));
    if (grown == NULL)
        return NULL;
    rooms = grown;
    /* Rings point into the array: those of existing rooms move with it. */
    for (size_t i = 0; i < nrooms; i++) {
        rooms[i].head.next->prev = &rooms[i].head;
        rooms[i].head.prev->next = &rooms[i].head;
    }
    struct room *r = &rooms[nrooms++];
    r->route = route;
    r->head.prev = r->head.next = &r->head;
    r->head.c = NULL;
    r->head.room = nrooms - 1;
    return r;
}

static int broadcast_open(struct ws_conn *c, const struct ws_request *req)
{
    struct room *r = room_of(ws_route_conf(c));
    struct member *m = r ? malloc(sizeof(*m)) : NULL;
    (void)req;
    if (m == NULL)
        return -1;
    m->c = c;
    m->room = r->head.room;
    m->next = &r->head;
    m->prev = r->head.prev;
    r->head.prev->next = m;
    r->head.prev = m;
    ws_set_data(c, m);
    return 0;
}

static void broadcast_message(struct ws_conn *c, enum ws_msg_type type,
                              const uint8_t *data, size_t len)
{
    const struct broadcast_conf *cf = ws_route_conf(c);
    const struct member *from = ws_data(c);
    const struct member *head = &rooms[from->room].head;
    for (const struct member *m = head->next; m != head; m = m->next) {
        if (m == from && !(cf && cf->self))
            continue;
        /* A member that does not read misses this one: no pile-up. */
        if (ws_pending(m->c) < ws_output_limit(m->c))
            (void)ws_send(m->c, type, data, len);
    }
}

static void broadcast_close(struct ws_conn *c, uint16_t code)
{
    struct member *m = ws_data(c);
    (void)code;
    if (m == NULL)
        return;
    m->prev->next = m->next;
    m->next->prev = m->prev;
    free(m);
    ws_set_data(c, NULL);
}

static int broadcast_init(void)
{
    rooms = NULL;
    nrooms = 0;
    return 0;
}

static void broadcast_exit(void)
{
    free(rooms);
    rooms = NULL;
    nrooms = 0;
}

const struct module broadcast_module = {
    .name = "broadcast",
    .keys = broadcast_keys,
    .conf_size = sizeof(struct broadcast_conf),
    .conf_default = &broadcast_defaults,
    .init = broadcast_init,
    .exit = broadcast_exit,
    .on_open = broadcast_open,
    .on_message = broadcast_message,
    .on_close = broadcast_close,
};
