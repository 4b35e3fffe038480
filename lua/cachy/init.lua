-- cachy: one cache manager, named stores, the same semantics on every store.
-- This module validates the configuration (so a typo is named where it is
-- made) and makes the manager (cachy.manager).
local core = require("cachy.core")
local manager = require("cachy.manager")

local M = { _VERSION = "cachy 0.2.0" }

local TOP_FIELDS = {
  default = "string", prefix = "string", serializer = "string",
  minutes = "number", on_error = "function", stores = "table",
}
TOP_FIELDS.sleep = "function"         -- waits of locks (cachy.lock.sleeper)
-- single flight and flexible's refreshes (cachy.flight)
TOP_FIELDS.lock, TOP_FIELDS.wait, TOP_FIELDS.defer = "boolean", "number", "function"

-- Fields every store takes, whatever its driver.
local COMMON_FIELDS = { driver = "string", prefix = "string", serializer = "string" }
COMMON_FIELDS.sleep = "function"
COMMON_FIELDS.lock, COMMON_FIELDS.wait, COMMON_FIELDS.defer = "boolean", "number", "function"

local TRANSPORTS = { auto = true, cosocket = true, blocking = true }

-- The drivers written in Lua that come with cachy: their fields, and
-- which are required.
local LUA_DRIVERS = {
  shdict = { { dict = "string" }, { dict = true } },
  tiered = { { levels = "list", max_stale = "number", events = "string" }, { levels = true } },
}

local function fail(fmt, ...)
  error("cachy.new: " .. string.format(fmt, ...), 0)
end

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -math.huge and v < math.huge
end

local function has_type(v, want)
  if want == "integer" then return is_integer(v) end
  if want == "list" then
    if type(v) ~= "table" then return false end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    for i = 1, n do
      if type(v[i]) ~= "string" then return false end
    end
    return true
  end
  return type(v) == want
end

local function type_name(want)
  if want == "list" then return "a list of strings" end
  if want == "integer" then return "an integer" end
  return "a " .. want
end

