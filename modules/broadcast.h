/* broadcast: every message a client sends goes to every other client of
 * the same route in the same worker (one room per route and worker), for
 * testing fan-out. Per route:
 *   self: 0     1: the sender gets its own messages too
 * A member that leaves max_pending_output unread misses messages until it
 * reads again (never queued without bound). Its connections do not move on
 * reload: a room is one worker's, so they are closed with 1012 and clients
 * reconnect into the new generation's rooms. */
#ifndef WSECHOD_BROADCAST_H
#define WSECHOD_BROADCAST_H

#include "module.h"

extern const struct module broadcast_module;

#endif
