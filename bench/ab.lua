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
-- Paths must be absolute (package.loadlib), and the two files distinct.
-- BENCH_KEYS sets the number of keys (default 100).
package.cpath = "build/bench/lua5.4/?.so;" .. package.cpath
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

-- Both builds register their metatables under the same registry names:
-- everything of one build is made before the next is loaded, and its
-- names are then taken out of the registry.
local function setup(path)
  local open = assert(package.loadlib(path, "luaopen_cachy_core"))
  local core = open()
  local cache = core.new({ default = "m", stores = { m = { driver = "memory" } } }, {})
  for i = 1, NKEYS do assert(cache:put(keys[i], VALUE, 60)) end
  local f = cache(function(_, b) return "result", b end, { key = "f" })
  for i = 1, NKEYS do f(i, "user") end
  local registry = debug.getregistry()
  registry["cachy.CacheManager"], registry["cachy.Repository"] = nil, nil
  return cache, f
end

local ca, fa = setup(a_path)
local cb, fb = setup(b_path)

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
local ta, tb, ratios = {}, {}, {}
for r = 1, ROUNDS do
  if r % 2 == 1 then
    collectgarbage(); ta[r] = run(ca, fa, N) / N
    collectgarbage(); tb[r] = run(cb, fb, N) / N
  else
    collectgarbage(); tb[r] = run(cb, fb, N) / N
    collectgarbage(); ta[r] = run(ca, fa, N) / N
  end
  ratios[r] = tb[r] / ta[r]
end
local function median(xs)
  table.sort(xs)
  return xs[math.floor((#xs + 1) / 2)]
end
print(string.format("%s: A %.1f ns  B %.1f ns  B/A %.3f (median of the rounds' ratios)", op,
  median(ta), median(tb), median(ratios)))
