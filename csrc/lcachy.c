/*
 * lcachy.c: the Lua module cachy.core. The manager userdata (core.new and
 * its methods: store, extend, register_serializer, close), the metatables
 * that give the manager and its repositories their methods, and the lazy
 * resolution of each store's driver, so that a store whose driver comes
 * from cache:extend after core.new still works. The methods themselves are
 * in lcachy_repo.c and lcachy_decorate.c.
 */
#include <math.h>
#include <string.h>

#include "lcachy.h"

/* The kind markers (lcachy.h): only their addresses matter. */
const char lc_repo_kind = 'r', lc_manager_kind = 'm';

void lc_lookup_shared(lua_State *L, manager_ud *mgr, const char *field)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, mgr->shared_ref);
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
}

/* Resolves the driver on first use, and for a Lua store pushes its slots
 * table and points the store at this call's state. Call before any store
 * operation; what it pushes stays below the method's results. */
void lc_prepare(lua_State *L, repo_ud *r)
{
    store_state *st = r->st;
    if (st->store == NULL)
        luaL_error(L, "attempt to use a closed cache");
    if (!st->resolved) {
        const char *driver = cachy_store_driver(st->store);
        lc_lookup_shared(L, r->mgr, "drivers");
        lua_getfield(L, -1, driver);
        if (!lua_isnil(L, -1)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "factory");
            lua_pop(L, 1);
            st->lua_driver = 1;
            cachy_store_set_driver(st->store, &cachy_lua_ops);
            cachy_store_set_host(st->store, &st->host);
        } else {
            const cachy_store_ops *ops = cachy_driver_find(driver);
            if (ops == NULL)
                luaL_error(L, "cache driver '%s' is not supported (store '%s')", driver,
                           cachy_store_name(st->store));
            cachy_store_set_driver(st->store, ops);
        }
        lua_pop(L, 2);
        st->resolved = 1;
    }
    if (st->lua_driver) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
        st->host.L = L;
        st->host.slots = lua_gettop(L);
    }
}

/* ---- the manager ------------------------------------------------------- */

/* Pushes the repository named `name` (NULL: the default) of the manager at mgr_idx. */
void lc_push_repo(lua_State *L, int mgr_idx, const char *name)
{
    cachy_getuservalue(L, mgr_idx);
    if (name == NULL) {
        lua_getfield(L, -1, "default");
    } else {
        lua_getfield(L, -1, "repos");
        lua_getfield(L, -1, name);
        if (lua_isnil(L, -1))
            luaL_error(L, "cache store '%s' is not defined", name);
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
}

static manager_ud *check_manager(lua_State *L)
{
    return luaL_checkudata(L, 1, MANAGER_MT);
}

static int mgr_store(lua_State *L)
{
    check_manager(L);
    lc_push_repo(L, 1, luaL_optstring(L, 2, NULL));
    return 1;
}

static int mgr_extend(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lc_lookup_shared(L, mgr, "drivers");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_settable(L, -3);
    lua_settop(L, 1);
    return 1;
}

static int mgr_register_serializer(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "serialize");
    lua_getfield(L, 3, "unserialize");
    if (lua_type(L, -2) != LUA_TFUNCTION || lua_type(L, -1) != LUA_TFUNCTION)
        luaL_argerror(L, 3, "serializer needs functions 'serialize' and 'unserialize'");
    if (strcmp(lua_tostring(L, 2), "msgpack") == 0)
        luaL_argerror(L, 2, "'msgpack' is built in and cannot be replaced");
    lc_lookup_shared(L, mgr, "serializers");
    lua_pushvalue(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -5);
    lua_setfield(L, -2, "serialize");
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, "unserialize");
    lua_settable(L, -3);
    lua_settop(L, 1);
    return 1;
}

/* Closes every store (and, when freeing, releases everything). */
static void close_all(lua_State *L, manager_ud *mgr, int release)
{
    size_t i;
    for (i = 0; i < mgr->n; i++) {
        store_state *st = &mgr->states[i];
        if (st->store == NULL)
            continue;
        if (st->lua_driver) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, st->slots_ref);
            st->host.L = L;
            st->host.slots = lua_gettop(L);
        }
        cachy_store_close(st->store);
        if (st->lua_driver)
            lua_pop(L, 1);
        st->host.L = NULL;
        if (release) {
            luaL_unref(L, LUA_REGISTRYINDEX, st->slots_ref);
            lc_free_recent(L, st);
            cachy_buf_free(&st->buf);
            cachy_buf_free(&st->key);
            cachy_buf_free(&st->batch);
            st->store = NULL;
        }
    }
    if (release) {
        luaL_unref(L, LUA_REGISTRYINDEX, mgr->shared_ref);
        cachy_manager_free(mgr->m);
        mgr->m = NULL;
    }
}

static int mgr_close(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    if (mgr->m != NULL)
        close_all(L, mgr, 0);
    return 0;
}

static int mgr_gc(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    if (mgr->m != NULL)
        close_all(L, mgr, 1);
    return 0;
}

