#include "modules.h"

#include <string.h>

#include "echo.h"

static const struct module *const all_modules[] = { &echo_module };

const struct module *modules_find(const char *name)
{
    for (size_t i = 0; i < sizeof(all_modules) / sizeof(all_modules[0]); i++)
        if (strcmp(all_modules[i]->name, name) == 0)
            return all_modules[i];
    return NULL;
}

const char *modules_names(void)
{
    return "echo";
}
