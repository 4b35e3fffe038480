-- cachy.decorator: the manager (and each repository) as a memoizing
-- decorator (SPEC section 5). The wrapped function is called from here, in
-- Lua, so it may yield, and recursion costs Lua frames only: a decorated
-- recursive function goes as deep as the undecorated one. The store fails
-- open: the function's results are returned, the failure reported through
-- the config's on_error.
local core = require("cachy.core")
local compat = require("cachy.compat")
local values = require("cachy.values")
local flight = require("cachy.flight")

local pcall, pack, unpack = compat.pcall, compat.pack, compat.unpack
local args_key, encode_tuple, decode_tuple = core.args_key, core.encode_tuple, core.decode_tuple
local envelope, envelope_open = core.envelope, core.envelope_open
local ttl_of = core.ttl
local live, report = values.live, flight.report
local begin, finish, guarded, protect = flight.begin, flight.finish, flight.guarded, flight.protect

local M = {}

-- PUC Lua 5.1 shows a run of tail calls as one more stack level, which
-- error levels must count to reach the caller of a decorated function.
local TAIL = (_VERSION == "Lua 5.1" and not jit) and 1 or 0

-- The identity of a function: "source:linedefined" (a callable's __call).
local function identity(fn)
  if type(fn) ~= "function" then fn = getmetatable(fn).__call end
  local info = debug.getinfo(fn, "S")
  local src = info.source
  local first = src:sub(1, 1)
  if first == "@" or first == "=" then
    return src:sub(2) .. ":" .. info.linedefined
  end
  -- a chunk loaded from a string: named by its text's hash
  return "chunk-" .. core.hash(src) .. ":" .. info.linedefined
end

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and type(mt.__call) == "function"
end

-- The decorator's own options; the single-flight and stale ones are
-- cachy.flight's.
local OPTIONS = { key = true, minutes = true, store = true, should_cache = true }

-- Reads the bytes a decorated call stored, for a store without the fast
-- path: the same answers as the C tuple_get (lcachy_fast.c), counted the
-- same: true, results... on a hit; false, key, err, code, args...
-- otherwise; nil, why for arguments that cannot be part of a key.
local function generic_tuple_get(repo)
  local counts = repo._counts
  return function(prefix, ...)
    local key, why = args_key(prefix, ...)
    if key == nil then return nil, why end
    local found, bytes, code = repo:_get(key)
    if found ~= nil then
      local v, lwhy = live(found)
      if v then
        local got = pack(decode_tuple(v))
        if got[1] ~= nil then
          counts.hits = counts.hits + 1
          return true, unpack(got, 2, got.n)
        end
        lwhy = got[2]
      elseif v == false then
        counts.misses = counts.misses + 1
        return false, key, nil, nil, ...
      end
      counts.errors = counts.errors + 1
      local _, err, c = values.corrupt(repo, key, lwhy)
      return false, key, err, c, ...
    end
    if bytes then counts.errors = counts.errors + 1 else counts.misses = counts.misses + 1 end
    return false, key, bytes, code, ...
  end
end

-- results..., then err (a stale answer: the error as the value after them).
local function with_error(err, ok, ...)
  if ok == nil then return nil, err end
  if err == nil then return ... end
  local r = pack(...)
  r.n = r.n + 1
  r[r.n] = err
  return unpack(r, 1, r.n)
end

-- Raises msg at the first caller outside this file (the results of a
-- decorated call are stored frames away from its caller, through tail
-- calls that PUC Lua 5.1 counts and later versions do not).
local HERE = debug.getinfo(1, "S").source
local function raise_outside(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil then break end
    if info.source ~= HERE and info.what ~= "tail" then break end
    level = level + 1
  end
  error(msg, level)
end

-- Lua's failure convention: nil, err is returned but not cached.
local function is_failure(r, first)
  return r.n >= first + 1 and r[first] == nil and r[first + 1] ~= nil
end

-- Builds the wrapper of fn on repository repo. minutes: a TTL form, or a
-- function of the results giving one; o: cachy.flight's options;
-- should_cache: nil, or a function of the results (false or nil: not stored).
function M.wrap(repo, fn, prefix, minutes, o, should_cache)
  local fixed_ms         -- lifetime for every call, unless minutes is a date or a function
  local minutes_fn = type(minutes) == "function" and minutes
  if type(minutes) ~= "table" and not minutes_fn then fixed_ms = ttl_of(minutes, repo._ms.default_ms) end
  local counts = repo._counts
  local lock, sie, neg_ms = o.lock, o.sie_ms, o.neg_ms

  -- f(results r) for the options that are functions: raised again
  -- unchanged after ending entry e.
  local function ask(e, f, r)
    local got = pack(pcall(f, unpack(r, 1, r.n)))
    if not got[1] then
      if e then finish(e, "failed") end
      error(got[2], 0)
    end
    return got[2]
  end

  -- The lifetime of results r: ms, 0 for ever, false for not stored.
  local function lifetime(r, e)
    if neg_ms ~= nil and r[1] == nil then return neg_ms end
    if fixed_ms ~= nil then return fixed_ms end
    if minutes_fn then
      local chosen = ask(e, minutes_fn, r)
      local ms, why = ttl_of(chosen, repo._ms.default_ms)
      if ms == nil then return nil, "option 'minutes' returned a bad lifetime: " .. why end
      return ms
    end
    return ttl_of(minutes) or false
  end

  -- Stores results r under key (raising, after ending entry e, when they
  -- cannot be stored); the bytes of their tuple when they were made here.
  local function store(key, r, e)
    local ms, why = true, nil
    if should_cache and not ask(e, should_cache, r) then ms = false end
    if ms then ms, why = lifetime(r, e) end
    if ms == nil then
      if e then finish(e, "failed") end
      raise_outside("cache: " .. why .. " (in '" .. prefix .. "')")
    end
    if ms == false then return end
    local fast = not sie and repo._tags == nil and repo._base._fast
    local ok, err, code, bytes
    if fast then
      ok, err, code = fast.tuple_put(key, ms, r.n, unpack(r, 1, r.n))
    else
      bytes, why = encode_tuple(r.n, unpack(r, 1, r.n))
      if bytes == nil then
        ok, err, code = nil, why, "unstorable"
      else
        local out, life = bytes, ms
        if sie and ms ~= 0 then out, life = envelope("v", ms, ms, bytes), ms + sie + values.KEEP_MS end
        ok, err, code = repo:_write(key, out, life, false)
        if ok then counts.writes = counts.writes + 1 end
        if ok == nil then counts.errors = counts.errors + 1 end
      end
    end
    if code == "unstorable" then
      if e then finish(e, "failed") end
      raise_outside("cannot cache the results of '" .. prefix .. "': " .. err)
    end
    if ok == nil then report(repo, err) end
    return bytes
  end

  -- The results r of a call that missed key (err: the store failed
  -- reading it, so nothing is stored); e: its single-flight entry.
  local function complete(key, e, r, err)
    if is_failure(r, 1) then
      if e then finish(e, "failed") end
    elseif err == nil then
      local bytes = store(key, r, e)
      if e then
        if bytes == nil and e.waiters > 0 then bytes = encode_tuple(r.n, unpack(r, 1, r.n)) end
        finish(e, bytes and "done" or "failed", bytes)
      end
    end
    return unpack(r, 1, r.n)
  end

  -- The tuple under key kept for stale_if_error, if it expired at most
  -- that long ago.
  local function stale_tuple(key)
    local bytes = repo:_get(key)
    if bytes == nil or bytes:byte(1) ~= 0xC1 then return nil end
    local kind, _, visible, inner = envelope_open(bytes)
    if kind ~= "v" or -visible > sie then return nil end
    return inner
  end

  -- fn(...) under pcall, for stale_if_error: a failure (a raise, or nil,
  -- err) answers with the stale results and the error, if there are any.
  local function run_sie(key, err, e, ...)
    local r = pack(protect(fn, ...))
    if r[1] and not is_failure(r, 2) then return complete(key, e, pack(unpack(r, 2, r.n)), err) end
    local why = r[1] and r[3] or r[2]
    local stale = err == nil and stale_tuple(key)
    if stale then
      counts.stale = counts.stale + 1
      if e then finish(e, "stale", stale, why) end
      return with_error(why, decode_tuple(stale))
    end
    if e then finish(e, "failed") end
    if not r[1] then error(why, 0) end
    return unpack(r, 2, r.n)
  end

  -- The outcome of the flight this call waited for (entry e).
  local function waited(e)
    if e.state == "stale" then counts.stale = counts.stale + 1 end
    return with_error(e.err, decode_tuple(e.bytes))
  end

  local function run_outer(key, e, ...)
    local r = pack(guarded(e, fn, ...))
    return complete(key, e, r)
  end

  -- A miss (or a failing store, err): call fn once among concurrent
  -- callers, cache what it returned. The frames live while fn runs are
  -- this one's, with as many slots as before single flight (e reuses the
  -- code's), so recursion goes as deep.
  local function miss(key, err, e, ...)
    e = false
    if err then
      report(repo, err)
    elseif lock then
      e = begin(repo, key, o)
      if e and e.state then return waited(e) end
    end
    if sie then return run_sie(key, err, e, ...) end
    if e and e.outer then return run_outer(key, e, ...) end
    local r = pack(fn(...))
    return complete(key, e, r, err)
  end

  local function settle(found, ...)
    if found then return ... end
    if found == false then return miss(...) end
    -- "argument #2 is a function" -> "... with argument #2: it is a function"
    local why = ...
    local arg, rest = why:match("^(argument #.-) is (.*)$")
    if arg then error("cannot cache a call with " .. arg .. ": it is " .. rest, 2 + TAIL) end
    error("cannot cache a call: " .. why, 2 + TAIL)
  end

  local get
  local function wrapper(...)
    if get == nil then
      repo:_store()
      local fast = repo._tags == nil and repo._base._fast
      get = fast and fast.tuple_get or generic_tuple_get(repo)
    end
    return settle(get(prefix, ...))
  end

  -- cache:refresh(wrapper, ...): the call now, stored.
  local function refresh(...)
    local key, why = args_key(prefix, ...)
    if key == nil then return nil, why end
    local r = pack(fn(...))
    counts.refreshes = counts.refreshes + 1
    return key, complete(key, false, r)
  end

  local ms = repo._ms
  local known = ms.decorated
  if known == nil then
    known = setmetatable({}, { __mode = "k" })
    ms.decorated = known
  end
  known[wrapper] = { repo = repo, prefix = prefix, refresh = refresh }
  return wrapper
end

-- The wrapper's record for cache:invalidate and cache:refresh; raises as
-- argument 1 of method when fn is not a function this manager decorated.
local function decorated(self, fn, method)
  if type(self) ~= "table" or self._ms == nil then
    error("bad argument #1 to '" .. method .. "' (cache expected (use a colon: cache:" .. method
      .. "(fn, ...)))", 3)
  end
  local known = self._ms.decorated
  local info = known and known[fn]
  if info == nil then
    error("bad argument #1 to '" .. method .. "' (a function decorated by this cache expected, got "
      .. type(fn) .. ")", 3)
  end
  return info
end

-- "argument #2 is a function" from args_key, as argument n of method
-- (the decorated function's arguments follow it).
local function bad_args(method, why)
  local i, rest = why:match("^argument #(%d+) is (.*)$")
  if i then error("bad argument #" .. (tonumber(i) + 1) .. " to '" .. method .. "' (it is " .. rest .. ")", 3) end
  error("bad argument to '" .. method .. "' (" .. why .. ")", 3)
end

-- cache:invalidate(fn, ...): forgets the cached results of fn(...); true
-- if there were some.
function M.invalidate(self, fn, ...)
  local info = decorated(self, fn, "invalidate")
  local key, why = args_key(info.prefix, ...)
  if key == nil then bad_args("invalidate", why) end
  local repo = info.repo
  local removed, err, code = repo:_forget(key)
  if removed == nil then
    repo._counts.errors = repo._counts.errors + 1
    return nil, err, code
  end
  return removed
end

local function drop_key(key, ...)
  if key == nil then bad_args("refresh", ...) end
  return ...
end

-- cache:refresh(fn, ...): calls fn(...) now, stores and returns its results.
function M.refresh(self, fn, ...)
  local info = decorated(self, fn, "refresh")
  return drop_key(info.refresh(...))
end

-- cache(fn [, opts]), cache("store", fn [, opts]) on the manager (is_manager),
-- repo(fn [, opts]) on a repository; returns the wrapper.
function M.decorate(target, is_manager, lookup, a, b, c)
  local fn, opts, store_name = a, b, nil
  local fn_arg = 1
  if is_manager and type(a) == "string" then
    store_name, fn, opts, fn_arg = a, b, c, 2
  end
  if not is_callable(fn) then
    error("bad argument #" .. fn_arg .. " to 'cache' (function expected, got " .. type(fn) .. ")", 3)
  end
  local key, minutes, should_cache
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #" .. (fn_arg + 1) .. " to 'cache' (table expected, got " .. type(opts) .. ")", 3)
    end
    for k in pairs(opts) do
      if not OPTIONS[k] and not flight.DECORATOR[k] then
        error("cache: unknown option '" .. (type(k) == "string" and k or type(k)) .. "'", 3)
      end
    end
    if opts.store ~= nil then
      if not is_manager or type(opts.store) ~= "string" then
        error("cache: option 'store' must be a store name, on the manager", 3)
      end
      store_name = opts.store
    end
    key, minutes, should_cache = opts.key, opts.minutes, opts.should_cache
  end
  local repo = target
  if is_manager then repo = lookup(target, store_name, 4) end
  if key == nil then
    key = identity(fn)
  elseif type(key) ~= "string" and type(key) ~= "number" then
    error("cache: option 'key' must be a string", 3)
  end
  if type(minutes) == "table" then
    local ms, why = ttl_of(minutes)
    if ms == nil then error("cache: option 'minutes': " .. why, 3) end
  elseif minutes ~= nil and type(minutes) ~= "function" and (type(minutes) ~= "number" or minutes ~= minutes) then
    error("cache: option 'minutes' must be a number of minutes, a date table or a function, got "
      .. type(minutes), 3)
  end
  if should_cache ~= nil and type(should_cache) ~= "function" then
    error("cache: option 'should_cache' must be a function, got " .. type(should_cache), 3)
  end
  local o = flight.options(repo, opts, flight.DECORATOR, function(why) error("cache: " .. why, 5) end, OPTIONS)
  return M.wrap(repo, fn, tostring(key), minutes, o, should_cache)
end

return M
