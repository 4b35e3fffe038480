-- cachy.resty.events: invalidation events of a tiered store (cachy.tiered)
-- through a lua_shared_dict zone, so that the other workers of one nginx
-- drop their own copies of a key within a poll interval.
--
-- A channel is a counter and one entry per event in the zone, under keys
-- that begin with "\0cachy:" (a shdict store's flush leaves them alone):
-- post() takes the next number with the zone's atomic incr, then writes
-- the event under it (a key, or "" for a flush). Each process reads the
-- events after the last number it saw. An event it cannot find (not
-- written yet, evicted from a full zone, expired because the process did
-- not poll for EXPIRE seconds) or a counter that went back (evicted)
-- means "anything may have changed": the caller then drops all its copies,
-- never some.
local RESERVED = require("cachy.resty.shdict").RESERVED

local format = string.format

local M = {}

-- How long an event stays readable: a process that has not polled for
-- this long drops all its copies instead. Short, since every write keeps
-- one entry in the zone for this long.
local EXPIRE = 3
-- Beyond this many events at once, dropping everything is cheaper.
M.MAX_BATCH = 1000
local MAX_BATCH = M.MAX_BATCH

local Channel = {}
Channel.__index = Channel

-- The channel `name` on `zone` (an ngx.shared.DICT).
function M.new(zone, zone_name, name)
  local base = RESERVED .. "ev:" .. name .. ":"
  return setmetatable({ zone = zone, zone_name = zone_name, counter = base .. "n", base = base }, Channel)
end

-- The number of the last event posted (0 before the first).
function Channel:seq()
  return self.zone:get(self.counter) or 0
end

-- Posts key ("" for a flush). nil, err, code when the zone could not take
-- the counter; an event whose entry does not fit is read as missing.
function Channel:post(key)
  local zone = self.zone
  local n, err = zone:incr(self.counter, 1, 0)
  if n == nil then
    return nil, "invalidation events in lua_shared_dict '" .. self.zone_name .. "': " .. tostring(err),
      err == "no memory" and "no_memory" or "backend"
  end
  zone:set(self.base .. format("%d", n), key, EXPIRE)
  return true
end

-- Event n: its key ("" for a flush), or nil when it cannot be read.
function Channel:event(n)
  return self.zone:get(self.base .. format("%d", n))
end

-- Whether the events after `from` up to `to` may concern key: one of them
-- names it, is a flush, or cannot be read.
function Channel:touches(from, to, key)
  if to < from or to - from > MAX_BATCH then return true end
  for n = from + 1, to do
    local k = self:event(n)
    if k == nil or k == "" or k == key then return true end
  end
  return false
end

-- Calls on_key(key) for each event after `from` up to the current one, or
-- on_all() once when they cannot all be read (or are too many); returns
-- the number to read from next time.
function Channel:read(from, on_key, on_all)
  local to = self:seq()
  if to == from then return to end
  if to < from or to - from > MAX_BATCH then
    on_all()
    return to
  end
  for n = from + 1, to do
    local k = self:event(n)
    if k == nil or k == "" then
      on_all()
      return to
    end
    on_key(k)
  end
  return to
end

return M
