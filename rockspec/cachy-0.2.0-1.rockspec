rockspec_format = "3.0"
package = "cachy"
version = "0.2.0-1"
-- The release's source archive: `make rock` makes it from the working tree
-- (build/cachy-0.2.0.tar.gz, every file git tracks, under cachy-0.2.0/) and
-- packs it with this rockspec into build/cachy-0.2.0-1.src.rock, which
-- `luarocks install` builds with no network. The URL is relative, resolved
-- where `luarocks pack` runs (build/); a published rockspec names the
-- archive's address instead, with the same file name and dir.
source = {
  url = "cachy-0.2.0.tar.gz",
  dir = "cachy-0.2.0",
}
description = {
  summary = "One cache API for Lua: memory, file, Redis, Memcached and your own stores",
  detailed = [[
A caching library with a C core, modelled on Python's Cachy and Laravel's
cache: named stores behind one manager, the same semantics on every store,
tags, MessagePack values, and a manager that is itself a memoizing decorator.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
external_dependencies = {
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
  LIBMEMCACHED = { header = "libmemcached/memcached.h", library = "memcached" },
  MSGPACK = { header = "msgpack.h", library = "msgpackc" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  XXHASH = { header = "xxhash.h", library = "xxhash" },
}
build = {
  type = "builtin",
  modules = {
    cachy = "lua/cachy/init.lua",
    ["cachy.compat"] = "lua/cachy/compat.lua",
    ["cachy.decorator"] = "lua/cachy/decorator.lua",
    ["cachy.jit"] = "lua/cachy/jit.lua",
    ["cachy.lock"] = "lua/cachy/lock.lua",
    ["cachy.flight"] = "lua/cachy/flight.lua",
    ["cachy.remember"] = "lua/cachy/remember.lua",
    ["cachy.luastore"] = "lua/cachy/luastore.lua",
    ["cachy.manager"] = "lua/cachy/manager.lua",
    ["cachy.repository"] = "lua/cachy/repository.lua",
    ["cachy.tags"] = "lua/cachy/tags.lua",
    ["cachy.values"] = "lua/cachy/values.lua",
    ["cachy.tiered"] = "lua/cachy/tiered.lua",
    ["cachy.resty.memcached"] = "lua/cachy/resty/memcached.lua",
    ["cachy.resty.shdict"] = "lua/cachy/resty/shdict.lua",
    ["cachy.resty.events"] = "lua/cachy/resty/events.lua",
    ["cachy.resty.redis"] = "lua/cachy/resty/redis.lua",
    ["cachy.resty.redis_cluster"] = "lua/cachy/resty/redis_cluster.lua",
    ["cachy.resty.redis_sentinel"] = "lua/cachy/resty/redis_sentinel.lua",
    ["cachy.resty.socket"] = "lua/cachy/resty/socket.lua",
    ["cachy.core"] = {
      sources = {
        "csrc/lcachy.c", "csrc/lcachy_store.c", "csrc/lcachy_fast.c", "csrc/lcachy_ttl.c",
        "csrc/codec.c", "csrc/json.c", "csrc/manager.c", "csrc/drivers.c", "csrc/util.c",
        "csrc/hash.c", "csrc/store_memory.c", "csrc/store_null.c",
        "csrc/store_file.c", "csrc/store_redis.c", "csrc/store_memcached.c",
        "csrc/redis_proto.c", "csrc/redis_cluster.c", "csrc/redis_sentinel.c", "csrc/lcachy_redis.c", "csrc/lcachy_redis_cluster.c", "csrc/memcached_wire.c",
        "csrc/lcachy_memcached.c", "csrc/lcachy_lock.c",
        "csrc/lcachy_jit.c",
        "csrc/envelope.c", "csrc/lcachy_envelope.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "$(HIREDIS_INCDIR)", "$(HIREDIS_INCDIR)/hiredis", "$(LIBMEMCACHED_INCDIR)",
                  "$(MSGPACK_INCDIR)", "$(JANSSON_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(HIREDIS_LIBDIR)", "$(LIBMEMCACHED_LIBDIR)", "$(MSGPACK_LIBDIR)", "$(JANSSON_LIBDIR)", "$(XXHASH_LIBDIR)" },
      libraries = { "hiredis", "memcached", "msgpackc", "jansson", "xxhash" },
    },
  },
}
test = {
  type = "busted",
}
