/* The registry of handler modules compiled into wsechod. */
#ifndef WSECHOD_MODULES_H
#define WSECHOD_MODULES_H

#include "module.h"

/* NULL if no module has that name. */
const struct module *modules_find(const char *name);
/* Comma-separated list of module names, for error messages. */
const char *modules_names(void);
/* Every module's per-worker init, in registry order: -1 (logged) if one
 * refused, after the ones already started were given their exit. */
int  modules_init(void);
/* Every started module's exit, in reverse order. */
void modules_exit(void);

#endif
