/* echo: sends every message back unchanged, same type, same bytes, in
 * order. Per route:
 *   delay: 250ms   each echo leaves that long after its message arrived
 *                  (latency injection; 0, the default, echoes at once).
 * Delayed messages count against max_pending_output, so a client that
 * sends faster than it is answered stops being read, as with a client that
 * does not read. A connection moves on reload when no echo is waiting. */
#ifndef WSECHOD_ECHO_H
#define WSECHOD_ECHO_H

#include "module.h"

extern const struct module echo_module;

#endif
