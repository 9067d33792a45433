#include "pool.h"

#include <stdlib.h>
#include <string.h>

#define POOL_BLOCK (64 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define POOL_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_PLAIN 1
#endif
#endif

void *pool_alloc(struct pool *p)
{
#ifdef POOL_PLAIN
    return calloc(1, p->size);
#else
    void *obj = p->free;
    if (obj != NULL) {
        memcpy(&p->free, obj, sizeof(void *));
    } else {
        if (p->left == 0) {
            if ((p->block = malloc(POOL_BLOCK)) == NULL)
                return NULL;
            p->left = POOL_BLOCK / p->size;
        }
        obj = p->block;
        p->block += p->size;
        p->left--;
    }
    return memset(obj, 0, p->size);
#endif
}

void pool_free(struct pool *p, void *obj)
{
#ifdef POOL_PLAIN
    (void)p;
    free(obj);
#else
    if (obj == NULL)
        return;
    memcpy(obj, &p->free, sizeof(void *));
    p->free = obj;
#endif
}