static int mgr_tostring(lua_State *L)
{
    manager_ud *mgr = check_manager(L);
    lua_pushfstring(L, "cachy.CacheManager (%p)", (void *)mgr);
    return 1;
}

static int repo_tostring(lua_State *L)
{
    repo_ud *r = luaL_checkudata(L, 1, REPO_MT);
    lua_pushfstring(L, "cachy.Repository '%s' (%p)",
                    r->st->store ? cachy_store_name(r->st->store) : "closed", (void *)r);
    return 1;
}

/* Converts the store config field at the top of the stack into an option. */
static int add_option(lua_State *L, cachy_options *o, const char *name, cachy_opt_type type)
{
    if (type == CACHY_OPT_STRING)
        return cachy_options_add_string(o, name, lua_tostring(L, -1));
    if (type == CACHY_OPT_BOOLEAN)
        return cachy_options_add_number(o, name, type, lua_toboolean(L, -1));
    if (type == CACHY_OPT_LIST) {
        size_t i, n = cachy_rawlen(L, -1);
        const char **items = lua_newuserdata(L, (n ? n : 1) * sizeof *items);
        int rc;
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, -2, (int)i + 1);
            items[i] = lua_tostring(L, -1);
            lua_pop(L, 1);      /* the list table keeps the strings alive */
        }
        rc = cachy_options_add_list(o, name, items, n);
        lua_pop(L, 1);
        return rc;
    }
    return cachy_options_add_number(o, name, type, (double)lua_tonumber(L, -1));
}

static const char *opt_string(lua_State *L, int tidx, const char *field, const char *dflt)
{
    const char *s;
    lua_getfield(L, tidx, field);
    s = lua_isstring(L, -1) ? lua_tostring(L, -1) : dflt;
    lua_pop(L, 1);      /* the config table keeps the string alive */
    return s;
}

/*
 * core.new(config, serializers): config was validated by cachy/init.lua:
 * { default = name, prefix =, serializer =, minutes =, on_error =,
 *   stores = { name = { driver =, prefix =, serializer =, fields... } } }
 */
static int core_new(lua_State *L)
{
    manager_ud *mgr;
    size_t n = 0, i = 0;
    const char *dflt, *gprefix, *gserializer;
    double minutes;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);                           /* 2: serializers */
    lua_getfield(L, 1, "stores");               /* 3 */
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        n++;
        lua_pop(L, 1);
    }
    if (n == 0)
        return luaL_error(L, "config.stores is empty");
    dflt = opt_string(L, 1, "default", NULL);
    gprefix = opt_string(L, 1, "prefix", "");
    gserializer = opt_string(L, 1, "serializer", "msgpack");
    lua_getfield(L, 1, "minutes");
    minutes = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 60.0;
    lua_pop(L, 1);

    mgr = cachy_newuserdata(L, sizeof *mgr + (n - 1) * sizeof(store_state));    /* 4 */
    memset(mgr, 0, sizeof *mgr + (n - 1) * sizeof(store_state));
    mgr->kind = &lc_manager_kind;
    mgr->shared_ref = LUA_NOREF;
    luaL_getmetatable(L, MANAGER_MT);
    lua_setmetatable(L, -2);
    mgr->m = cachy_manager_new();
    if (mgr->m == NULL)
        return luaL_error(L, "not enough memory");
    mgr->default_ttl_ms = minutes <= 0 ? -1 : minutes * 60000.0 >= 9.2e18 ? 0 : (int64_t)ceil(minutes * 60000.0);
    for (i = 0; i < n; i++)
        mgr->states[i].slots_ref = LUA_NOREF;

    /* shared: { drivers = {}, serializers = serializers arg, on_error = fn } */
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    lua_setfield(L, -2, "drivers");
    if (lua_istable(L, 2))
        lua_pushvalue(L, 2);
    else
        lua_newtable(L);
    lua_setfield(L, -2, "serializers");
    lua_getfield(L, 1, "on_error");
    lua_setfield(L, -2, "on_error");
    mgr->shared_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* the manager's uservalue: { repos = { name = repository }, default = repository } */
    lua_createtable(L, 0, 2);                   /* 5 */
    lua_newtable(L);                            /* 6: repos */
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {                    /* key 7, store config 8 */
        store_state *st = &mgr->states[i];
        const char *name = lua_tostring(L, 7);
        const char *driver = opt_string(L, 8, "driver", "memory");
        const char *prefix = opt_string(L, 8, "prefix", gprefix);
        const char *serializer = opt_string(L, 8, "serializer", gserializer);
        const cachy_store_ops *builtin = cachy_driver_find(driver);
        cachy_options opts = { 0 };
        repo_ud *r;
        if (builtin) {
            const cachy_field *f;
            for (f = cachy_driver_fields(builtin); f->name; f++) {
                lua_getfield(L, 8, f->name);
                if (!lua_isnil(L, -1) && add_option(L, &opts, f->name, f->type) != 0) {
                    cachy_options_free(&opts);
                    return luaL_error(L, "not enough memory");
                }
                lua_pop(L, 1);
            }
        }
        st->store = cachy_manager_add(mgr->m, name, driver, NULL, prefix, &opts);
        if (st->store == NULL) {
            cachy_options_free(&opts);
            return luaL_error(L, "not enough memory");
        }
        mgr->n = i + 1;
        st->msgpack = strcmp(serializer, "msgpack") == 0;
        lua_createtable(L, 0, 4);
        lua_pushvalue(L, 8);
        lua_setfield(L, -2, "config");
        lua_pushstring(L, serializer);
        lua_setfield(L, -2, "serializer");
        st->slots_ref = luaL_ref(L, LUA_REGISTRYINDEX);

        r = cachy_newuserdata(L, sizeof *r);
        memset(r, 0, sizeof *r);
        r->kind = &lc_repo_kind;
        r->mgr = mgr;
        r->st = st;
        luaL_getmetatable(L, REPO_MT);
        lua_setmetatable(L, -2);
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 4);
        lua_setfield(L, -2, "manager");
        cachy_setuservalue(L, -2);
        if (dflt && strcmp(dflt, name) == 0) {
            mgr->dflt.kind = &lc_repo_kind;
            mgr->dflt.mgr = mgr;
            mgr->dflt.st = st;
            lua_pushvalue(L, -1);
            lua_setfield(L, 5, "default");
        }
        lua_setfield(L, 6, name);
        lua_pop(L, 1);
        i++;
    }
    lua_setfield(L, 5, "repos");
    if (mgr->dflt.st == NULL)
        return luaL_error(L, "config.default names store '%s', which is not defined",
                          dflt ? dflt : "?");
    cachy_setuservalue(L, 4);
    lua_settop(L, 4);
    return 1;
}

