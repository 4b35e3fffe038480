-- cachy.repository: the methods of a store's repository (SPEC section 3),
-- on any store: a C store's handle or a store written in Lua, both
-- speaking bytes (cachy.luastore has the interface). The functions a
-- caller passes (a get default, remember's function) are called here, in
-- Lua, so they may yield. When the store is a C store, the serializer
-- MessagePack and the repository untagged, the methods that call no user
-- code are replaced by C functions doing the same in one call
-- (lcachy_fast.c); the behaviour suite runs both.
local core = require("cachy.core")
local compat = require("cachy.compat")
local values = require("cachy.values")
local tags = require("cachy.tags")
local luastore = require("cachy.luastore")
local lock = require("cachy.lock")
local flight = require("cachy.flight")
local remember = require("cachy.remember")
local decorator = require("cachy.decorator")

local is_integer = compat.is_integer
local argerror, typename, check_key, check_ttl = values.argerror, values.typename, values.key, values.ttl
local encode, decode, live = values.encode, values.decode, values.live
local value_root = core.value_root
-- On LuaJIT a memory store's get, put and decorator reads go through the
-- FFI, which its trace compiler compiles (cachy.jit).
local jit_bind = values.jit and values.jit.bind

local Repository = {}
Repository.__index = Repository

-- The methods bound from C when the store allows (see the top).
local FAST = { "has", "put", "add", "forever", "forget", "increment", "decrement",
               "flush", "many", "put_many" }

local M = { Repository = Repository }

-- A repository of the store `name` of manager state `ms`; `tag_list` for a
-- tagged one (then `base` is the untagged repository it shares a store with).
function M.new(ms, name, config, base, tag_list)
  local r = {}
  local addr = tostring(r):match("0x%x+") or tostring(r):match("[%x]+$")
  setmetatable(r, Repository)
  r._repo = r
  r._ms = ms
  r._name = name
  r._config = config
  r._base = base or r
  r._tags = tag_list
  -- what this process saw (stats), and the keys it is computing (cachy.flight)
  r._counts = base and base._counts
    or { hits = 0, misses = 0, writes = 0, errors = 0, stale = 0, refreshes = 0, lock_waits = 0 }
  r._flights = base and base._flights or {}
  local sname = config.serializer or ms.serializer
  r._serializer_name = sname
  r._tostring = string.format("cachy.Repository '%s' (%s)", name, addr)
  return r
end

-- ---- the store behind the repository -------------------------------------

-- Whether a built-in store talks through nginx's cosockets where the
-- phase allows (SPEC section 11): inside nginx, unless its transport is
-- "blocking". Outside nginx every store is blocking, and transport and the
-- pool options are ignored.
local function cosockets_wanted(config)
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
    and type(ngx.socket) == "table" and config.transport ~= "blocking"
end

-- Drivers written in Lua that come with cachy (SPEC section 11).
local LUA_DRIVERS = { shdict = "cachy.resty.shdict", tiered = "cachy.tiered" }

-- Resolves the driver on first use (extend may come after new): a
-- registered Lua driver, else a built-in one. Raises for neither.
function Repository:_store()
  local base = self._base
  local st = base._st
  if st then return st end
  local ms, config, name = self._ms, self._config, self._name
  local driver = config.driver
  local prefix = config.prefix or ms.prefix
  local factory = ms.drivers[driver]
  local bind = factory == nil
  if factory then
    st = luastore.new(name, driver, prefix, config, factory)
  elseif LUA_DRIVERS[driver] then
    local mod = require(LUA_DRIVERS[driver])
    if driver == "tiered" then st = mod.new(name, config, ms) else st = mod.new(name, prefix, config) end
    bind = false
  else
    st = core.open(name, driver, prefix, config)
    if st == nil then
      error("cache driver '" .. driver .. "' is not supported (store '" .. name .. "')", 3)
    end
    if (driver == "redis" or driver == "memcached") and cosockets_wanted(config) then
      -- the transport is chosen per call (the phase), so nothing is bound
      st = require("cachy.resty." .. driver).dispatcher(name, prefix, config, st)
      bind = false
    end
  end
  local sname = base._serializer_name
  if sname ~= "msgpack" then
    local ser = ms.serializers[sname]
    if ser == nil then
      error("serializer '" .. sname .. "' of store '" .. name .. "' is not registered", 3)
    end
    base._serializer = ser
  end
  base._st = st
  if bind and sname == "msgpack" then
    local fast = core.bind(st, ms.default_ms)
    if jit_bind then fast = jit_bind(st, fast, ms.default_ms) end
    ms.bind(base, fast)
  elseif st.fast_get then       -- a tiered store's first-level hits
    local get = st:fast_get(Repository.get, base._counts)
    if get then ms.bind_get(base, get) end
  end
  return st
end

function Repository:_describe()
  return self:_store():describe()
end

-- Installs the C functions of `fast` as own fields of the repository (and
-- of the manager, for the default store): they answer before the Lua
-- methods of the metatable.
function M.install(target, fast)
  for i = 1, #FAST do target[FAST[i]] = fast[FAST[i]] end
  target._fast = fast
  local fget = fast.get
  -- get stays in Lua: a function default is called here, not from C. Its
  -- parameters are fixed (a vararg function costs a tenth of a hit more),
  -- so a missing key reads as nil in the message.
  target.get = function(self, key, default)
    local v, err, code, call_default = fget(self, key, default)
    if call_default then return default() end
    if err == nil then return v end
    return nil, err, code
  end
end

-- ---- store operations in the repository's tag namespace -------------------

-- Each returns what the store's bytes method does.
function Repository:_get(key)
  local st = self:_store()
  local t = self._tags
  if t == nil then return st:get(key) end
  local ikey, err, code = tags.item_key(st, t, key)
  if ikey == nil then return nil, err, code end
  return st:get(ikey)
end

function Repository:_forget(key)
  local st = self:_store()
  local t = self._tags
  if t == nil then return st:forget(key) end
  local ikey, err, code = tags.item_key(st, t, key)
  if ikey == nil then return nil, err, code end
  return st:forget(ikey)
end

-- put (is_add false) or add.
function Repository:_write(key, bytes, ms, is_add)
  local st = self:_store()
  local t = self._tags
  if t ~= nil then return tags.write(st, t, key, bytes, ms, is_add) end
  if is_add then return st:add(key, bytes, ms) end
  return st:put(key, bytes, ms)
end

function Repository:_incr(key, by, verb)
  local st = self:_store()
  local t = self._tags
  if t ~= nil then return tags.incr(st, t, key, by, verb) end
  return st:incr(key, by, key, verb)
end

-- ---- reads ----------------------------------------------------------------

-- The value under key: true, value on a hit; false on a miss; nil, err,
-- code. Counted in stats.
function Repository:_fetch(key)
  local counts = self._counts
  local bytes, err, code = self:_get(key)
  if bytes == nil then
    if err then
      counts.errors = counts.errors + 1
      return nil, err, code
    end
    counts.misses = counts.misses + 1
    return false
  end
  bytes, err = live(bytes)
  if not bytes then
    if bytes == nil then
      counts.errors = counts.errors + 1
      return values.corrupt(self, key, err)
    end
    counts.misses = counts.misses + 1
    return false
  end
  local ok, v, vcode = decode(self, key, bytes)
  if ok then counts.hits = counts.hits + 1 else counts.errors = counts.errors + 1 end
  return ok, v, vcode
end

local function check_self(self, method)
  if type(self) ~= "table" or self._repo == nil then
    argerror(1, method, "cache repository expected (use a colon: cache:" .. method .. "(key))", 2)
  end
  return self._repo
end

function Repository.get(self, key, default)
  self = check_self(self, "get")
  key = check_key(key, 1, "get", 1, 1)
  local found, v, code = self:_fetch(key)
  if found then return v end
  if found == nil then return nil, v, code end
  if type(default) == "function" then return default() end
  return default
end

-- true only for a value get can read: undecodable bytes are nil, err.
function Repository.has(self, ...)
  self = check_self(self, "has")
  local key = check_key((...), 1, "has", select("#", ...), 1)
  local found, err, code = self:_fetch(key)
  if found == nil then return nil, err, code end
  return found
end

function Repository.pull(self, ...)
  self = check_self(self, "pull")
  local key, default = ...
  key = check_key(key, 1, "pull", select("#", ...), 1)
  local found, v, code = self:_fetch(key)
  if found == nil then return nil, v, code end
  if not found then
    if type(default) == "function" then return default() end
    return default
  end
  local _, err
  _, err, code = self:_forget(key)
  if err then return nil, err, code end
  return v
end

function Repository.many(self, keys)
  self = check_self(self, "many")
  if type(keys) ~= "table" then argerror(1, "many", "table expected, got " .. typename(keys, 1, 1), 1) end
  local n, ks = #keys, {}
  for i = 1, n do ks[i] = check_key(keys[i], 1, "many", 1, 1) end
  local out = {}
  if n == 0 then return out end
  if self._tags then
    for i = 1, n do
      local found, v, code = self:_fetch(ks[i])
      if found == nil then return nil, v, code end
      if found then out[keys[i]] = v end
    end
    return out
  end
  local counts = self._counts
  local got, err, code = self:_store():many(ks)
  if got == nil then
    counts.errors = counts.errors + 1
    return nil, err, code
  end
  for i = 1, n do
    local bytes, why = got[i], nil
    if bytes ~= nil then bytes, why = live(bytes) end
    if bytes then
      local ok, v, c = decode(self, ks[i], bytes)
      if not ok then
        counts.errors = counts.errors + 1
        return nil, v, c
      end
      counts.hits = counts.hits + 1
      out[keys[i]] = v
    elseif bytes == nil and why then
      counts.errors = counts.errors + 1
      return values.corrupt(self, ks[i], why)
    else
      counts.misses = counts.misses + 1
    end
  end
  return out
end

-- ---- writes ---------------------------------------------------------------

-- A failure returned to the caller, counted in stats.
local function failed(self, err, code)
  self._counts.errors = self._counts.errors + 1
  return nil, err, code
end

local function write(self, method, key, value, ms, is_add)
  local bytes, err, code = encode(self, value, 2, method, "value", 2)
  if ms == false then
    local _
    _, err, code = self:_forget(key)
    if err then return failed(self, err, code) end
    return false
  end
  if bytes == nil then return failed(self, err, code) end
  local ok
  ok, err, code = self:_write(key, bytes, ms, is_add)
  if ok == nil then return failed(self, err, code) end
  if ok then self._counts.writes = self._counts.writes + 1 end
  if is_add then return ok end
  return true
end

function Repository.put(self, ...)
  self = check_self(self, "put")
  local key, value, ttl = ...
  local n = select("#", ...)
  key = check_key(key, 1, "put", n, 1)
  if n < 2 then argerror(2, "put", "value expected", 1) end
  return write(self, "put", key, value, check_ttl(ttl, self._ms.default_ms, 3, "put", 1), false)
end

function Repository.add(self, ...)
  self = check_self(self, "add")
  local key, value, ttl = ...
  local n = select("#", ...)
  key = check_key(key, 1, "add", n, 1)
  if n < 2 then argerror(2, "add", "value expected", 1) end
  return write(self, "add", key, value, check_ttl(ttl, self._ms.default_ms, 3, "add", 1), true)
end

function Repository.forever(self, ...)
  self = check_self(self, "forever")
  local key, value = ...
  local n = select("#", ...)
  key = check_key(key, 1, "forever", n, 1)
  if n < 2 then argerror(2, "forever", "value expected", 1) end
  return write(self, "forever", key, value, 0, false)
end

function Repository.forget(self, ...)
  self = check_self(self, "forget")
  local key = check_key((...), 1, "forget", select("#", ...), 1)
  local removed, err, code = self:_forget(key)
  if removed == nil then return failed(self, err, code) end
  return removed
end

local function step(self, method, sign, ...)
  local key, by = ...
  key = check_key(key, 1, method, select("#", ...), 2)
  if by == nil then
    by = 1
  elseif not is_integer(by) then
    argerror(2, method, "n must be an integer", 2)
  end
  if sign < 0 then
    if by == math.mininteger then
      return nil, self:_describe() .. ": decrement of key '" .. core.quote_key(key)
        .. "' overflows 64 bits", "overflow"
    end
    by = -by
  end
  local n, err, code = self:_incr(key, by, method)
  if n == nil then return failed(self, err, code) end
  self._counts.writes = self._counts.writes + 1
  return n
end

function Repository.increment(self, ...)
  return step(check_self(self, "increment"), "increment", 1, ...)
end

function Repository.decrement(self, ...)
  return step(check_self(self, "decrement"), "decrement", -1, ...)
end

function Repository.put_many(self, tbl, ttl)
  self = check_self(self, "put_many")
  if type(tbl) ~= "table" then argerror(1, "put_many", "table expected, got " .. typename(tbl, 1, 1), 1) end
  local ms = check_ttl(ttl, self._ms.default_ms, 2, "put_many", 1)
  local keys, vals, n = {}, {}, 0
  for k, v in pairs(tbl) do
    n = n + 1
    keys[n] = check_key(k, 1, "put_many", 1, 1)
    local bytes, err, code = encode(self, v, 1, "put_many", value_root(keys[n]), 1)
    if bytes == nil then return nil, err, code end
    vals[n] = bytes
  end
  if n == 0 then return true end
  if ms == false then
    for i = 1, n do
      local _, err, code = self:_forget(keys[i])
      if err then return failed(self, err, code) end
    end
    return false
  end
  local counts = self._counts
  if self._tags then
    for i = 1, n do
      local ok, err, code = self:_write(keys[i], vals[i], ms, false)
      if not ok then return failed(self, err, code) end
      counts.writes = counts.writes + 1
    end
    return true
  end
  local ok, err, code = self:_store():put_many(keys, vals, ms)
  if not ok then return failed(self, err, code) end
  counts.writes = counts.writes + n
  return true
end

function Repository.flush(self)
  self = check_self(self, "flush")
  local st = self:_store()
  local ok, err, code
  if self._tags then ok, err, code = tags.flush(st, self._tags) else ok, err, code = st:flush() end
  if not ok then return failed(self, err, code) end
  return true
end

-- What this process's calls on the store saw (those of its tagged
-- repositories included): hits, misses, writes, errors, stale answers,
-- refreshes, lock waits; the memory store adds items, bytes, evictions.
function Repository.stats(self)
  self = check_self(self, "stats")
  local out = {}
  for k, v in pairs(self._counts) do out[k] = v end
  local st = self:_store()
  local fast = self._base._fast
  if fast then
    local hits, misses, writes, errors = fast.counts()
    out.hits, out.misses = out.hits + hits, out.misses + misses
    out.writes, out.errors = out.writes + writes, out.errors + errors
    local jc = fast.jit_counts       -- LuaJIT's FFI path (cachy.jit)
    if jc then
      out.hits, out.misses, out.writes = out.hits + jc.hits, out.misses + jc.misses, out.writes + jc.writes
    end
  end
  local driver = self._config.driver
  if driver == "memory" or driver == "dict" then
    local s, err, code = st:stats()
    if s == nil then return nil, err, code end
    out.items, out.bytes, out.evictions = s.items, s.bytes, s.evictions
  end
  return out
