/* echo: sends every message back unchanged, same type, same bytes. */
#ifndef WSECHOD_ECHO_H
#define WSECHOD_ECHO_H

#include "module.h"

extern const struct module echo_module;

#endif
