/*
 * lcachy_lock.c: what locks (lua/cachy/lock.lua) need from C and Lua does
 * not have: a sleep that blocks without spinning, for waiting outside
 * nginx, and owner tokens that differ between processes forked from one
 * parent (math.random's state is copied with the process).
 */
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "lcachy.h"

#define TOKEN_BYTES 16

/* core.sleep(seconds): blocks the process that long (signals do not cut it short). */
static int core_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    struct timespec left;
    if (!(secs > 0))
        return 0;
    if (secs > 86400.0 * 365)
        secs = 86400.0 * 365;
    left.tv_sec = (time_t)secs;
    left.tv_nsec = (long)((secs - (lua_Number)left.tv_sec) * 1e9);
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
    return 0;
}

/* Fills buf from the kernel's generator: getrandom, or /dev/urandom where
 * the kernel lacks it. 0 ok, -1 none to be had. */
static int random_bytes(unsigned char *buf, size_t n)
{
    size_t got = 0;
    int fd;
    while (got < n) {
        ssize_t k = getrandom(buf + got, n - got, 0);
        if (k > 0)
            got += (size_t)k;
        else if (k < 0 && errno != EINTR)
            break;
    }
    if (got == n)
        return 0;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k > 0)
            got += (size_t)k;
        else if (!(k < 0 && errno == EINTR))
            break;
    }
    close(fd);
    return got == n ? 0 : -1;
}

/* core.lock_token(): 32 lowercase hex digits from 16 random bytes. */
static int core_lock_token(lua_State *L)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[TOKEN_BYTES];
    char text[TOKEN_BYTES * 2];
    size_t i;
    if (random_bytes(raw, sizeof raw) != 0)
        return luaL_error(L, "cannot make a lock owner: no random bytes from the kernel");
    for (i = 0; i < TOKEN_BYTES; i++) {
        text[2 * i] = hex[raw[i] >> 4];
        text[2 * i + 1] = hex[raw[i] & 0xf];
    }
    lua_pushlstring(L, text, sizeof text);
    return 1;
}

void lc_open_lock(lua_State *L)
{
    lua_pushcfunction(L, core_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, core_lock_token);
    lua_setfield(L, -2, "lock_token");
}
