-- cachy.tiered: the tiered driver (SPEC section 11), a store made of other
-- stores of the same manager, fastest first, behind the bytes interface
-- (cachy.luastore has it). The last level is the authority.
--
--  * get answers from the first level that holds the key and copies the
--    bytes into the levels above it, under the same key, for the lifetime
--    the key has left there (the level's ttl method; a level that cannot
--    tell, such as memcached, counts as "no expiry"), never longer than
--    max_stale seconds: a copy is at most that old.
--  * writes (put, add, increment, forget, flush, put_many) go to the
--    authority (add and increment are atomic there), then the key is
--    removed from the levels above, so the next read copies it again.
--
-- Coherence: a process sees another's change when its copies expire,
-- within max_stale. Inside nginx, copies held per worker (a memory level,
-- a store written in Lua) are also dropped through invalidation events in
-- a lua_shared_dict zone (cachy.resty.events), read by every worker every
-- POLL seconds. A read that copies a key first applies the events posted
-- so far, makes no copy when one of those posted since it began reading
-- concerns the key, and checks again after copying: a value read before a
-- write is never left as a copy after the writer removed the copies. A
-- writer posts the event before it removes the copies, so either the
-- reader sees the event, or its copy is older than the removal.
--
-- Locks (SPEC section 12) live at the authority: forget_if and touch_if
-- act there (atomic as the authority makes them), then remove the copies
-- of the key as a write does.
local M = {}

-- Seconds between two reads of the events by a worker.
M.POLL = 0.04
local POLL = M.POLL

-- Drivers whose stores are per process: a copy there is seen by that
-- process only, so other workers need an event to drop it.
local PER_PROCESS = { memory = true, dict = true }

local Tiered = {}
Tiered.__index = Tiered

-- The longest life of a copy, in ms: max_stale, less 5 ms, since the
-- memory store's clock (the kernel's coarse one) may run up to a tick
-- behind, so a copy may outlive its lifetime by that much.
local function copy_cap(max_stale)
  local ms = math.floor(max_stale * 1000)
  if ms > 50 then ms = ms - 5 end
  return ms
end

local function in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.shared) == "table" and type(ngx.timer) == "table"
end

-- The store `name` over the stores config.levels of manager state ms
-- (their repositories are ms.repos). Raises when a level cannot be
-- opened, or when events are needed and have no zone.
function M.new(name, config, ms)
  local names = config.levels
  local self = setmetatable({
    name = name,
    max_stale_ms = copy_cap(config.max_stale or 1),
    levels = {},
    desc = "store '" .. name .. "' (tiered " .. table.concat(names, ", ") .. ")",
  }, Tiered)
  local per_process
  for i, lname in ipairs(names) do
    local repo = ms.repos[lname]
    local lconfig = repo._config
    local st = repo:_store()
    local local_level = PER_PROCESS[lconfig.driver] or ms.drivers[lconfig.driver] ~= nil
    self.levels[i] = { name = lname, st = st, per_process = local_level }
    if local_level and i < #names then per_process = per_process or lname end
    if lconfig.driver == "shdict" and not self.events_zone then self.events_zone = lconfig.dict end
  end
  self.n = #names
  self.auth = self.levels[self.n].st
  self.l1_repo = ms.repos[names[1]]
  if per_process and in_nginx() then
    local zone_name = config.events or self.events_zone
    if zone_name == nil then
      error(self.desc .. ": inside nginx, level '" .. per_process .. "' is per worker, so changes"
        .. " reach the other workers through events in a lua_shared_dict zone: give field 'events'"
        .. " (a zone's name) or a shdict level", 0)
    end
    local zone = ngx.shared[zone_name]
    if zone == nil then
      error(self.desc .. ": nginx has no lua_shared_dict zone '" .. zone_name .. "' for its events", 0)
    end
    self.ev = require("cachy.resty.events").new(zone, zone_name, name)
    self.seen = self.ev:seq()
    self.on_key = function(key) self:drop_local(key) end
    self.on_all = function() self:drop_local(nil) end
  end
  return self
end

function Tiered:describe()
  return self.desc
end

-- A level's failure, named as this store's: "store 't' (tiered ...):
-- store 'redis' (redis ...): cause".
local function failed(self, err, code)
  return nil, self.desc .. ": " .. tostring(err), code
