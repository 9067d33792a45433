/* Reload handoff, the sending side and the receiving one: every open
 * WebSocket of a worker being replaced moves to one of the new
 * generation's workers as soon as it is at a clean point (nothing half
 * received or queued, its module agrees), with its socket, its unprocessed
 * input, its keepalive clock and its module's state (handoff.h is the
 * wire format). A connection whose module cannot move is closed with 1012
 * instead, as a reload without handoff would. */
#ifndef WSECHOD_MIGRATE_H
#define WSECHOD_MIGRATE_H

struct conn;
struct conn_env;
struct handoff_conn;
struct migrate;

/* From now on, hands env's connections to targets (inbox write ends,
 * taken over); when every inbox is full, a timer tries again a few
 * milliseconds later. m: the handoff already under way (its targets are
 * replaced), or NULL. Returns the handoff (NULL, logged, if out of memory:
 * the connections drain here). */
struct migrate *migrate_begin(struct migrate *m, struct conn_env *env, int *targets, unsigned n);
/* Connections handed over so far (0 for NULL). */
unsigned long migrate_handed(const struct migrate *m);
void migrate_end(struct migrate *m);
/* Serves a connection handed over by another worker; hc->fd becomes ours.
 * A path the new configuration no longer routes is closed with 1012. */
int  migrate_adopt(struct conn_env *env, const struct handoff_conn *hc);

#endif
