-- cachy.luastore: a store written in Lua (SPEC section 8), registered with
-- cache:extend, behind the same bytes interface as the C stores' handles
-- (get, put, add, forget, incr, flush, many, put_many, forget_if,
-- touch_if, stats, prune, close, describe). The store's methods are
-- called from Lua, so they may yield (cosockets, a scheduler). A method
-- that raises, or returns nil, err, becomes
-- nil, "store 'NAME' (DRIVER): err", "backend".
local compat = require("cachy.compat")

local pcall, is_integer = compat.pcall, compat.is_integer
local floor = math.floor

local LuaStore = {}
LuaStore.__index = LuaStore

local M = {}

function M.new(name, driver, prefix, config, factory)
  return setmetatable({
    name = name, driver = driver, prefix = prefix, config = config, factory = factory,
    instance = nil,
  }, LuaStore)
end

function LuaStore:describe()
  return "store '" .. self.name .. "' (" .. self.driver .. ")"
end

local function fail(self, msg, code)
  return nil, self:describe() .. ": " .. msg, code or "backend"
end

-- What an error value says: strings and numbers as they are, others by type.
local function cause_of(e)
  local t = type(e)
  if t == "string" or t == "number" then return tostring(e) end
  return t
end

-- The store's instance, made by the driver's factory on first use and
-- again after close.
function LuaStore:open()
  local inst = self.instance
  if inst then return inst end
  local ok, made, err = pcall(self.factory, self.config)
  if not ok then return fail(self, cause_of(made)) end
  if made == nil and err ~= nil then return fail(self, cause_of(err)) end
  local t = type(made)
  if t ~= "table" and t ~= "userdata" then
    return fail(self, "the driver's factory returned a " .. t .. ", not a store table", "misuse")
  end
  self.instance = made
  return made
end

-- The result of a method call: true, first result; or nil, err, code.
local function settle(self, ok, a, b)
  if not ok then return fail(self, cause_of(a)) end
  if a == nil and b ~= nil then return fail(self, cause_of(b)) end
  return true, a
end

-- instance:method(...); a missing method is an error unless `optional`,
-- which returns false instead.
local function call(self, method, optional, ...)
  local inst, err, code = self:open()
  if not inst then return nil, err, code end
  local fn = inst[method]
  if fn == nil then
    if optional then return false end
    return fail(self, "the store has no method '" .. method .. "'", "misuse")
  end
  return settle(self, pcall(fn, inst, ...))
end

local function seconds(ms)
  if ms % 1000 == 0 then return floor(ms / 1000) end
  return ms / 1000
end

function LuaStore:get(key)
  local ok, v, code = call(self, "get", false, self.prefix .. key)
  if not ok then return nil, v, code end
  if v == nil or type(v) == "string" then return v end
  return fail(self, "get returned a " .. type(v) .. ", not a string", "corrupt")
end

function LuaStore:put(key, bytes, ms)
  local ok, err, code = call(self, "put", false, self.prefix .. key, bytes, seconds(ms))
  if not ok then return nil, err, code end
  return true
end

function LuaStore:add(key, bytes, ms)
  local ok, v, code = call(self, "add", false, self.prefix .. key, bytes, seconds(ms))
  if not ok then return nil, v, code end
  return not not v
end

function LuaStore:forget(key)
  local ok, v, code = call(self, "forget", false, self.prefix .. key)
  if not ok then return nil, v, code end
  return not not v
end

function LuaStore:incr(key, by)
  local ok, v, code = call(self, "increment", false, self.prefix .. key, by)
  if not ok then return nil, v, code end
  if not is_integer(v) then
    return fail(self, "increment returned a " .. type(v) .. ", not an integer")
  end
  return v
end

-- flush(prefix): the prefix ("" for none) lets the store keep other
-- managers' keys, as the built-in stores do.
function LuaStore:flush()
  local ok, err, code = call(self, "flush", false, self.prefix)
  if not ok then return nil, err, code end
  return true
end

-- many({ key, ... }) -> { [i] = bytes } for the keys found; one get per
-- key when the store has no many.
function LuaStore:many(keys)
  local full = {}
  for i = 1, #keys do full[i] = self.prefix .. keys[i] end
  local ok, t, code = call(self, "many", true, full)
  local out = {}
  if ok == false then
    for i = 1, #keys do
      local v, err, c = self:get(keys[i])
      if err then return nil, err, c end
      out[i] = v
    end
    return out
  end
  if not ok then return nil, t, code end
  if type(t) ~= "table" then
    return fail(self, "many returned a " .. type(t) .. ", not a table")
  end
  for i = 1, #full do
    local v = t[full[i]]
    if type(v) == "string" then out[i] = v end
  end
  return out
end

function LuaStore:put_many(keys, vals, ms)
  local tbl = {}
  for i = 1, #keys do tbl[self.prefix .. keys[i]] = vals[i] end
  local ok, err, code = call(self, "put_many", true, tbl, seconds(ms))
  if ok == false then
    for i = 1, #keys do
      local done, e, c = self:put(keys[i], vals[i], ms)
      if not done then return nil, e, c end
    end
    return true
  end
  if not ok then return nil, err, code end
  return true
end

-- forget_if(key, bytes) and touch_if(key, bytes, ms), for locks: the
-- store's own methods when it has them (atomic, if the store makes them
-- so); without, a get, the comparison, then forget or put, which another
-- writer can come between (README, "Locks").
local function held(self, key, bytes)
  local cur, err, code = self:get(key)
  if err then return nil, err, code end
  return cur == bytes
end

function LuaStore:forget_if(key, bytes)
  local ok, v, code = call(self, "forget_if", true, self.prefix .. key, bytes)
  if ok == false then
    ok, v, code = held(self, key, bytes)
    if not ok then return ok, v, code end
    return self:forget(key)
  end
  if not ok then return nil, v, code end
  return not not v
end

function LuaStore:touch_if(key, bytes, ms)
  local ok, v, code = call(self, "touch_if", true, self.prefix .. key, bytes, seconds(ms))
  if ok == false then
    ok, v, code = held(self, key, bytes)
    if not ok then return ok, v, code end
    return self:put(key, bytes, ms)
  end
  if not ok then return nil, v, code end
  return not not v
end

function LuaStore:stats()
  return fail(self, "the lua driver keeps no stats", "misuse")
end

function LuaStore:prune()
  return fail(self, "the lua driver has no prune", "misuse")
end

-- The store's own close() is optional; its failure has nobody to report to.
function LuaStore:close()
  local inst = self.instance
  if inst == nil then return end
  self.instance = nil
  if inst.close then pcall(inst.close, inst) end
end

return M