end

-- ---- events (inside nginx) ---------------------------------------------------

-- Drops this process's copies: of key, or (key nil) all of them.
function Tiered:drop_local(key)
  local levels = self.levels
  for i = 1, self.n - 1 do
    local l = levels[i]
    if l.per_process then
      if key then l.st:forget(key) else l.st:flush() end
    end
  end
end

function Tiered:poll()
  self.seen = self.ev:read(self.seen, self.on_key, self.on_all)
end

-- The worker's poller: a chain of timers holding the store weakly, so a
-- store (and its manager) that is no longer used is collected and the
-- chain ends. Timers cannot start in every phase (init): then the next
-- call tries again.
local function start_poller(self)
  local ref = setmetatable({ st = self }, { __mode = "v" })
  local tick
  tick = function(premature)
    local st = ref.st
    if premature or st == nil then return end
    local ok, err = pcall(st.poll, st)
    if not ok then ngx.log(ngx.ERR, st.desc, ": reading invalidation events failed: ", err) end
    local again = ngx.timer.at(POLL, tick)
    if not again then st.polling = false end
  end
  local ok, started = pcall(ngx.timer.at, POLL, tick)
  self.polling = ok and started and true or false
end

-- Before each call: this worker's poller runs. (A store opened in nginx's
-- init phase cannot start one; each worker then starts its own.)
local function ready(self)
  start_poller(self)
end

-- ---- reads ---------------------------------------------------------------------

-- The lifetime to give a copy of key read from level l: what it has left
-- there, at most max_stale; nil when the key is gone from l meanwhile.
local function copy_ms(self, l, key)
  local cap = self.max_stale_ms
  local ttl = l.st.ttl
  if ttl == nil then return cap end
  local ms, err = ttl(l.st, key)
  if ms == nil then
    if err == nil then return nil end
    return cap          -- cannot tell (misuse) or failed: no expiry known
  end
  if ms == 0 or ms > cap then return cap end
  return ms
end

-- Copies bytes of key, read from level i, into the levels above it; s0:
-- the events' number before the read. Inside nginx the events up to now
-- are applied first (so a change posted before the copy cannot drop it
-- later), no copy is made when one of them concerns key, and the copy
-- is dropped again when one posted while copying does.
local function fill(self, key, bytes, i, s0)
  local ev = self.ev
  local s1
  if ev then
    self:poll()
    s1 = self.seen
    if ev:touches(s0, s1, key) then return end
  end
  local ms = copy_ms(self, self.levels[i], key)
  if ms == nil then return end
  local levels = self.levels
  for j = 1, i - 1 do levels[j].st:put(key, bytes, ms) end
  if ev and ev:touches(s1, ev:seq(), key) then
    for j = 1, i - 1 do levels[j].st:forget(key) end
  end
end

function Tiered:get(key)
  if self.ev and not self.polling then ready(self) end
  local levels = self.levels
  local v = levels[1].st:get(key)
  if v ~= nil then return v end
  local ev = self.ev
  local s0 = ev and ev:seq()
  local n = self.n
  for i = 2, n do
    local err, code
    v, err, code = levels[i].st:get(key)
    if v ~= nil then
      fill(self, key, v, i, s0)
      return v
    end
    -- a level above the authority that fails is passed over
    if err and i == n then return failed(self, err, code) end
  end
  return nil
end

