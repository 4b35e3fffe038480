-- bench/ab.lua: times two builds of cachy.core against each other in one
-- Lua process, for judging a change to the C core:
--
--   cp csrc/cachy/core.so /tmp/before.so   # then change, make, and:
--   lua5.4 bench/ab.lua /tmp/before.so $PWD/csrc/cachy/core.so get
--
-- Operations: get (memory get-hit), put (memory put), decorator (hit with
-- two scalar arguments), each over 100 keys with 100-byte strings. The
-- builds run alternately, 31 batches each; prints each build's median and
-- the median of the per-round ratios B/A.
-- Run from the project's root. Paths must be absolute (package.loadlib),
-- and the two files distinct.
-- BENCH_KEYS sets the number of keys (default 100).
package.cpath = "build/bench/lua5.4/?.so;" .. package.cpath
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local now = require("baselines").now

local a_path, b_path, op = arg[1], arg[2], arg[3] or "get"
if not (a_path and b_path) then
  io.stderr:write("usage: lua5.4 bench/ab.lua /abs/A.so /abs/B.so [get|put|decorator]\n")
  os.exit(2)
end

local NKEYS = tonumber(os.getenv("BENCH_KEYS") or "") or 100
local VALUE = string.rep("v", 100)
local keys = {}
for i = 1, NKEYS do keys[i] = "k" .. i end

-- Both builds register their metatables under the same registry names
-- ("cachy.Store", ...), where their C functions look them up. Each build
-- is loaded with the cachy.* names cleared from the registry and from
-- package.loaded (so it gets its own metatables and its own copy of the
-- Lua modules), and its names are put back before each of its batches.
local registry = debug.getregistry()

local function cachy_names(t, fn)
  local names = {}
  for k in pairs(t) do
    if type(k) == "string" and (k == "cachy" or k:match("^cachy%.")) then names[#names + 1] = k end
  end
  for _, k in ipairs(names) do fn(k) end
end

local function setup(path)
  local open = assert(package.loadlib(path, "luaopen_cachy_core"))
  cachy_names(registry, function(k) registry[k] = nil end)
  cachy_names(package.loaded, function(k) package.loaded[k] = nil end)
  package.loaded["cachy.core"] = open()
  local cache = require("cachy").new({ default = "m", stores = { m = { driver = "memory" } } })
  for i = 1, NKEYS do assert(cache:put(keys[i], VALUE, 60)) end
  local f = cache(function(_, b) return "result", b end, { key = "f" })
  for i = 1, NKEYS do f(i, "user") end
  local mts = {}
  cachy_names(registry, function(k) mts[k] = registry[k] end)
  return { cache = cache, f = f, mts = mts }
end

local A = setup(a_path)
local B = setup(b_path)

local ops = {
  get = function(cache, _, n)
    local t0 = now()
    for i = 1, n do cache:get(keys[i % NKEYS + 1]) end
    return now() - t0
  end,
  put = function(cache, _, n)
    local t0 = now()
    for i = 1, n do cache:put(keys[i % NKEYS + 1], VALUE, 60) end
    return now() - t0
  end,
  decorator = function(_, f, n)
    local t0 = now()
    for i = 1, n do f(i % NKEYS + 1, "user") end
    return now() - t0
  end,
}
local run = assert(ops[op], "unknown operation " .. op)

local N, ROUNDS = 200000, 31

-- ns per operation of one batch of build b.
local function batch(b)
  for k, v in pairs(b.mts) do registry[k] = v end
  collectgarbage()
  return run(b.cache, b.f, N) / N
end

local ta, tb, ratios = {}, {}, {}
for r = 1, ROUNDS do
  if r % 2 == 1 then
    ta[r] = batch(A); tb[r] = batch(B)
  else
    tb[r] = batch(B); ta[r] = batch(A)
  end
  ratios[r] = tb[r] / ta[r]
end
local function median(xs)
  table.sort(xs)
  return xs[math.floor((#xs + 1) / 2)]
end
print(string.format("%s: A %.1f ns  B %.1f ns  B/A %.3f (median of the rounds' ratios)", op,
  median(ta), median(tb), median(ratios)))
