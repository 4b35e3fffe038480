-- cachy.flight: single flight (SPEC section 12). When callers miss one key
-- at once in remember, remember_forever, flexible or a decorated function,
-- one of them runs the function; the others wait for its value.
--
-- Within a process, a table of entries per store (repository._flights)
-- says which key some coroutine is computing; other coroutines wait on the
-- entry through the config's sleep (which must yield for them to make
-- progress). Across processes, the computing coroutine holds a lock item
-- of its store (cachy.lock) while its function runs; a process that finds
-- the lock taken polls the key and the lock until the value is there, the
-- lock is free (it then computes, after reading the key once more), or
-- `wait` has passed (it then computes without the lock: fail open). The
-- memory store lives in one process, so it takes no lock item.
--
-- A runner whose function raises must not leave its entry (and its lock)
-- behind. A pcall at every level would cap a decorated recursive
-- function at the C stack's ~200 levels on PUC Lua, so only the outermost
-- computation of each coroutine runs its function under pcall (guarded);
-- the ones nested inside it register with it, and an error that unwinds
-- them fails them there. The hit paths do none of this.
local core = require("cachy.core")
local compat = require("cachy.compat")
local lock = require("cachy.lock")

local pcall, pack, unpack = compat.pcall, compat.pack, compat.unpack
local running, status = coroutine.running, coroutine.status
local now_ms, ttl_of = core.now_ms, core.ttl
local min, max, random, huge = math.min, math.max, math.random, math.huge
local type, error, pairs, tostring, rawget = type, error, pairs, tostring, rawget

local M = {}

-- The main coroutine where coroutine.running() says nil (Lua 5.1), and the
-- owner of an entry whose work was handed to the config's defer.
local MAIN, DEFERRED = {}, {}

-- Waits between looks at the entry of another coroutine of this process,
-- and between polls of the store while another process computes: from the
-- first step, doubling up to the last, in seconds.
local LOCAL_STEPS = { 0.001, 0.02 }
local STORE_STEPS = { 0.005, 0.03 }

-- A lock item's lease: long enough for slow functions (processes that
-- arrive meanwhile wait, and each computes itself once its wait has
-- passed); a holder that dies leaves it to end by itself.
local MIN_LEASE = 30

-- ---- options ----------------------------------------------------------------

-- Options each method takes; the values' checks return the option in the
-- form used here, or nil and what is wrong.
local function seconds(v)
  if type(v) ~= "number" or v ~= v or v < 0 or v == huge then
    return nil, "must be a number of seconds from 0"
  end
  return v
end

local function boolean(v)
  if type(v) ~= "boolean" then return nil, "must be true or false" end
  return v
end

-- A window in minutes: ms (false: none).
local function minutes(v)
  if type(v) ~= "number" or v ~= v then return nil, "must be a number of minutes" end
  local ms = ttl_of(v)
  if ms == 0 then ms = 2 ^ 53 end        -- past the largest lifetime: for ever
  return ms
end

-- A lifetime in any TTL form: ms (0: forever, false: nothing stored).
local function lifetime(v)
  local ms = ttl_of(v)
  if ms == nil then return nil, "must be a number of minutes or a date table" end
  return ms
end

local CHECKS = { lock = boolean, wait = seconds, stale_if_error = minutes, neg_minutes = lifetime }

M.REMEMBER = { lock = true, wait = true, stale_if_error = true, neg_minutes = true }
M.FLEXIBLE = { lock = true, wait = true, stale_if_error = true }
M.DECORATOR = { lock = true, wait = true, stale_if_error = true, neg_minutes = true }

