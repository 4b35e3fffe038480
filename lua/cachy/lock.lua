-- cachy.lock: locks on any store (SPEC section 12), and the sleep every
-- wait of the library goes through.
--
-- A lock is an item of its store: the key NAMESPACE .. name under the
-- store's prefix (tagged repositories share their store's untagged one),
-- holding its owner's token as raw bytes, with the lease as its lifetime.
-- Acquiring is the store's atomic add; releasing and refreshing are the
-- store's forget_if and touch_if, which act only while the item still
-- holds this owner's token (atomic on every built-in store; see
-- cachy.luastore for stores written in Lua). A holder that dies leaves
-- the item to expire with its lease.
--
-- Everything here is Lua, so a lock's function and the config's sleep may
-- yield.
local core = require("cachy.core")
local compat = require("cachy.compat")
local values = require("cachy.values")

local pcall = compat.pcall
local argerror = values.argerror
local now_ms, lock_token, blocking_sleep = core.now_ms, core.lock_token, core.sleep
local format, min, ceil, random = string.format, math.min, math.ceil, math.random
local type, tostring, error, setmetatable = type, tostring, error, setmetatable

local M = {}

-- Where lock items live, under the store's prefix.
M.NAMESPACE = "cachy:lock:"

-- block's waits between tries: from FIRST_WAIT, doubling up to MAX_WAIT
-- seconds, each one drawn at 0.5 to 1.5 times that so that waiters that
-- started together do not keep asking together.
local FIRST_WAIT, MAX_WAIT = 0.005, 0.1
-- Leases are whole milliseconds; past this they are as good as forever
-- but still end (every backend takes it).
local MAX_LEASE_MS = 2 ^ 52

-- ---- the sleep ---------------------------------------------------------------

-- Inside nginx: ngx.sleep where the phase allows it (it yields to the
-- event loop), the blocking sleep elsewhere (init_worker, a log phase).
local function nginx_sleep(ngx)
  local phases = require("cachy.resty.redis").COSOCKET_PHASES
  local ngx_sleep, get_phase = ngx.sleep, ngx.get_phase
  return function(seconds)
    if phases[get_phase()] then return ngx_sleep(seconds) end
    return blocking_sleep(seconds)
  end
end

local default_sleep

-- The sleep(seconds) function waits of repository `repo` go through: the
-- store's config key `sleep`, else the manager's, else by default
-- ngx.sleep inside nginx and core.sleep (blocks the process, no busy
-- wait) elsewhere. A scheduler's own may yield.
function M.sleeper(repo)
  local fn = repo._config.sleep or repo._ms.sleep
  if fn then return fn end
  if default_sleep == nil then
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and type(ngx.sleep) == "function" and type(ngx.get_phase) == "function" then
      default_sleep = nginx_sleep(ngx)
    else
      default_sleep = blocking_sleep
    end
  end
  return default_sleep
end

-- ---- arguments ------------------------------------------------------------------

local function check_repo(self, method)
  if type(self) ~= "table" or self._repo == nil then
    argerror(1, method, "cache repository expected (use a colon: cache:" .. method .. "(name, ...))", 2)
  end
  return self._repo
end

local function check_name(name, method)
  local t = type(name)
  if t == "number" then return tostring(name) end
  if t ~= "string" or name == "" then
    argerror(1, method, "name must be a non-empty string or a number, got "
      .. (t == "string" and "an empty string" or t), 2)
  end
  return name
end

local function check_owner(owner, n, method)
  local t = type(owner)
  if t == "number" then return tostring(owner) end
  if t ~= "string" or owner == "" then
    argerror(n, method, "owner must be a non-empty string, got "
      .. (t == "string" and "an empty string" or t), 2)
  end
  return owner
end

-- Seconds as a lease: whole milliseconds, at least one. `zero_ok` for
-- block's wait, where 0 means a single try.
local function check_seconds(v, n, method, zero_ok)
  if type(v) ~= "number" or v ~= v or v == math.huge or v < 0 or (v == 0 and not zero_ok) then
    local what = type(v) == "number" and tostring(v) or type(v)
    argerror(n, method, "seconds must be a number " .. (zero_ok and "from 0" or "above 0")
      .. ", got " .. what, 2)
  end
  local ms = ceil(v * 1000)
  if ms < 1 and not zero_ok then ms = 1 end
  return min(ms, MAX_LEASE_MS)
end

local function check_fn(fn, n, method)
  if fn == nil or type(fn) == "function" then return end
  local mt = getmetatable(fn)
  if type(mt) == "table" and type(mt.__call) == "function" then return end
  argerror(n, method, "function expected, got " .. type(fn), 2)
