/* stream: pushes messages without being asked, for testing a client's
 * receive path and its backpressure. Per route:
 *   interval: 100ms   one message every interval (default 1s)
 *   size: 1k          of this many bytes (default 64): the message's
 *                     sequence number (0, 1, ...) in decimal, then '.'
 *   count: 0          this many, then a close with 1000; 0 (default):
 *                     until the client closes
 * "?from=N" in the URL starts the numbering at N (count still counts
 * messages). Text messages. While the client leaves max_pending_output unread, ticks
 * are skipped, not queued: the stream pauses and numbers stay
 * consecutive. Incoming messages are ignored. On reload a connection moves
 * with its count, and the stream goes on in the new worker. */
#ifndef WSECHOD_STREAM_H
#define WSECHOD_STREAM_H

#include "module.h"

extern const struct module stream_module;

#endif
