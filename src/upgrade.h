/* Binary upgrade: a running master starts a new executable that inherits
 * the listening sockets (so no queued connection is lost) and a channel
 * back to the old master, over which the new one later says it serves and
 * passes its workers' inboxes. Both sides meet through the environment.
 *
 * This module owns the whole state of an upgrade on both sides: the new
 * master's pid, the channel, the deadline and the inboxes collected on the
 * old side; the channel to the old master on the new side. What concerns
 * the workers (telling them to hand their connections over) stays with
 * the master, which gets the inboxes through upgrade_read's callback.
 *
 * The protocol on the upgrade channel (see channel.h), new master -> old,
 * nothing the other way:
 *   UPGRADE_MSG_INBOX    with a descriptor attached: the write end of one
 *                        of the new master's worker inboxes, one message
 *                        per worker;
 *   UPGRADE_MSG_SERVING  no descriptor: every new worker serves and the new
 *                        master has claimed the pid file. The old master's
 *                        workers now hand their connections to the inboxes
 *                        received, and the old master exits once they are
 *                        done. The new master closes its end after it.
 * EOF before UPGRADE_MSG_SERVING means the new master failed: the old one
 * keeps serving. Any other message is ignored (its descriptor closed). The
 * byte values are those of the worker commands this protocol used to
 * borrow, so that masters from before and after that change still
 * understand each other during an upgrade between them. */
#ifndef WSECHOD_UPGRADE_H
#define WSECHOD_UPGRADE_H

#include <stdint.h>
#include <sys/types.h>

struct config;
struct listeners;

#define UPGRADE_MSG_INBOX   'T'
#define UPGRADE_MSG_SERVING 'G'

/* At start-up, before anything is forked: remembers this executable's path
 * (where a new version lands) and self, our pid; takes (and removes from the
 * environment) what an old master left: its sockets into *inherited (empty
 * if none) and its channel. -1 if that environment is malformed. */
int  upgrade_init(pid_t self, struct listeners *inherited);
/* In a freshly forked worker: the upgrade channels are not its to keep. */
void upgrade_close_in_child(void);

/* ---- New side ---- */

/* An old master started us and waits for UPGRADE_MSG_SERVING. */
int  upgrade_from_old(void);
void upgrade_send_inbox(int inbox);
/* Claims pid_file (the old master may now hand its connections to our
 * workers and we are the master it names), sends UPGRADE_MSG_SERVING and
 * closes the channel: upgrade_from_old() is false from now on. */
void upgrade_send_serving(const char *pid_file);

/* ---- Old side ---- */

/* Starts the executable with conf_file, ls's sockets and a new channel,
 * unless an upgrade is under way or the previous new master still runs.
 * generation and cf (its pid file and upgrade_timeout) describe what keeps
 * serving if the upgrade fails; cf must stay valid until the upgrade ends
 * (the master refuses reloads meanwhile). Logs what it does. */
void upgrade_start(const char *conf_file, const struct listeners *ls,
                   const struct config *cf, unsigned generation);
/* Between upgrade_start and the new master serving or failing. */
int  upgrade_under_way(void);
/* The new master serves: its workers' inboxes, for ours to hand their
 * connections to. Called once; the upgrade is over when it returns. */
typedef void upgrade_serving_cb(pid_t new_master, const int *inboxes, unsigned n);
/* Reads what the new master sent (on SIGIO); calls serving on
 * UPGRADE_MSG_SERVING, fails the upgrade on EOF. */
void upgrade_read(upgrade_serving_cb *serving);
/* Fails an upgrade under way: logs why, stops the new master, reclaims the
 * pid file. Nothing if none is under way. */
void upgrade_abort(const char *why);
/* Fails the upgrade if its deadline has passed by now; otherwise returns
 * that deadline (UINT64_MAX: none), for the master's timer. */
uint64_t upgrade_expire(uint64_t now);
/* The new master's pid, 0 if none runs; it stays known after serving. */
pid_t upgrade_new_master(void);
/* The new master exited (how: its exit described). */
void upgrade_exited(const char *how);
/* Everything was handed to the new master: we exit once drained. */
int  upgrade_handed_over(void);

#endif