end

function Repository.prune(self)
  return check_self(self, "prune"):_store():prune()
end

-- ---- remember, flexible (cachy.remember) ---------------------------------------

local function check_fn(fn, n, method, given)
  if type(fn) ~= "function" then
    argerror(n, method, "function expected, got " .. typename(fn, n, given), 2)
  end
end

-- The value alone, or with what went wrong (a call, not a tail call, keeps
-- the frames that error levels count the same on every Lua).
local function trim(v, err, code)
  if err == nil then return v end
  if code == nil then return v, err end
  return v, err, code
end

-- The single-flight and stale options after the function (argument n).
local function options(self, opts, n, method, allowed)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(n, method, "table of options expected, got " .. type(opts), 2)
  end
  return flight.options(self, opts, allowed, function(why) argerror(n, method, why, 3) end)
end

function Repository.remember(self, ...)
  self = check_self(self, "remember")
  local key, ttl, fn, opts = ...
  local n = select("#", ...)
  key = check_key(key, 1, "remember", n, 1)
  local ms = check_ttl(ttl, self._ms.default_ms, 2, "remember", 1)
  check_fn(fn, 3, "remember", n)
  local o = options(self, opts, 4, "remember", flight.REMEMBER)
  return trim(remember.remember(self, "remember", key, ms, ms, fn, o))
