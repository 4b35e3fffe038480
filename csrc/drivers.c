/* drivers.c: the built-in drivers, by the name a config gives them. */
#include <string.h>

#include "store.h"

extern const cachy_store_ops cachy_file_ops;
extern const cachy_store_ops cachy_memcached_ops;
extern const cachy_store_ops cachy_memory_ops;
extern const cachy_store_ops cachy_null_ops;
extern const cachy_store_ops cachy_redis_ops;

static const struct {
    const char *name;
    const cachy_store_ops *ops;
} drivers[] = {
    { "memory", &cachy_memory_ops },
    { "dict", &cachy_memory_ops },      /* Cachy's name for the memory driver */
    { "null", &cachy_null_ops },
    { "file", &cachy_file_ops },
    { "redis", &cachy_redis_ops },
    { "memcached", &cachy_memcached_ops },
};

const cachy_store_ops *cachy_driver_find(const char *name)
{
    size_t i;
    for (i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (strcmp(drivers[i].name, name) == 0)
            return drivers[i].ops;
    return NULL;
}

const char *cachy_driver_name(const cachy_store_ops *ops) { return ops->name; }

const cachy_field *cachy_driver_fields(const cachy_store_ops *ops) { return ops->fields; }
