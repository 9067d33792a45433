#include "mem.h"

#include <malloc.h>

/* Blocks this big are mmap'ed and unmapped on free. glibc would raise the
 * threshold each time such a block is freed (up to 32 MiB), after which a
 * burst of big messages lands in the heap and stays there; a fixed value
 * turns that adaptation off. Smaller than the biggest per-connection buffers
 * worth returning, bigger than anything an echo of usual size allocates. */
#define MEM_MMAP_THRESHOLD (128u << 10)
/* Trim when this much was freed since the peak. */
#define MEM_TRIM_STEP (4u << 20)

static size_t held, limit, peak;

void mem_setup(size_t max)
{
    limit = max;
    mallopt(M_MMAP_THRESHOLD, MEM_MMAP_THRESHOLD);
    mallopt(M_TRIM_THRESHOLD, 2 * MEM_MMAP_THRESHOLD);
}

void mem_add(size_t n)
{
    held += n;
    if (held > peak)
        peak = held;
}

void mem_sub(size_t n)
{
    held = n < held ? held - n : 0;
}

void mem_move(uint32_t *slot, size_t now)
{
    if (now > UINT32_MAX)
        now = UINT32_MAX; /* one connection's limits stay far below this */
    if (now >= *slot)
        mem_add(now - *slot);
    else
        mem_sub(*slot - now);
    *slot = (uint32_t)now;
}

size_t mem_held(void)
{
    return held;
}

size_t mem_limit(void)
{
    return limit;
}

int mem_over(void)
{
    return limit != 0 && held > limit;
}

void mem_release(void)
{
    if (peak - held < MEM_TRIM_STEP)
        return;
    /* Small blocks freed in bulk (fragments, queued echoes) leave holes
     * in the heap that free() alone never returns. */
    malloc_trim(0);
    peak = held;
}