end

-- remember_forever(key, fn [, opts]), or (key, ttl, fn [, opts]) with the
-- ttl ignored.
function Repository.remember_forever(self, ...)
  self = check_self(self, "remember_forever")
  local key, a, b, c = ...
  local n = select("#", ...)
  key = check_key(key, 1, "remember_forever", n, 1)
  local fn, fn_n, opts = a, 2, b
  if type(a) ~= "function" and b ~= nil then fn, fn_n, opts = b, 3, c end
  check_fn(fn, fn_n, "remember_forever", n)
  local o = options(self, opts, fn_n + 1, "remember_forever", flight.REMEMBER)
  return trim(remember.remember(self, "remember_forever", key, 0, 0, fn, o))
end

-- flexible(key, { fresh, stale }, fn [, opts]): lifetimes in any TTL form.
function Repository.flexible(self, ...)
  self = check_self(self, "flexible")
  local key, pair, fn, opts = ...
  local n = select("#", ...)
  key = check_key(key, 1, "flexible", n, 1)
  if type(pair) ~= "table" or pair[1] == nil or pair[2] == nil then
    argerror(2, "flexible", "{ fresh, stale } expected, got " .. typename(pair, 2, n), 1)
  end
  local fresh = check_ttl(pair[1], nil, 2, "flexible", 1)
  local visible = check_ttl(pair[2], nil, 2, "flexible", 1)
  if fresh == 0 then fresh = 2 ^ 53 end          -- fresh for ever
  if visible and visible ~= 0 and fresh and fresh > visible then
    argerror(2, "flexible", "the fresh lifetime must not be longer than the stale one", 1)
  end
  check_fn(fn, 3, "flexible", n)
  local o = options(self, opts, 4, "flexible", flight.FLEXIBLE)
  return trim(remember.remember(self, "flexible", key, fresh, visible, fn, o, true))
end

-- ---- decorated functions (cachy.decorator) --------------------------------------

Repository.invalidate = decorator.invalidate
Repository.refresh = decorator.refresh

-- ---- tags ---------------------------------------------------------------------

-- tags("a", "b") or tags({ "a", "b" }): a repository whose items live in
-- those tags' namespace (cachy.tags).
function Repository.tags(self, ...)
  self = check_self(self, "tags")
  local n, list = select("#", ...), nil
  local from_list = n == 1 and type((...)) == "table"
  local names = from_list and (...) or { ... }
  local count = from_list and #names or n
  list = {}
  for i = 1, count do
    local t = names[i]
    local tt = type(t)
    if (tt ~= "string" and tt ~= "number") or tostring(t) == "" then
      argerror(from_list and 1 or i, "tags", "tag names must be non-empty strings", 1)
    end
    list[i] = tostring(t)
  end
  if count == 0 then argerror(1, "tags", "at least one tag is needed", 1) end
  local base = self._base
  return M.new(self._ms, base._name, base._config, base, list)
end

-- ---- locks (cachy.lock) ---------------------------------------------------------

Repository.lock = lock.lock
Repository.restore_lock = lock.restore_lock

function Repository:__tostring()
  return self._tostring
end

return M