-- The options of one call: o.lock, o.wait (seconds), o.sie_ms (ms or
-- nil), o.neg_ms (ms, false, or nil), from opts over the store's config
-- over the manager's. Without opts, one table per store. An option not in
-- `allowed` (nor in `skip`, the caller's own), or a bad value, calls
-- fail(message).
function M.options(repo, opts, allowed, fail, skip)
  local base = repo._base
  if opts == nil and base._flight_options then return base._flight_options end
  local config, ms = base._config, base._ms
  local o = { lock = true, wait = 5 }
  if config.lock ~= nil then o.lock = config.lock elseif ms.lock ~= nil then o.lock = ms.lock end
  o.wait = config.wait or ms.wait or o.wait
  if opts == nil then
    base._flight_options = o
    return o
  end
  for name, v in pairs(opts) do
    if not (skip and skip[name]) then
      if type(name) ~= "string" or not allowed[name] then
        fail("unknown option '" .. tostring(name) .. "'")
      end
      local value, why = CHECKS[name](v)
      if value == nil then
        fail("option '" .. name .. "' " .. why .. ", got "
          .. (type(v) == "number" and tostring(v) or type(v)))
      end
      if name == "stale_if_error" then
        o.sie_ms = value or nil
      elseif name == "neg_minutes" then
        o.neg_ms = value
      else
        o[name] = value
      end
    end
  end
  return o
end

-- ---- sleeping and deferring ---------------------------------------------------

-- Whether a wait here lets other coroutines of this process run: a sleep
-- from the config is taken to yield (a scheduler's); inside nginx,
-- ngx.sleep yields where cosockets work. The built-in blocking sleep does
-- not, and waiting on another coroutine of this process through it could
-- only end with `wait`.
local function sleep_yields(repo)
  local base = repo._base
  if base._config.sleep or base._ms.sleep then return true end
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then return false end
  return require("cachy.resty.redis").COSOCKET_PHASES[ngx.get_phase()] == true
end

-- Sleeps the next step of a wait that ends at deadline (ms); the next step.
local function pause(sleep, step, steps, deadline)
  local left = (deadline - now_ms()) / 1000
  if left > 0 then sleep(min(step * (0.5 + random()), left)) end
  return min(step * 2, steps[2])
end

-- Runs job() through the config's defer: the store's, the manager's, else
-- ngx.timer.at(0, job) inside nginx (not in its init phase, which has no
-- timers), else at once in the calling coroutine. false, err when defer
-- refused it.
function M.defer(repo, job)
  local base = repo._base
  local defer = base._config.defer or base._ms.defer
  if defer then return defer(job) ~= false end
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.timer) == "table" and type(ngx.get_phase) == "function"
      and ngx.get_phase() ~= "init" then
    local ok, err = ngx.timer.at(0, job)
    if not ok then return false, err end
    return true
  end
  job()
  return true
end

-- ---- the failures no caller sees ------------------------------------------------

-- A failure the caller gets no nil, err for (a store failing under a
-- decorated function, a refresh that failed in a timer): the config's
-- on_error(err, store_name), or one line a second per store, on stderr, or
-- inside nginx in its error log at the warn level. on_error must not yield
-- (SPEC section 10).
local function log_line(err)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and ngx.log and ngx.WARN then
    ngx.log(ngx.WARN, "cachy: ", err)
  else
    io.stderr:write("cachy: ", err, "\n")
  end
end

function M.report(repo, err)
  local ms, name = repo._ms, repo._name
  if ms.on_error then return ms.on_error(err, name) end
  local now = now_ms()
  local last = ms.last_report[name]
  if last == nil or now - last >= 1000 then
    ms.last_report[name] = now
    log_line(err)
  end
end

-- ---- entries ------------------------------------------------------------------------

-- coroutine -> the list of entries started inside its outermost runner's
-- function (see the top); weak, so a dead coroutine's goes with it.
local guards = setmetatable({}, { __mode = "k" })

-- The key of repo's flights (and lock) for key: a tagged repository's
-- items are apart from the untagged ones.
local function flight_key(repo, key)
  local t = repo._tags
  if t == nil then return key end
  return "\0" .. table.concat(t, "\0") .. "\0" .. key
end

-- Whether nobody will finish entry e: its coroutine is dead, or the work
-- handed to defer has not finished within its lease.
local function abandoned(e)
  local owner = e.owner
  if owner == MAIN then return false end
  if owner == DEFERRED then return now_ms() > e.until_ms end
  return status(owner) == "dead"
end

local function lease(o)
  return max(MIN_LEASE, 2 * o.wait)
end

-- Ends entry e: state "done" (bytes: the serializer's bytes of the value,
-- nil for a nil result), "stale" (bytes of the stale value; err) or
-- "failed" (waiters go round again); releases its lock.
local function finish(e, state, bytes, err)
  if e.state then return end
  e.state, e.bytes, e.err = state, bytes, err
  local flights = e.flights
  if flights[e.fkey] == e then flights[e.fkey] = nil end
  local list = e.guard
  if list then
    local n = #list
    while n > 0 and list[n].state do
      list[n] = nil
      n = n - 1
    end
  end
  local lk = e.lock
  if lk then
    e.lock = nil
    lk:release()
  end
end
M.finish = finish

-- What a read of key finds for a waiter: true and the serializer's bytes
-- (nil for a cached nil); false for nothing yet; nil when the store fails.
local function poll(repo, key)
  local bytes, err = repo:_get(key)
  if bytes == nil then
    if err then return nil end
    return false
  end
  if string.byte(bytes, 1) ~= 0xC1 then return true, bytes end
  local kind, _, visible, inner = core.envelope_open(bytes)
  if not kind or visible <= 0 then return false end
  if kind == "n" then return true, nil end
  return true, inner
end

-- This coroutine holds the lock item lk for e: true when the value is there
-- after all (the runner before may have written it and let go just now;
-- e is then done), false when it is to compute.
local function holding(repo, key, e, lk)
  e.lock = lk
  local found, bytes = poll(repo, key)
  if found then
    finish(e, "done", bytes)
    return true
  end
  return false
end

-- In another process's flight: waits for its value, or for its lock.
-- true when e has finished with the value (state "done"); false when this
-- coroutine is to compute, holding the lock (e.lock) or not.
local function across(repo, key, e, o, lk, deadline)
  local counts = repo._counts
  counts.lock_waits = counts.lock_waits + 1
  local sleep = lock.sleeper(repo)
  local step = STORE_STEPS[1]
  while true do
    step = pause(sleep, step, STORE_STEPS, deadline)
    local found, bytes = poll(repo, key)
    if found then
      finish(e, "done", bytes)
      return true
    end
    if found == nil or now_ms() >= deadline then return false end
    local got = lk:get()
    if got == nil then return false end
    if got then return holding(repo, key, e, lk) end
  end
end

-- Starts computing key in e, this coroutine's new entry: takes the lock
-- item where the store is shared between processes. true when the value
-- came from another process meanwhile (e is then done).
local function start(repo, key, e, o, deadline)
  local driver = repo._base._config.driver
  if driver == "memory" or driver == "dict" then return false end
  local lk = lock.lock(repo, "flight:" .. e.fkey, lease(o))
  local got = lk:get()
  if got == nil then return false end       -- the store fails: compute without it
  if got then return holding(repo, key, e, lk) end
  if o.wait <= 0 then return false end
  return across(repo, key, e, o, lk, deadline or now_ms() + o.wait * 1000)
end

-- Single flight for key on repository repo, before computing it. Returns
--   an entry with state "done" or "stale": another caller's outcome
--     (e.bytes, e.err; see finish);
--   an entry without state: the caller computes, then calls finish(e, ...)
--     (or, when e.outer is set, runs its function through M.guarded);
--   false: the caller computes on its own (lock off, wait over, or a wait
--     here could not let the runner go on).
function M.begin(repo, key, o)
  if not o.lock then return false end
  local flights = repo._base._flights
  local fkey = flight_key(repo, key)
  local me = running() or MAIN
  local deadline
  local counted = false
  while true do
    local e = flights[fkey]
    if e ~= nil and (e.owner == me or abandoned(e)) then e = nil end
    if e == nil then
      e = { owner = me, flights = flights, fkey = fkey, waiters = 0 }
      flights[fkey] = e
      local list = guards[me]
      if list then
        list[#list + 1] = e
        e.guard = list
      else
        e.outer = true
      end
      start(repo, key, e, o, deadline)
      return e
    end
    -- another coroutine of this process computes it
    if o.wait <= 0 or not sleep_yields(repo) then return false end
    if not counted then
      counted = true
      repo._counts.lock_waits = repo._counts.lock_waits + 1
    end
    deadline = deadline or now_ms() + o.wait * 1000
    local sleep = lock.sleeper(repo)
    local step = LOCAL_STEPS[1]
    e.waiters = e.waiters + 1
    while e.state == nil and not abandoned(e) and now_ms() < deadline do
      step = pause(sleep, step, LOCAL_STEPS, deadline)
    end
    e.waiters = e.waiters - 1
    local state = e.state
    if state == "done" or state == "stale" then return e end
    if state == nil and not abandoned(e) then return false end     -- the wait ran out
    -- its runner failed: compute, or wait for whoever does now
  end
end

-- An entry for work handed to defer (flexible's refresh): nil when some
-- coroutine of this process already computes or refreshes key.
function M.claim(repo, key, o)
  local flights = repo._base._flights
  local fkey = flight_key(repo, key)
  local e = flights[fkey]
  if e ~= nil and not abandoned(e) then return nil end
  e = { owner = DEFERRED, until_ms = now_ms() + lease(o) * 1000, flights = flights, fkey = fkey,
        waiters = 0 }
  flights[fkey] = e
  return e
end

-- The lock item of deferred work on key (e from claim): true when this
-- process holds it (e.lock), or the store is process-local or failing, or
-- lock is off; false when another process is at it.
function M.claim_across(repo, key, e, o)
  local driver = repo._base._config.driver
  if not o.lock or driver == "memory" or driver == "dict" then return true end
  local lk = lock.lock(repo, "flight:" .. e.fkey, lease(o))
  local got = lk:get()
  if got then e.lock = lk end
  return got ~= false
end

-- ---- the outermost runner ----------------------------------------------------------

local function protected(list, fn, ...)
  guards[running() or MAIN] = list
  return fn(...)
end

-- fn(...) under pcall: true, results; or false, the error, with the
-- entries nested inside failed. For callers that answer a raise with a
-- stale value (stale_if_error) or end their own entry.
function M.protect(fn, ...)
  local list = {}
  local me = running() or MAIN
  local outer = guards[me]
  local r = pack(pcall(protected, list, fn, ...))
  guards[me] = outer
  for i = #list, 1, -1 do
    local left = list[i]         -- (finishing one pops those above it that are done)
    if left then finish(left, "failed") end
  end
  return unpack(r, 1, r.n)
end

local function settle(e, ok, ...)
  if not ok then
    finish(e, "failed")
    error((...), 0)
  end
  return ...
end

-- fn(...) for the outermost runner of this coroutine (e.outer): under
-- pcall, with the entries of the runners nested inside it failed when an
-- error unwinds them (or when they were left behind by one caught inside);
-- fn's error is raised again unchanged, after e is failed.
function M.guarded(e, fn, ...)
  return settle(e, M.protect(fn, ...))
end

M.poll = poll
M.flight_key = flight_key

return M