end

-- ---- the lock ---------------------------------------------------------------------

local Lock = {}
Lock.__index = Lock

local function new(repo, name, lease_ms, owner)
  return setmetatable({
    _repo = repo._base, _name = name, _key = M.NAMESPACE .. name,
    _lease_ms = lease_ms, _owner = owner or lock_token(),
  }, Lock)
end

local function check_lock(self, method)
  if getmetatable(self) ~= Lock then
    argerror(1, method, "cache lock expected (use a colon: lock:" .. method .. "(...))", 2)
  end
end

local function store_of(self)
  return self._repo:_store()
end

-- true, false, or nil, err, code.
local function acquire(self, method)
  local ms = self._lease_ms
  if ms == nil then
    error("lock '" .. self._name .. "' was restored without a lease: give restore_lock its seconds to "
      .. method .. " it", 3)
  end
  return store_of(self):add(self._key, self._owner, ms)
end

-- After fn ran under the lock: release it (a failure there leaves it to
-- its lease), then fn's results, or its error raised again unchanged.
local function finish(self, ok, ...)
  store_of(self):forget_if(self._key, self._owner)
  if not ok then error((...), 0) end
  return ...
end

local function run(self, fn)
  return finish(self, pcall(fn))
end

-- get(): true if acquired now, false if another owner holds it.
-- get(fn): acquired, fn's results after fn ran and the lock was released;
-- else false.
function Lock:get(fn)
  check_lock(self, "get")
  check_fn(fn, 1, "get")
  local ok, err, code = acquire(self, "get")
  if ok == nil then return nil, err, code end
  if not ok then return false end
  if fn == nil then return true end
  return run(self, fn)
end

-- block(seconds [, fn]): tries until acquired or `seconds` have passed,
-- sleeping through the config's sleep in between. Acquired: as get;
-- else false and why.
function Lock:block(seconds, fn)
  check_lock(self, "block")
  local wait_ms = check_seconds(seconds, 1, "block", true)
  check_fn(fn, 2, "block")
  local deadline = now_ms() + wait_ms
  local sleep = M.sleeper(self._repo)
  local step = FIRST_WAIT
  while true do
    local ok, err, code = acquire(self, "block")
    if ok == nil then return nil, err, code end
    if ok then
      if fn == nil then return true end
      return run(self, fn)
    end
    local left = deadline - now_ms()
    if left <= 0 then
      return false, format("lock '%s' not acquired within %g s", self._name, seconds)
    end
    sleep(min(step * (0.5 + random()), left / 1000))
    step = min(step * 2, MAX_WAIT)
  end
end

-- true if this owner held the lock and it is released now, else false.
function Lock:release()
  check_lock(self, "release")
  return store_of(self):forget_if(self._key, self._owner)
end

-- Extends the lease to `seconds` from now (default: the lock's lease) if
-- this owner still holds it: true, else false.
function Lock:refresh(seconds)
  check_lock(self, "refresh")
  local ms = self._lease_ms
  if seconds ~= nil or ms == nil then ms = check_seconds(seconds, 1, "refresh") end
  return store_of(self):touch_if(self._key, self._owner, ms)
end

-- The owner's token, to release the lock from elsewhere (restore_lock).
function Lock:owner()
  check_lock(self, "owner")
  return self._owner
end

-- Releases the lock whoever holds it: true if one was held.
function Lock:force_release()
  check_lock(self, "force_release")
  return store_of(self):forget(self._key)
end

function Lock:__tostring()
  return "cachy.Lock '" .. self._name .. "'"
end

-- ---- the repository's methods ------------------------------------------------------

-- cache:lock(name, seconds [, owner]): a lock with a lease of `seconds`;
-- owner, a token of the caller's, defaults to a random one.
function M.lock(self, name, seconds, owner)
  local repo = check_repo(self, "lock")
  name = check_name(name, "lock")
  local ms = check_seconds(seconds, 2, "lock")
  if owner ~= nil then owner = check_owner(owner, 3, "lock") end
  return new(repo, name, ms, owner)
end

-- cache:restore_lock(name, owner [, seconds]): the lock `owner` holds (or
-- held), e.g. to release it from another process; seconds is its lease for
-- get and block, which a lock restored without it cannot do.
function M.restore_lock(self, name, owner, seconds)
  local repo = check_repo(self, "restore_lock")
  name = check_name(name, "restore_lock")
  owner = check_owner(owner, 2, "restore_lock")
  local ms
  if seconds ~= nil then ms = check_seconds(seconds, 3, "restore_lock") end
  return new(repo, name, ms, owner)
end

M.Lock = Lock

return M
