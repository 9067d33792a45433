/* Module timers (ws_timer_* in module.h) on the worker's loop: one timer
 * queue for every module timer of the worker, kept in deadline order (few
 * distinct timeouts per route, so an insertion walks back a few steps at
 * most). A timer's callback runs like any other work of the loop: what it
 * sends is queued and wakes the connection, which writes it in the same
 * turn. */
#ifndef WSECHOD_WSTIMER_H
#define WSECHOD_WSTIMER_H

struct ev_loop;

/* Once per worker, before any module timer. */
void ws_timer_setup(struct ev_loop *loop);

#endif
