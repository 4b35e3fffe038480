-- spec/helpers/luastore.lua: a store written in Lua (SPEC section 8) over a
-- plain table, for `cache:extend`. The specs inspect its table, count the
-- calls to each method, and switch it into failing by returning `nil, err`
-- or by raising, to check how the repository reports a store's failures.
--
--   local luastore = require("helpers.luastore")
--   local backend = luastore.new()              -- { optional = false } omits many/put_many
--   cache:extend("luatable", backend:factory())
--   backend.data["app:k"]                       -- bytes as the store received them
--   backend.calls.get                           -- calls to get so far
--   backend.fail = "return" | "raise" | nil     -- cause: backend.cause
local system = require("system")

local M = {}

local Backend = {}
Backend.__index = Backend

local math_type = math.type
local maxinteger = math.maxinteger
local mininteger = math.mininteger

local function now()
  return system.monotime()
end

-- The value under key, dropping it when its time has passed.
local function live(self, key)
  local exp = self.expires[key]
  if exp and exp <= now() then
    self.data[key] = nil
    self.expires[key] = nil
  end
  return self.data[key]
end

local function store(self, key, bytes, seconds)
  assert(type(key) == "string", "key must reach the store as a string")
  assert(type(bytes) == "string", "value must reach the store as a string")
  assert(type(seconds) == "number" and seconds >= 0, "seconds must be a number >= 0")
  self.data[key] = bytes
  self.expires[key] = seconds > 0 and now() + seconds or nil
end

-- Counts the call; when the failure switch is on, fails the way it says.
-- Returns true when the method must return `nil, cause` itself.
local function failing(self, method)
  self.calls[method] = (self.calls[method] or 0) + 1
  if self.fail == "raise" then
    error(self.cause)
  end
  return self.fail == "return"
end

-- Decimal integer text, as the library writes top-level integers.
local function parse_int(s)
  if type(s) ~= "string" or not s:match("^%-?%d+$") then return nil end
  local v = tonumber(s)
  if math_type and math_type(v) ~= "integer" then return nil end
  return v
end

local function format_int(v)
  if math_type then return tostring(v) end
  return string.format("%d", v)
end

local methods = {}

function methods.get(self, key)
  if failing(self.backend, "get") then return nil, self.backend.cause end
  return live(self.backend, key)
end

function methods.put(self, key, bytes, seconds)
  if failing(self.backend, "put") then return nil, self.backend.cause end
  store(self.backend, key, bytes, seconds)
  return true
end

function methods.add(self, key, bytes, seconds)
  if failing(self.backend, "add") then return nil, self.backend.cause end
  if live(self.backend, key) ~= nil then return false end
  store(self.backend, key, bytes, seconds)
  return true
end

function methods.forget(self, key)
  if failing(self.backend, "forget") then return nil, self.backend.cause end
  local b = self.backend
  if live(b, key) == nil then return false end
  b.data[key], b.expires[key] = nil, nil
  return true
end

function methods.increment(self, key, n)
  local b = self.backend
  if failing(b, "increment") then return nil, b.cause end
  local cur = live(b, key)
  local v = 0
  if cur ~= nil then
    v = parse_int(cur)
    if v == nil then
      return nil, string.format("value of key '%s' is not an integer", key)
    end
  end
  if maxinteger and ((n > 0 and v > maxinteger - n) or (n < 0 and v < mininteger - n)) then
    return nil, string.format("increment of key '%s' overflows 64 bits", key)
  end
  v = v + n
  b.data[key] = format_int(v)   -- the expiry, if any, stays
  return v
end

-- prefix: the repository's prefix when it passes one; without it, everything.
function methods.flush(self, prefix)
  local b = self.backend
  if failing(b, "flush") then return nil, b.cause end
  b.flush_args[#b.flush_args + 1] = prefix == nil and "(none)" or prefix
  for k in pairs(b.data) do
    if type(prefix) ~= "string" or k:sub(1, #prefix) == prefix then
      b.data[k], b.expires[k] = nil, nil
    end
  end
  return true
end

function methods.many(self, keys)
  local b = self.backend
  if failing(b, "many") then return nil, b.cause end
  local out = {}
  for _, k in ipairs(keys) do
    out[k] = live(b, k)
  end
  return out
end

function methods.put_many(self, tbl, seconds)
  local b = self.backend
  if failing(b, "put_many") then return nil, b.cause end
  for k, v in pairs(tbl) do
    store(b, k, v, seconds)
  end
  return true
end

-- The optional lock methods (opts.locks): atomic here, as the store is
-- one table in one process.
function methods.forget_if(self, key, bytes)
  local b = self.backend
  if failing(b, "forget_if") then return nil, b.cause end
  if live(b, key) ~= bytes then return false end
  b.data[key], b.expires[key] = nil, nil
  return true
end

function methods.touch_if(self, key, bytes, seconds)
  local b = self.backend
  if failing(b, "touch_if") then return nil, b.cause end
  if live(b, key) ~= bytes then return false end
  store(b, key, bytes, seconds)
  return true
end

function methods.close(self)
  local b = self.backend
  b.calls.close = (b.calls.close or 0) + 1
end

local optional = { many = true, put_many = true }
local lock_methods = { forget_if = true, touch_if = true }

-- opts.optional = false: the store tables have no many/put_many.
-- opts.locks = true: they have forget_if and touch_if.
-- opts.cause: the failure text (default "backend down").
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    data = {},
    expires = {},
    calls = {},
    configs = {},        -- every store_config the factory received
    flush_args = {},     -- what each flush call was given
    fail = nil,
    cause = opts.cause or "backend down",
    optional = opts.optional ~= false,
    locks = opts.locks == true,
  }, Backend)
end

function Backend:reset_calls()
  self.calls = {}
end

-- Live keys, sorted (expired ones dropped).
function Backend:keys()
  local out = {}
  for k in pairs(self.data) do
    if live(self, k) ~= nil then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

-- The factory for cache:extend; each store it makes shares this backend.
function Backend:factory()
  return function(store_config)
    self.configs[#self.configs + 1] = store_config
    local s = { backend = self }
    for name, fn in pairs(methods) do
      if (self.optional or not optional[name]) and (self.locks or not lock_methods[name]) then
        s[name] = fn
      end
    end
    return s
  end
end

return M
