-- cachy.remember: remember, remember_forever and flexible (SPEC sections 3
-- and 12): the value under a key, else the function's, computed once among
-- concurrent callers (cachy.flight), with the stale values of section 12:
-- flexible's stale window, stale_if_error and neg_minutes.
--
-- An item that is served past the time it reads as fresh (flexible's,
-- one kept for stale_if_error, a cached nil) is stored in an envelope
-- (csrc/envelope.h) that says until when it is fresh and until when every
-- other method sees it; the store keeps it for the extra window. Other
-- items are the serializer's bytes alone.
local core = require("cachy.core")
local values = require("cachy.values")
local flight = require("cachy.flight")

local envelope, envelope_open = core.envelope, core.envelope_open
local argerror, decode, try_encode, quote_key = values.argerror, values.decode, values.try_encode,
  core.quote_key
local begin, finish, protect = flight.begin, flight.finish, flight.protect
local byte, huge, tostring = string.byte, math.huge, tostring
local KEEP_MS = values.KEEP_MS

local M = {}

-- What is under key: true and the serializer's bytes (nil for a cached
-- nil), the ms it is still fresh and the ms it is still visible for (huge
-- for plain bytes; negative once past); false for nothing; nil, err, code.
local function look(self, key)
  local bytes, err, code = self:_get(key)
  if bytes == nil then
    if err then return nil, err, code end
    return false
  end
  if byte(bytes, 1) ~= 0xC1 then return true, bytes, huge, huge end
  local kind, fresh, visible, inner = envelope_open(bytes)
  if not kind then return values.corrupt(self, key, fresh) end
  if kind == "n" then inner = nil end
  return true, inner, fresh, visible
end

-- Writes bytes under key for ms, counted in stats. true, or nil, err, code.
local function write(self, key, bytes, ms)
  local counts = self._counts
  local ok, err, code = self:_write(key, bytes, ms, false)
  if ok == nil then
    counts.errors = counts.errors + 1
    return nil, err, code
  end
  counts.writes = counts.writes + 1
  return true
end

-- Stores the serializer's bytes under key, fresh for `fresh` ms and seen
-- by every method for `visible` ms (0: for ever, false: not stored), kept
-- o.sie_ms longer for stale_if_error. true, or nil, err, code.
local function store(self, key, bytes, fresh, visible, o)
  if visible == false then return true end
  local sie = visible ~= 0 and o.sie_ms or nil
  local ms = visible
  if fresh ~= visible or sie then
    bytes = envelope("v", fresh or 0, visible, bytes)
    if visible ~= 0 then ms = visible + (sie or 0) + KEEP_MS end
  end
  return write(self, key, bytes, ms)
end

-- A cached nil for o.neg_ms (neg_minutes). true, or nil, err.
local function store_nil(self, key, o)
  local ms = o.neg_ms
  if not ms then return true end
  return write(self, key, envelope("n", ms, ms), ms ~= 0 and ms + KEEP_MS or 0)
end

-- The outcome of the flight this caller waited for (entry e).
local function waited(self, key, e)
  local bytes, err = e.bytes, e.err
  if e.state == "stale" then self._counts.stale = self._counts.stale + 1 end
  if bytes == nil then return nil, err end
  local ok, v, code = decode(self, key, bytes)
  if not ok then return nil, v, code end
  return v, err
end

-- The function failed with err: the stale value's bytes if there are any
-- (stale_if_error), with err; else nil (the caller fails as it would).
local function serve_stale(self, key, e, stale, err)
  local ok, v = decode(self, key, stale)
  if not ok then return nil end
  self._counts.stale = self._counts.stale + 1
  if e then finish(e, "stale", stale, err) end
  return true, v, err
end