/* core.driver_fields(name): { field = type name, ... } of a built-in driver,
 * plus the set of required fields, or nil. */
static int core_driver_fields(lua_State *L)
{
    static const char *const types[] = { "string", "number", "integer", "boolean", "list" };
    const cachy_store_ops *ops = cachy_driver_find(luaL_checkstring(L, 1));
    const cachy_field *f;
    if (ops == NULL)
        return 0;
    lua_newtable(L);
    lua_newtable(L);
    for (f = cachy_driver_fields(ops); f->name; f++) {
        lua_pushstring(L, types[f->type]);
        lua_setfield(L, -3, f->name);
        if (f->required) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, f->name);
        }
    }
    return 2;
}

static const luaL_Reg repo_methods[] = {
    { "get", lc_m_get },
    { "many", lc_m_many },
    { "has", lc_m_has },
    { "put", lc_m_put },
    { "put_many", lc_m_put_many },
    { "add", lc_m_add },
    { "forever", lc_m_forever },
    { "remember", lc_m_remember },
    { "remember_forever", lc_m_remember_forever },
    { "pull", lc_m_pull },
    { "forget", lc_m_forget },
    { "increment", lc_m_increment },
    { "decrement", lc_m_decrement },
    { "flush", lc_m_flush },
    { "stats", lc_m_stats },
    { "prune", lc_m_prune },
    { "tags", lc_m_tags },
    { NULL, NULL },
};

static const luaL_Reg manager_methods[] = {
    { "store", mgr_store },
    { "extend", mgr_extend },
    { "register_serializer", mgr_register_serializer },
    { "close", mgr_close },
    { NULL, NULL },
};

static const luaL_Reg core_functions[] = {
    { "new", core_new },
    { "driver_fields", core_driver_fields },
    { NULL, NULL },
};

LUALIB_API int luaopen_cachy_core(lua_State *L)
    __attribute__((visibility("default")));

LUALIB_API int luaopen_cachy_core(lua_State *L)
{
    lua_settop(L, 0);                           /* require passes the name and path */
    luaL_newmetatable(L, REPO_MT);              /* 1 */
    luaL_newmetatable(L, MANAGER_MT);           /* 2 */

    lua_newtable(L);                            /* 3: repository methods */
    luaL_setfuncs(L, repo_methods, 0);
    lua_setfield(L, 1, "__index");
    lua_pushcfunction(L, lc_repo_call);
    lua_setfield(L, 1, "__call");
    lua_pushcfunction(L, repo_tostring);
    lua_setfield(L, 1, "__tostring");

    lua_newtable(L);                            /* 3: manager methods */
    luaL_setfuncs(L, repo_methods, 0);
    luaL_setfuncs(L, manager_methods, 0);
    lua_setfield(L, 2, "__index");
    lua_pushcfunction(L, lc_manager_call);
    lua_setfield(L, 2, "__call");
    lua_pushcfunction(L, mgr_gc);
    lua_setfield(L, 2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, mgr_close);
    lua_setfield(L, 2, "__close");
#endif
    lua_pushcfunction(L, mgr_tostring);
    lua_setfield(L, 2, "__tostring");

    lua_newtable(L);
    luaL_setfuncs(L, core_functions, 0);
    return 1;
}

