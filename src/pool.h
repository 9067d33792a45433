/* Fixed-size object pools for the long-lived per-connection structures.
 * An idle WebSocket is two small objects; from malloc they would land in
 * the holes that the handshake's short-lived buffers leave, one heap header
 * each, and fragment the heap. Pools keep them densely packed, without
 * headers, and reuse freed slots first. Memory grows in 64 KiB blocks and is
 * kept for the next connections (the process's peak, as with nginx's
 * connection array). Under AddressSanitizer a pool is plain calloc/free, so
 * use-after-free in these objects is still caught. One pool per object type
 * per process; not thread-safe (workers are single-threaded). */
#ifndef WSECHOD_POOL_H
#define WSECHOD_POOL_H

#include <stddef.h>

struct pool {
    size_t size;        /* object size, rounded up to 8 */
    void *free;         /* freed objects, linked through their first word */
    char *block;        /* the block being carved */
    size_t left;        /* objects not yet carved from it */
};

#define POOL_INIT(type) { ((sizeof(type) + 7) & ~(size_t)7), NULL, NULL, 0 }

/* A zeroed object, or NULL. */
void *pool_alloc(struct pool *p);
void  pool_free(struct pool *p, void *obj);

#endif