-- A miss: fn's value, once among concurrent callers (e), stored fresh for
-- `fresh` and visible for `visible` ms. stale: the bytes of a value past
-- its lifetime that stale_if_error may serve. Raises at the caller of the
-- method (the two frames above).
local function compute(self, method, key, fresh, visible, fn, o, stale)
  local e = begin(self, key, o)
  if e and e.state then return waited(self, key, e) end
  local ok, value, ferr
  if e or stale then
    ok, value, ferr = protect(fn)
  else
    ok, value, ferr = true, fn()
  end
  if not ok or (value == nil and ferr ~= nil) then
    local why = ok and ferr or value
    if stale then
      local served, v, err = serve_stale(self, key, e, stale, why)
      if served then return v, err end
    end
    if e then finish(e, "failed") end
    if not ok then error(value, 0) end
    return nil, ferr
  end
  if value == nil then
    local _, err = store_nil(self, key, o)
    if e then finish(e, "done", nil) end
    return nil, err
  end
  local bytes, err, code = try_encode(self, value)
  if code == "unstorable" then
    if e then finish(e, "failed") end
    argerror(3, method, "its function's value cannot be stored: " .. err, 3)
  end
  if bytes ~= nil then
    local _
    _, err = store(self, key, bytes, fresh, visible, o)
  end
  -- waiters decode their own copy; without bytes they compute themselves
  if e then finish(e, bytes ~= nil and "done" or "failed", bytes) end
  if err then return value, err end
  return value
end

-- The store failing on the read: fn's value, and the failure (fail open;
-- nothing is stored).
local function fail_open(self, fn, err)
  self._counts.errors = self._counts.errors + 1
  local value = fn()
  return value, err
end

-- The refresh of a value in its stale window, through the config's defer,
-- once among this process's coroutines and the processes sharing the
-- store. A failure there reaches no caller: it goes to on_error.
local function refresh_later(self, key, fresh, visible, fn, o)
  local e = flight.claim(self, key, o)
  if e == nil then return end
  local counts = self._counts
  local function job(premature)
    if premature or not flight.claim_across(self, key, e, o) then return finish(e, "failed") end
    local ok, value, ferr = protect(fn)
    local bytes, err
    if ok and value ~= nil then
      bytes, err = try_encode(self, value)
      if bytes ~= nil then
        local _
        _, err = store(self, key, bytes, fresh, visible, o)
      end
    elseif ok and ferr == nil then
      err = select(2, store_nil(self, key, o))
    else
      err = tostring(ok and ferr or value)
    end
    if bytes ~= nil or (ok and value == nil and ferr == nil) then
      counts.refreshes = counts.refreshes + 1
      finish(e, "done", bytes)
    else
      finish(e, "failed")
    end
    if err ~= nil then
      flight.report(self, self:_describe() .. ": refresh of key '" .. quote_key(key) .. "' failed: "
        .. tostring(err))
    end
  end
  local ok, err = flight.defer(self, job)
  if not ok then
    finish(e, "failed")
    flight.report(self, self:_describe() .. ": refresh of key '" .. quote_key(key)
      .. "' could not be deferred: " .. tostring(err))
  end
end

-- remember, remember_forever (fresh and visible: the lifetime, 0 for
-- ever, false for not stored) and flexible (is_flexible: fresh for
-- `fresh` ms, then served stale up to `visible` ms while one refresh runs).
function M.remember(self, method, key, fresh, visible, fn, o, is_flexible)
  local counts = self._counts
  local found, bytes, fresh_left, visible_left = look(self, key)
  if found and visible_left > 0 then
    counts.hits = counts.hits + 1
    if bytes == nil then return nil end
    local ok, v, code = decode(self, key, bytes)
    if not ok then return fail_open(self, fn, v, code) end
    if is_flexible and fresh_left <= 0 then
      counts.stale = counts.stale + 1
      refresh_later(self, key, fresh, visible, fn, o)
    end
    return v
  end
  if found == nil then return fail_open(self, fn, bytes) end
  counts.misses = counts.misses + 1
  local stale
  if found and bytes ~= nil and o.sie_ms and -visible_left <= o.sie_ms then stale = bytes end
  local v, err, code = compute(self, method, key, fresh, visible, fn, o, stale)
  return v, err, code
end

return M
