-- cachy.manager: the CacheManager (SPEC sections 1, 2 and 5): named
-- repositories, drivers registered from Lua, serializers, close, and the
-- manager as a decorator. Every repository method also works on the
-- manager, on its default store.
local core = require("cachy.core")
local repository = require("cachy.repository")
local decorator = require("cachy.decorator")

local Repository = repository.Repository

local Manager = {}
Manager.__index = Manager
for name, fn in pairs(Repository) do
  if type(fn) == "function" and not name:match("^__") then Manager[name] = fn end
end

local M = {}

-- The repository named `name` (nil: the default), raising at `level`.
local function lookup(mgr, name, level)
  if name == nil then return mgr._repo end
  local r = mgr._repos[name]
  if r == nil then error("cache store '" .. tostring(name) .. "' is not defined", level + 1) end
  return r
end

function Manager.store(self, name)
  if type(self) ~= "table" or self._repos == nil then
    error("bad argument #1 to 'store' (cache manager expected (use a colon: cache:store(name)))", 2)
  end
  local r = lookup(self, name, 2)
  return r
end

function Manager.extend(self, driver, factory)
  if type(driver) ~= "string" then
    error("bad argument #1 to 'extend' (string expected, got " .. type(driver) .. ")", 2)
  end
  if type(factory) ~= "function" then
    error("bad argument #2 to 'extend' (function expected, got " .. type(factory) .. ")", 2)
  end
  self._ms.drivers[driver] = factory
  return self
end

function Manager.register_serializer(self, name, ser)
  if type(name) ~= "string" then
    error("bad argument #1 to 'register_serializer' (string expected, got " .. type(name) .. ")", 2)
  end
  if type(ser) ~= "table" then
    error("bad argument #2 to 'register_serializer' (table expected, got " .. type(ser) .. ")", 2)
  end
  if type(ser.serialize) ~= "function" or type(ser.unserialize) ~= "function" then
    error("bad argument #2 to 'register_serializer' (serializer needs functions 'serialize' and 'unserialize')", 2)
  end
  if name == "msgpack" then
    error("bad argument #1 to 'register_serializer' ('msgpack' is built in and cannot be replaced)", 2)
  end
  self._ms.serializers[name] = { serialize = ser.serialize, unserialize = ser.unserialize }
  return self
end

-- Closes every store's connections; each reopens on its next use.
function Manager.close(self)
  for _, r in pairs(self._repos) do
    if r._st then r._st:close() end
  end
end

-- (not tail calls: decorate's errors name the caller's line)
function Manager:__call(a, b, c)
  local wrapped = decorator.decorate(self, true, lookup, a, b, c)
  return wrapped
end

function Repository:__call(fn, opts)
  local wrapped = decorator.decorate(self, false, lookup, fn, opts)
  return wrapped
end

function Manager:__tostring()
  return self._tostring
end

Manager.__close = Manager.close
Manager.__gc = Manager.close

-- config was validated by cachy/init.lua.
function M.new(config, serializers)
  local ms = {
    prefix = config.prefix or "",
    serializer = config.serializer or "msgpack",
    default_ms = core.ttl(config.minutes or 60) or -1,
    drivers = {},
    serializers = serializers,
    on_error = config.on_error,
    sleep = config.sleep,           -- waits (cachy.lock.sleeper)
    lock = config.lock, wait = config.wait,   -- single flight (cachy.flight)
    defer = config.defer,           -- flexible's refreshes
    last_report = {},
  }
  local mgr = {}
  local addr = tostring(mgr):match("0x%x+") or tostring(mgr):match("[%x]+$")
  mgr._tostring = "cachy.CacheManager (" .. addr .. ")"
  mgr._ms = ms
  mgr._repos = {}
  for name, store_config in pairs(config.stores) do
    mgr._repos[name] = repository.new(ms, name, store_config)
  end
  mgr._repo = mgr._repos[config.default]
  ms.repos = mgr._repos      -- a tiered store's levels
  -- A C store's fast methods go into its repository and, for the default
  -- store, into the manager, once the store is opened.
  function ms.bind(repo, fast)
    repository.install(repo, fast)
    if repo == mgr._repo then repository.install(mgr, fast) end
  end
  -- (a tiered store's get: see cachy.tiered's fast_get)
  function ms.bind_get(repo, get)
    repo.get = get
    if repo == mgr._repo then mgr.get = get end
  end
  return setmetatable(mgr, Manager)
end

return M
