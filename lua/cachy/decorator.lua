-- cachy.decorator: the manager (and each repository) as a memoizing
-- decorator (SPEC section 5). The wrapped function is called from here, in
-- Lua, so it may yield, and recursion costs Lua frames only: a decorated
-- recursive function goes as deep as the undecorated one. The store fails
-- open: the function's results are returned, the failure reported through
-- the config's on_error.
local core = require("cachy.core")
local compat = require("cachy.compat")
local values = require("cachy.values")

local pack, unpack = compat.pack, compat.unpack
local args_key, encode_tuple, decode_tuple = core.args_key, core.encode_tuple, core.decode_tuple
local ttl_of = core.ttl

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

local OPTIONS = { key = true, minutes = true, store = true }

-- A store's failure seen by a decorated call: the config's
-- on_error(err, store_name), or one line a second per store: on stderr,
-- and inside nginx in its error log at the warn level. on_error must not
-- yield (SPEC section 10).
local ngx_log = type(ngx) == "table" and ngx.log and ngx.WARN and function(err)
  ngx.log(ngx.WARN, "cachy: ", err)
end

local function report(repo, err)
  local ms, name = repo._ms, repo._name
  if ms.on_error then return ms.on_error(err, name) end
  local now = core.now_ms()
  local last = ms.last_report[name]
  if last == nil or now - last >= 1000 then
    ms.last_report[name] = now
    if ngx_log then ngx_log(err) else io.stderr:write("cachy: ", err, "\n") end
  end
end

-- Reads the bytes a decorated call stored, for a store without the fast
-- path: the same answers as the C tuple_get (lcachy_fast.c):
-- true, results... on a hit; false, key, err, code, args... otherwise; nil,
-- why for arguments that cannot be part of a key.
local function generic_tuple_get(repo)
  return function(prefix, ...)
    local key, why = args_key(prefix, ...)
    if key == nil then return nil, why end
    local found, bytes, code = repo:_get(key)
    if found ~= nil then
      local got = pack(decode_tuple(found))
      if got[1] ~= nil then return true, unpack(got, 2, got.n) end
      local _, err, c = values.corrupt(repo, key, got[2])
      return false, key, err, c, ...
    end
    return false, key, bytes, code, ...
  end
end

-- Builds the wrapper of fn on repository repo.
function M.wrap(repo, fn, prefix, minutes)
  local fixed_ms         -- lifetime for every call, unless minutes is a date
  if type(minutes) ~= "table" then fixed_ms = ttl_of(minutes, repo._ms.default_ms) end

  local function lifetime()
    if fixed_ms ~= nil then return fixed_ms end
    return ttl_of(minutes) or false
  end

  local function store(key, r)
    local ms = lifetime()
    if ms == false then return end
    local fast = repo._tags == nil and repo._base._fast
    local ok, err, code
    if fast then
      ok, err, code = fast.tuple_put(key, ms, r.n, unpack(r, 1, r.n))
    else
      local bytes, why = encode_tuple(r.n, unpack(r, 1, r.n))
      if bytes == nil then
        ok, err, code = nil, why, "unstorable"
      else
        ok, err, code = repo:_write(key, bytes, ms, false)
      end
    end
    if code == "unstorable" then
      error("cannot cache the results of '" .. prefix .. "': " .. err, 3 + TAIL)
    end
    if ok == nil then report(repo, err) end
  end

  -- A miss (or a failing store, err): call fn, cache what it returned.
  local function miss(key, err, _, ...)
    if err then report(repo, err) end
    local r = pack(fn(...))
    -- Lua's failure convention: nil, err is returned but not cached.
    if err == nil and not (r.n >= 2 and r[1] == nil and r[2] ~= nil) then store(key, r) end
    return unpack(r, 1, r.n)
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
  return function(...)
    if get == nil then
      repo:_store()
      local fast = repo._tags == nil and repo._base._fast
      get = fast and fast.tuple_get or generic_tuple_get(repo)
    end
    return settle(get(prefix, ...))
  end
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
  local key, minutes
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #" .. (fn_arg + 1) .. " to 'cache' (table expected, got " .. type(opts) .. ")", 3)
    end
    for k in pairs(opts) do
      if not OPTIONS[k] then
        error("cache: unknown option '" .. (type(k) == "string" and k or type(k)) .. "'", 3)
      end
    end
    if opts.store ~= nil then
      if not is_manager or type(opts.store) ~= "string" then
        error("cache: option 'store' must be a store name, on the manager", 3)
      end
      store_name = opts.store
    end
    key, minutes = opts.key, opts.minutes
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
  elseif minutes ~= nil and (type(minutes) ~= "number" or minutes ~= minutes) then
    error("cache: option 'minutes' must be a number of minutes or a date table, got "
      .. type(minutes), 3)
  end
  return M.wrap(repo, fn, tostring(key), minutes)
end

return M
