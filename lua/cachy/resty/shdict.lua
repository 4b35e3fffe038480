-- cachy.resty.shdict: the shdict driver (SPEC section 11), a store over a
-- lua_shared_dict zone that every worker of one nginx shares, behind the
-- bytes interface of the other stores (cachy.luastore has it: get, put,
-- add, forget, incr, flush, many, put_many, forget_if, touch_if,
-- prune, ttl, close, describe; lifetimes in milliseconds).
--
-- Values are the serializer's bytes, as on every store, with one
-- exception: a top-level integer (the decimal text every store keeps) is
-- held as a shared-dict number, so that ngx.shared.DICT:incr, atomic
-- across workers, is the counter. Shared-dict numbers are doubles, so a
-- counter is exact within +-(2^53 - 1): a step that would leave that range
-- gives "overflow", as a step past 64 bits does on the other stores.
--
-- flush with a prefix removes the keys under it (get_keys, then delete:
-- it walks the whole zone, under the zone's lock while the keys are
-- listed); without one, every key of the zone but cachy's own (keys that
-- begin with "\0cachy:", where tiered stores keep their invalidation
-- events). Keys longer than a shared dict takes (65535 bytes) are kept
-- under a hashed form.
--
-- Locks (SPEC section 12): a shared dict has no compare-and-delete, so
-- forget_if and touch_if read the item, compare, and act only when its
-- lifetime has LEASE_MARGIN left: then it cannot expire (and another
-- owner's add take its place) between the read and the change, which
-- follow each other in the worker without a yield. An item that
-- force_release removes and another owner adds in those microseconds is
-- the race left.
local core = require("cachy.core")

local hash, quote_key, encode = core.hash, core.quote_key, core.encode
local format, find, sub = string.format, string.find, string.sub
local type, tonumber, floor, setmetatable = type, tonumber, math.floor, setmetatable

local M = {}

-- Keys that begin with this belong to cachy itself (cachy.tiered's events).
M.RESERVED = "\0cachy:"
local RESERVED = M.RESERVED

-- The counters a double holds exactly.
local MAX_EXACT = 2 ^ 53 - 1
local MAX_KEY = 65535
-- The lifetime an item must have left for forget_if and touch_if to act
-- on it (seconds); one closer to its end is left to expire.
local LEASE_MARGIN = 0.1

local Store = {}
Store.__index = Store

-- A store on zone `dict` for the store `name`. Raises outside nginx or
-- when the zone is not declared: the store cannot work at all.
function M.new(name, prefix, config)
  local zone_name = config.dict
  local desc = "store '" .. name .. "' (shdict " .. zone_name .. ")"
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.shared) ~= "table" then
    error(desc .. ": lua_shared_dict zone '" .. zone_name
      .. "' can only be used inside nginx (ngx.shared is not available)", 0)
  end
  local zone = ngx.shared[zone_name]
  if zone == nil then
    error(desc .. ": nginx has no lua_shared_dict zone '" .. zone_name
      .. "' (declare it in the http block: lua_shared_dict " .. zone_name .. " 10m;)", 0)
  end
  return setmetatable({ name = name, prefix = prefix or "", zone = zone, zone_name = zone_name,
                        desc = desc }, Store)
end

function Store:describe()
  return self.desc
end

local function fail(self, code, cause)
  return nil, self.desc .. ": " .. cause, code
end

-- The zone's key for key: prefixed; hashed past the zone's key limit.
local function zkey(self, key)
  local k = self.prefix .. key
  if #k <= MAX_KEY then return k end
  return sub(k, 1, #self.prefix + 256) .. "~h" .. hash(k)
end

-- What the zone holds for bytes: a number for an integer's decimal text
-- (in the exact range, written as format("%d") writes it), else the bytes.
local function stored(bytes)
  if #bytes <= 17 and find(bytes, "^%-?%d+$") then
    local n = tonumber(bytes)
    if n >= -MAX_EXACT and n <= MAX_EXACT and format("%d", n) == bytes then return n end
  end
  return bytes
end

-- The bytes of what the zone holds (numbers and booleans another module
-- set are read as the values they are).
local function bytes_of(v)
  if type(v) == "string" then return v end
  if type(v) == "number" and v % 1 == 0 and v >= -MAX_EXACT and v <= MAX_EXACT then
    return format("%d", v)
  end
  return (encode(v, "value"))
end

-- A failed write of the zone: nginx says "no memory" when the value cannot
-- fit even after evicting the least recently used items.
local function write_fail(self, err)
  if err == "no memory" then return fail(self, "no_memory", "no memory (the zone is full or the value larger than it)") end
  return fail(self, "backend", tostring(err))
end

function Store:get(key)
  local v = self.zone:get(zkey(self, key))
  if v == nil then return nil end
  return bytes_of(v)
end

local function seconds(ms)
  if ms == nil or ms <= 0 then return 0 end
  return ms / 1000
end

function Store:put(key, bytes, ms)
  local ok, err = self.zone:set(zkey(self, key), stored(bytes), seconds(ms))
  if not ok then return write_fail(self, err) end
  return true
end

function Store:add(key, bytes, ms)
  local ok, err = self.zone:add(zkey(self, key), stored(bytes), seconds(ms))
  if ok then return true end
  if err == "exists" then return false end
  return write_fail(self, err)
end

-- true when a value was there: read just before the delete, so two
-- forgets racing on one key may both say true.
function Store:forget(key)
  local k = zkey(self, key)
  local zone = self.zone
  local had = zone:get(k) ~= nil
  zone:delete(k)
  return had
end

-- incr(key, by [, shown [, verb]]): ngx.shared.DICT:incr, atomic across
-- workers; a missing key starts at 0 without expiry, an existing one
-- keeps its expiry.
function Store:incr(key, by, shown_key, verb)
  local k, zone = zkey(self, key), self.zone
  local function not_integer()
    return fail(self, "not_integer", "value of key '" .. quote_key(shown_key or key) .. "' is not an integer")
  end
  local function overflow()
    return fail(self, "overflow", (verb == "decrement" and "decrement" or "increment") .. " of key '"
      .. quote_key(shown_key or key) .. "' leaves the integers a shared dict holds exactly (+-(2^53 - 1))")
  end
  local old = zone:get(k)
  if old ~= nil then
    if type(old) ~= "number" or old % 1 ~= 0 then return not_integer() end
    local want = old + by
    if want > MAX_EXACT or want < -MAX_EXACT then return overflow() end
  elseif by > MAX_EXACT or by < -MAX_EXACT then
    return overflow()
  end
  local n, err = zone:incr(k, by, 0)
  if n == nil then
    if err == "not a number" then return not_integer() end
    return write_fail(self, err)
  end
  if n > MAX_EXACT or n < -MAX_EXACT then
    -- another worker stepped it in between: take this step back
    zone:incr(k, -by)
    return overflow()
  end
  return n
end

function Store:flush()
  local prefix, zone = self.prefix, self.zone
  local plen = #prefix
  local keys = zone:get_keys(0)
  for i = 1, #keys do
    local k = keys[i]
    if sub(k, 1, plen) == prefix and sub(k, 1, #RESERVED) ~= RESERVED then zone:delete(k) end
  end
  return true
end

function Store:many(keys)
  local out, zone = {}, self.zone
  for i = 1, #keys do
    local v = zone:get(zkey(self, keys[i]))
    if v ~= nil then out[i] = bytes_of(v) end
  end
  return out
end

function Store:put_many(keys, vals, ms)
  local zone, exptime = self.zone, seconds(ms)
  for i = 1, #keys do
    local ok, err = zone:set(zkey(self, keys[i]), stored(vals[i]), exptime)
    if not ok then return write_fail(self, err) end
  end
  return true
end

-- Whether the zone's item under k holds exactly bytes with enough life
-- left to be changed safely (see the top): true; false; or "ending" when
-- it holds them but is about to expire by itself.
local function held(zone, k, bytes)
  local v = zone:get(k)
  if v == nil or bytes_of(v) ~= bytes then return false end
  local left = zone:ttl(k)
  if left == nil or left < 0 then return false end
  if left ~= 0 and left < LEASE_MARGIN then return "ending" end
  return true
end

-- forget_if(key, bytes): removes key if it holds exactly bytes. An item
-- within LEASE_MARGIN of its end is left to expire, and counts as removed.
function Store:forget_if(key, bytes)
  local k, zone = zkey(self, key), self.zone
  local h = held(zone, k, bytes)
  if h == true then zone:delete(k) end
  return h ~= false
end

-- touch_if(key, bytes, ms): a lifetime of ms from now, if key holds
-- exactly bytes (and has not come within LEASE_MARGIN of its end).
function Store:touch_if(key, bytes, ms)
  local k, zone = zkey(self, key), self.zone
  if held(zone, k, bytes) ~= true then return false end
  local ok, err = zone:expire(k, seconds(ms))
  if not ok then
    if err == "not found" then return false end
    return fail(self, "backend", tostring(err))
  end
  return true
end

-- The lifetime left, in ms (0: no expiry); nothing for a miss.
function Store:ttl(key)
  local left = self.zone:ttl(zkey(self, key))
  if left == nil or left < 0 then return nil end
  if left == 0 then return 0 end
  local ms = floor(left * 1000)
  return ms > 0 and ms or 1
end

-- Frees the zone's expired items (of every store on the zone: they are
-- expired for all).
function Store:prune()
  self.zone:flush_expired()
  return true
end

function Store:close() end

return M
