/* The worker's memory budget. Every buffer a connection holds beyond its
 * fixed-size objects (request bytes, read leftovers, the message being
 * reassembled, output the peer has not taken, what modules hold) is counted
 * here by the layer that owns it, so the worker knows what its connections
 * hold and can refuse to grow past worker_memory_limit. One budget per
 * process, like the pools; not thread-safe (workers are single-threaded). */
#ifndef WSECHOD_MEM_H
#define WSECHOD_MEM_H

#include <stddef.h>
#include <stdint.h>

/* Heap header and rounding of one malloc'd block, counted with its size. */
#define MEM_BLOCK_OVERHEAD 16

/* Sets the ceiling and tunes malloc so that big freed buffers go back to
 * the kernel (see mem.c). */
void mem_setup(size_t limit);
/* A holder's count moves from *slot to now. */
void mem_move(uint32_t *slot, size_t now);
void mem_add(size_t n);
void mem_sub(size_t n);
size_t mem_held(void);
size_t mem_limit(void);
/* Held more than the ceiling allows. */
int mem_over(void);
/* After much has been freed since the last call, returns free heap pages
 * to the kernel. Cheap when there is nothing to do. */
void mem_release(void);

#endif
