/*
 * process.c: the module spec_process, for the specs that check what a
 * forked child does with the stores its parent opened. fork() and
 * wait(pid) as in C; exit(code) ends the child at once, without closing
 * the Lua state or flushing the output buffers it shares with its parent.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int l_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork failed");
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* The child's exit status, or 128 + the signal that ended it. */
static int l_wait(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return luaL_error(L, "waitpid failed");
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 1;
}

static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

__attribute__((visibility("default"))) int luaopen_spec_process(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_fork);
    lua_setfield(L, -2, "fork");
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, -2, "wait");
    lua_pushcfunction(L, l_exit);
    lua_setfield(L, -2, "exit");
    return 1;
}