-- Strings reach the C drivers as C strings, where a NUL byte would end
-- them early: two prefixes differing after a NUL would share keys.
-- (where: a format naming the field, given the field's name)
local function check_bytes(where, name, value)
  if type(value) == "string" and value:find("\0", 1, true) then
    fail(where .. " must not contain a NUL byte", name)
  elseif type(value) == "table" then
    for i, v in ipairs(value) do check_bytes(where, name .. "[" .. i .. "]", v) end
  end
end

-- The values of the nginx transport's fields (their types are checked).
local function check_transport(name, store)
  local t = store.transport
  if t ~= nil and not TRANSPORTS[t] then
    fail("store '%s' field 'transport' must be \"auto\", \"cosocket\" or \"blocking\", got \"%s\"", name, t)
  end
  if store.pool_size ~= nil and store.pool_size < 1 then
    fail("store '%s' field 'pool_size' must be at least 1", name)
  end
  if store.pool_backlog ~= nil and store.pool_backlog < 0 then
    fail("store '%s' field 'pool_backlog' must not be negative", name)
  end
  local k = store.keepalive
  if k ~= nil and not (k > 0 and k <= 86400) then
    fail("store '%s' field 'keepalive' must be a number of seconds above 0, at most 86400", name)
  end
end

-- Single flight's wait, in seconds.
local function check_wait(what, v)
  if v ~= nil and not (v >= 0 and v < math.huge) then
    fail("%s must be a number of seconds from 0, got %s", what, tostring(v))
  end
end

-- The redis store's `sentinel = { master = name, nodes = { "host:port", ... } }`,
-- as the list { name, "host:port", ... } the driver reads.
local function sentinel_list(name, v)
  local where = "store '" .. name .. "' field 'sentinel'"
  if type(v) ~= "table" then
    fail("%s must be a table { master = name, nodes = { \"host:port\", ... } }, got %s", where, type(v))
  end
  for k in pairs(v) do
    if k ~= "master" and k ~= "nodes" then fail("%s has no field '%s'", where, tostring(k)) end
  end
  if type(v.master) ~= "string" or v.master == "" then
    fail("%s: 'master' must be the master's name, got %s", where, type(v.master))
  end
  if not has_type(v.nodes, "list") or #v.nodes == 0 then
    fail("%s: 'nodes' must be a list of strings \"host:port\", at least one", where)
  end
  local list = { v.master }
  for i, node in ipairs(v.nodes) do list[i + 1] = node end
  check_bytes(where .. "%s", "", list)
  return list
end

local function check_store(name, store)
  if type(store) ~= "table" then
    fail("store '%s' must be a table, got %s", name, type(store))
  end
  if store.driver == nil then fail("store '%s' field 'driver' is required", name) end
  local fields, required
  if LUA_DRIVERS[store.driver] then
    fields, required = LUA_DRIVERS[store.driver][1], LUA_DRIVERS[store.driver][2]
  else
    fields, required = core.driver_fields(type(store.driver) == "string" and store.driver or "")
  end
  local sentinel
  if store.driver == "redis" and store.sentinel ~= nil then
    sentinel = sentinel_list(name, store.sentinel)
  end
  for field, value in pairs(store) do
    if type(field) ~= "string" then
      fail("store '%s' has a field named by a %s", name, type(field))
    end
    if field == "sentinel" and sentinel then value = sentinel end
    local want = COMMON_FIELDS[field] or (fields and fields[field])
    if want == nil and fields then
      fail("store '%s' has no field '%s'", name, field)
    end
    if want and not has_type(value, want) then
      fail("store '%s' field '%s' must be %s, got %s", name, field, type_name(want), type(value))
    end
    if fields or COMMON_FIELDS[field] then   -- what a built-in driver or the core reads
      check_bytes("store '" .. name .. "' field '%s'", field, value)
    end
  end
  for field in pairs(required or {}) do
    if store[field] == nil then fail("store '%s' field '%s' is required", name, field) end
  end
  if fields and fields.transport then check_transport(name, store) end
  check_wait("store '" .. name .. "' field 'wait'", store.wait)
  if sentinel then
    local copy = {}
    for k, v in pairs(store) do copy[k] = v end
    copy.sentinel = sentinel
    return copy
  end
  return store
end

-- A tiered store's levels: other stores of this config, at least two,
-- none twice, none tiered; one serializer for all (they share bytes), and
-- no prefix of its own (a level's copy is under the level's prefix).
local function check_tiered(name, store, config)
  local levels = store.levels
  if #levels < 2 then fail("store '%s' field 'levels' must name at least two stores", name) end
  if store.prefix ~= nil then
    fail("store '%s' field 'prefix': a tiered store has no prefix of its own (each level's applies)", name)
  end
  if store.max_stale ~= nil and not (store.max_stale > 0 and store.max_stale <= 86400 * 365) then
    fail("store '%s' field 'max_stale' must be a number of seconds above 0", name)
  end
  local seen = {}
  local ser = store.serializer or config.serializer or "msgpack"
  for i, level in ipairs(levels) do
    local lstore = config.stores[level]
    if lstore == nil then fail("store '%s' field 'levels[%d]' names store '%s', which is not defined", name, i, level) end
    if level == name or lstore.driver == "tiered" then
      fail("store '%s' field 'levels[%d]' names a tiered store ('%s')", name, i, level)
    end
    if seen[level] then fail("store '%s' field 'levels' names store '%s' twice", name, level) end
    seen[level] = true
    local lser = lstore.serializer or config.serializer or "msgpack"
    if lser ~= ser then
      fail("store '%s' level '%s' has serializer '%s', the tiered store '%s': they must be the same", name, level, lser, ser)
    end
  end
end

local function validate(config)
  if config == nil then
    return { default = "memory", stores = { memory = { driver = "memory" } } }
  end
  if type(config) ~= "table" then fail("config must be a table, got %s", type(config)) end
  for key, value in pairs(config) do
    local want = TOP_FIELDS[key]
    if want == nil then fail("config has no field '%s'", tostring(key)) end
    if type(value) ~= want then
      fail("config.%s must be a %s, got %s", key, want, type(value))
    end
  end
  if config.minutes ~= nil and config.minutes ~= config.minutes then
    fail("config.minutes must not be NaN")
  end
  check_wait("config.wait", config.wait)
  check_bytes("config.%s", "prefix", config.prefix)
  local out = {}
  for k, v in pairs(config) do out[k] = v end
  if config.stores == nil then
    out.stores = { memory = { driver = "memory" } }
  end
  local count, only, stores = 0, nil, {}
  for name, store in pairs(out.stores) do
    if type(name) ~= "string" or name == "" then
      fail("config.stores must be keyed by store names (strings)")
    end
    stores[name] = check_store(name, store)
    count, only = count + 1, name
  end
  out.stores = stores
  if count == 0 then fail("config.stores is empty") end
  for name, store in pairs(out.stores) do
    if store.driver == "tiered" then check_tiered(name, store, out) end
  end
  if out.default == nil then
    if count > 1 then fail("config.default is required when several stores are configured") end
    out.default = only
  elseif out.stores[out.default] == nil then
    fail("config.default names store '%s', which is not defined", out.default)
  end
  return out
end

-- The json serializer: csrc/json.c (jansson). Its `encode` returns the
-- text, or nil and what JSON cannot carry by path; values.lua raises that
-- as misuse, like MessagePack's refusals. serialize/unserialize are the
-- same codec in the form every serializer has.
local function json_serializer()
  local json_encode, json_decode = core.json_encode, core.json_decode
  return {
    encode = json_encode,
    serialize = function(value)
      local text, why = json_encode(value)
      if text == nil then error(why, 0) end
      return text
    end,
    unserialize = function(text)
      local ok, value = json_decode(text)
      if not ok then error(value, 0) end
      return value
    end,
  }
end

function M.new(config)
  local ok, valid = pcall(validate, config)
  if not ok then error(valid, 2) end
  return manager.new(valid, { json = json_serializer() })
end

M.CacheManager = M.new

return M
