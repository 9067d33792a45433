/* Intrusive doubly-linked circular list: the node lives inside the owner,
 * so linking and unlinking never allocate. */
#ifndef WSECHOD_LIST_H
#define WSECHOD_LIST_H

#include <stddef.h>

struct list {
    struct list *prev, *next;
};

static inline void list_init(struct list *l) { l->prev = l->next = l; }
static inline int list_empty(const struct list *l) { return l->next == l; }
static inline int list_linked(const struct list *n) { return n->next != NULL && n->next != n; }

static inline void list_append(struct list *head, struct list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define list_entry(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
