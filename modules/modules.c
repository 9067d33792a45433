#include "modules.h"

#include <string.h>

#include "log.h"

/* build/gen/modules.list.h has one MODULE(name) line for every
 * modules/NAME.c but this file (the Makefile writes it), so adding a
 * module is adding a file that defines `const struct module NAME_module`. */
#define MODULE(name) extern const struct module name##_module;
#include "modules.list.h"
#undef MODULE

static const struct module *const all_modules[] = {
#define MODULE(name) &name##_module,
#include "modules.list.h"
#undef MODULE
};

#define NMODULES (sizeof(all_modules) / sizeof(all_modules[0]))

const struct module *modules_find(const char *name)
{
    for (size_t i = 0; i < NMODULES; i++)
        if (strcmp(all_modules[i]->name, name) == 0)
            return all_modules[i];
    return NULL;
}

const char *modules_names(void)
{
    static char names[256];
    if (names[0] == '\0')
        for (size_t i = 0; i < NMODULES; i++) {
            size_t used = strlen(names);
            if (used + strlen(all_modules[i]->name) + 3 > sizeof(names))
                break; /* an error message's list, not the registry itself */
            if (i > 0)
                strcat(names, ", ");
            strcat(names, all_modules[i]->name);
        }
    return names;
}

/* How many modules' init ran: exit undoes exactly those. */
static size_t started;

int modules_init(void)
{
    for (; started < NMODULES; started++) {
        const struct module *m = all_modules[started];
        if (m->init != NULL && m->init() != 0) {
            log_error("module %s: per-worker init failed", m->name);
            modules_exit();
            return -1;
        }
    }
    return 0;
}

void modules_exit(void)
{
    while (started > 0) {
        const struct module *m = all_modules[--started];
        if (m->exit != NULL)
            m->exit();
    }
}
