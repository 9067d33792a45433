/* src/pool.c: fixed-size objects, zeroed, reused. Under the sanitizer build
 * the pool is plain calloc/free, so this checks the contract, not the
 * packing (which the idle-memory benchmark measures). */
#include <string.h>

#include "pool.h"
#include "tap.h"

struct obj {
    char bytes[40];
};

int main(void)
{
    struct pool p = POOL_INIT(struct obj);
    struct obj *o[100];
    int zeroed = 1, distinct = 1;
    ok(p.size == 40, "object size rounded to 8 (40 stays 40)");
    for (int i = 0; i < 100; i++) {
        o[i] = pool_alloc(&p);
        for (size_t k = 0; k < sizeof(o[i]->bytes); k++)
            zeroed &= o[i]->bytes[k] == 0;
        memset(o[i]->bytes, 0xab, sizeof(o[i]->bytes));
        for (int j = 0; j < i; j++)
            distinct &= o[j] != o[i];
    }
    ok(zeroed, "new objects are zeroed");
    ok(distinct, "live objects never overlap");
    for (int i = 0; i < 100; i += 2)
        pool_free(&p, o[i]);
    struct obj *again = pool_alloc(&p);
    int clean = 1;
    for (size_t k = 0; k < sizeof(again->bytes); k++)
        clean &= again->bytes[k] == 0;
    ok(clean, "a reused object is zeroed again");
    for (int i = 1; i < 100; i += 2)
        clean &= o[i]->bytes[0] == (char)0xab;
    ok(clean, "freeing some leaves the others intact");
    pool_free(&p, again);
    for (int i = 1; i < 100; i += 2)
        pool_free(&p, o[i]);
    return tap_done();
}