function Tiered:many(keys)
  if self.ev and not self.polling then ready(self) end
  local out, missing = {}, {}
  for i = 1, #keys do missing[i] = i end
  local ev = self.ev
  local s0 = ev and ev:seq()
  local levels, n = self.levels, self.n
  for i = 1, n do
    local ks = {}
    for j = 1, #missing do ks[j] = keys[missing[j]] end
    local got, err, code = levels[i].st:many(ks)
    if got == nil then
      if i == n then return failed(self, err, code) end
    else
      local still = {}
      for j = 1, #missing do
        local idx, bytes = missing[j], got[j]
        if bytes ~= nil then
          out[idx] = bytes
          if i > 1 then fill(self, keys[idx], bytes, i, s0) end
        else
          still[#still + 1] = idx
        end
      end
      missing = still
    end
    if #missing == 0 then break end
  end
  return out
end

-- A repository get for this store that answers a first-level hit through
-- that level's own repository get when it is bound to C (the memory
-- store's, lcachy_fast.c, or cachy.jit's): the value decoded in one call,
-- as a memory-store hit costs, and counted in `counts` (the tiered
-- repository's; the first level's own stats count it too). Anything else
-- (a miss, a key to refuse, a worker whose poller is not running yet)
-- goes to slow_get. nil when the first level has no such get.
function Tiered:fast_get(slow_get, counts)
  local l1 = self.l1_repo
  local fast = l1._fast
  if fast == nil then return nil end
  local fget = fast.get
  local st = self
  return function(repo, key, default)
    if type(key) == "string" and key ~= "" and (st.polling or not st.ev) then
      local v = fget(l1, key)
      if v ~= nil then
        counts.hits = counts.hits + 1
        return v
      end
    end
    return slow_get(repo, key, default)
  end
end

-- The lifetime the key has left at the authority.
function Tiered:ttl(key)
  local ttl = self.auth.ttl
  if ttl == nil then return nil, self.desc .. ": its last level cannot tell a key's lifetime", "misuse" end
  local ms, err, code = ttl(self.auth, key)
  if err then return failed(self, err, code) end
  return ms
end

-- ---- writes ---------------------------------------------------------------------

-- After a change of key at the authority (key nil: a flush): the event
-- first, then the copies above the authority. The first failure, if any.
local function invalidate(self, key)
  if self.ev and not self.polling then ready(self) end
  local ok, err, code = true, nil, nil
  local ev = self.ev
  if ev then
    local posted, perr, pcode = ev:post(key or "")
    if not posted then ok, err, code = failed(self, perr, pcode) end
  end
  local levels = self.levels
  for i = 1, self.n - 1 do
    local st = levels[i].st
    local done, lerr, lcode
    if key then done, lerr, lcode = st:forget(key) else done, lerr, lcode = st:flush() end
    if done == nil and ok then ok, err, code = failed(self, lerr, lcode) end
  end
  return ok, err, code
end

-- What the authority's write returned, unless removing the copies failed.
local function written(self, key, r, err, code)
  local ok, ierr, icode = invalidate(self, key)
  if r == nil then return failed(self, err, code) end
  if not ok then return nil, ierr, icode end
  return r
end

function Tiered:put(key, bytes, ms)
  -- (a write that failed may still have reached the authority: the copies go either way)
  return written(self, key, self.auth:put(key, bytes, ms))
end

-- A conditional write (add, forget_if, touch_if): false when the
-- authority changed nothing, so no copy goes.
local function if_done(self, key, done, err, code)
  if done == false then return false end
  return written(self, key, done, err, code)
end

function Tiered:add(key, bytes, ms)
  return if_done(self, key, self.auth:add(key, bytes, ms))
end

function Tiered:forget(key)
  return written(self, key, self.auth:forget(key))
end

function Tiered:incr(key, by, shown_key, verb)
  local n, err, code = self.auth:incr(key, by, shown_key, verb)
  if n == nil and (code == "not_integer" or code == "overflow") then return failed(self, err, code) end
  return written(self, key, n, err, code)
end

-- Flushes the authority, then every level above it (all of their items).
function Tiered:flush()
  return written(self, nil, self.auth:flush())
end

-- (a lock's item: acquired by add, released and refreshed by these)
function Tiered:forget_if(key, bytes)
  return if_done(self, key, self.auth:forget_if(key, bytes))
end

function Tiered:touch_if(key, bytes, ms)
  return if_done(self, key, self.auth:touch_if(key, bytes, ms))
end

function Tiered:put_many(keys, vals, ms)
  local r, err, code = self.auth:put_many(keys, vals, ms)
  local ok, ierr, icode = true, nil, nil
  for i = 1, #keys do
    local done, e, c = invalidate(self, keys[i])
    if not done and ok then ok, ierr, icode = nil, e, c end
  end
  if r == nil then return failed(self, err, code) end
  if not ok then return nil, ierr, icode end
  return r
end

function Tiered:prune()
  return nil, self.desc .. ": the tiered driver has no prune (prune its levels)", "misuse"
end

-- The levels are the manager's stores: the manager closes them.
function Tiered:close() end

return M
