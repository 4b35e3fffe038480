-- soak/soak.lua: a long run of mixed operations against one store, every
-- result compared with an in-Lua model of what the store must hold, and
-- this process's resident memory compared between 10% and 100% of the run.
--
--   lua5.4 soak/soak.lua STORE [OPS [SEED]]     (from the repository root)
--
-- STORE is memory, file, redis or memcached (redis-server and memcached are
-- started on free ports and stopped at the end). OPS defaults to 1000000,
-- SEED to 20240601; the same seed gives the same operations. Exits 1 on
-- the first wrong result or when memory grew by 5% or more.
local common = require("soak.common")
local cachy = require("cachy")

local store_name = assert(arg[1], "usage: soak.lua STORE [OPS [SEED]]")
local OPS = tonumber(arg[2] or os.getenv("SOAK_OPS") or 1000000)
local SEED = tonumber(arg[3] or os.getenv("SOAK_SEED") or 20240601)
local NKEYS = 2000          -- small enough that every key is written many times
local NARGS = 500           -- distinct arguments of the memoized function
local GROWTH_LIMIT = 0.05

if not common.has_driver(store_name) then
  print(store_name .. ": FAIL the module has no " .. store_name .. " driver")
  os.exit(1)
end

math.randomseed(SEED)
local rng = math.random

local config, server = common.store(store_name)
local failures = {}
local cache = cachy.new({
  stores = { soak = config },
  on_error = function(err) failures[#failures + 1] = err end,
})
assert(cache:flush())

local keys = common.keys(rng, NKEYS, "soak")
local model = {}            -- key -> value the store must hold
local counts = { get = 0, put = 0, add = 0, increment = 0, forget = 0, decorator = 0,
                 hits = 0, errors = 0 }

local function fail(i, key, fmt, ...)
  io.stderr:write(string.format("%s: operation %d on key %q: ", store_name, i, key),
    string.format(fmt, ...), "\n")
  if server then server:stop() end
  os.exit(1)
end

-- ---- the memoized function -------------------------------------------------

-- Results depend on the argument and on how often it ran, so a cached
-- result is told from a fresh one. Shapes: several values with nils,
-- a lone nil (cached), `nil, err` (not cached), a table, no value.
local runs = 0
local function results(x, run)
  local shape = x % 5
  if shape == 0 then return x, nil, run end
  if shape == 1 then return nil end
  if shape == 2 then return nil, "no such thing " .. x end
  if shape == 3 then return { x = x, run = run, list = { 1, 2.5, "three" } } end
  return
end
local function compute(x)
  runs = runs + 1
  return results(x, runs)
end
local memoized = cache(compute, { key = "soak:memo" })
local cached = {}           -- x -> packed results the store must hold

local function pack(...) return { n = select("#", ...), ... } end

local function check_call(i, x)
  local before = runs
  local got = pack(memoized(x))
  local want = cached[x]
  if want then
    if runs ~= before then fail(i, "memo " .. x, "a cached call ran the function") end
  else
    if runs ~= before + 1 then fail(i, "memo " .. x, "a call that missed did not run the function once") end
    want = pack(results(x, runs))
    -- Lua's failure convention (nil, err) is returned but not cached.
    if not (want.n == 2 and want[1] == nil and want[2] ~= nil) then cached[x] = want end
  end
  if got.n ~= want.n then fail(i, "memo " .. x, "%d results, expected %d", got.n, want.n) end
  for j = 1, want.n do
    local why = common.diff(want[j], got[j], "result #" .. j)
    if why then fail(i, "memo " .. x, "%s", why) end
  end
end

-- ---- the run ---------------------------------------------------------------

local function named(err, key)
  if type(err) ~= "string" or err:sub(1, #"store 'soak' (") ~= "store 'soak' (" then return false end
  -- Printable short keys must appear as they are.
  if #key <= 60 and not key:find("[^%w%p ]") and not key:find("\\", 1, true) then
    return err:find("'" .. key .. "'", 1, true) ~= nil
  end
  return true
end

local rss_10, rss_100
local started = common.now()
for i = 1, OPS do
  local key = keys[rng(NKEYS)]
  local op = rng(100)
  if op <= 30 then
    counts.get = counts.get + 1
    local v, err = cache:get(key)
    if err ~= nil then fail(i, key, "get failed: %s", tostring(err)) end
    local why = common.diff(model[key], v, "value")
    if why then fail(i, key, "get: %s", why) end
    if v ~= nil then counts.hits = counts.hits + 1 end
  elseif op <= 50 then
    counts.put = counts.put + 1
    local v = common.value(rng, 3)
    local ok, err = cache:put(key, v)
    if ok ~= true then fail(i, key, "put returned %s, %s", tostring(ok), tostring(err)) end
    model[key] = common.copy(v)
  elseif op <= 60 then
    counts.add = counts.add + 1
    local v = common.value(rng, 2)
    local ok, err = cache:add(key, v)
    if ok ~= (model[key] == nil) then
      fail(i, key, "add returned %s, %s with %s held", tostring(ok), tostring(err), tostring(model[key]))
    end
    if ok then model[key] = common.copy(v) end
  elseif op <= 75 then
    counts.increment = counts.increment + 1
    local n = rng(50) == 1 and math.maxinteger // 2 * (rng(2) == 1 and 1 or -1) or rng(-100, 100)
    local cur = model[key]
    local r, err = cache:increment(key, n)
    if cur == nil then cur = 0 end
    if math.type(cur) ~= "integer" then
      counts.errors = counts.errors + 1
      if r ~= nil or not named(err, key) or not err:find("is not an integer", 1, true) then
        fail(i, key, "increment of %s gave %s, %s", tostring(cur), tostring(r), tostring(err))
      end
    elseif common.overflows(cur, n) then
      counts.errors = counts.errors + 1
      if r ~= nil or not named(err, key) or not err:find("overflows 64 bits", 1, true) then
        fail(i, key, "increment of %d by %d gave %s, %s", cur, n, tostring(r), tostring(err))
      end
    else
      if r ~= cur + n or math.type(r) ~= "integer" then
        fail(i, key, "increment of %d by %d gave %s, %s", cur, n, tostring(r), tostring(err))
      end
      model[key] = r
    end
  elseif op <= 85 then
    counts.forget = counts.forget + 1
    local ok, err = cache:forget(key)
    if ok ~= (model[key] ~= nil) then
      fail(i, key, "forget returned %s, %s with %s held", tostring(ok), tostring(err), tostring(model[key]))
    end
    model[key] = nil
  else
    counts.decorator = counts.decorator + 1
    check_call(i, rng(NARGS))
  end
  if #failures > 0 then fail(i, key, "on_error: %s", failures[1]) end

  if i % (OPS // 10) == 0 then
    collectgarbage("collect")
    collectgarbage("collect")
    local rss = common.rss()
    if i == OPS // 10 then rss_10 = rss end
    if i == OPS then rss_100 = rss end
    if os.getenv("SOAK_TRACE") then
      io.stderr:write(string.format("%s: %d%%: resident %.2f MB, Lua heap %.2f MB\n", store_name,
        i * 100 // OPS, rss / 1048576, collectgarbage("count") / 1024))
    end
  end
end
local elapsed = common.now() - started

-- Everything the model holds is still there, read one by one and with
-- many (100 keys a call, one of them asked twice), then flush empties the
-- store.
for _, key in ipairs(keys) do
  local v, err = cache:get(key)
  local why = err and ("get failed: " .. err) or common.diff(model[key], v, "value")
  if why then fail(OPS, key, "final read: %s", why) end
end
for first = 1, NKEYS, 100 do
  local batch = {}
  for j = first, math.min(first + 99, NKEYS) do batch[#batch + 1] = keys[j] end
  batch[#batch + 1] = batch[rng(#batch)]
  local got, err = cache:many(batch)
  if not got then fail(OPS, batch[1], "many failed: %s", tostring(err)) end
  for _, key in ipairs(batch) do
    local why = common.diff(model[key], got[key], "value")
    if why then fail(OPS, key, "final many: %s", why) end
  end
  for key in pairs(got) do
    if model[key] == nil then fail(OPS, key, "many gave a key the store does not hold") end
  end
end
assert(cache:flush())
for _, key in ipairs(keys) do
  if cache:get(key) ~= nil then fail(OPS, key, "still there after flush") end
end
cache:close()
if server then server:stop() end
if config.driver == "file" then os.execute("rm -rf '" .. config.path .. "'") end

local growth = (rss_100 - rss_10) / rss_10
print(string.format("%s: %d operations in %.1f s (get %d with %d hits, put %d, add %d, increment %d "
  .. "with %d expected errors, forget %d, decorator %d), 0 wrong results",
  store_name, OPS, elapsed, counts.get, counts.hits, counts.put, counts.add, counts.increment,
  counts.errors, counts.forget, counts.decorator))
print(string.format("%s: resident memory %.2f MB at 10%%, %.2f MB at 100%%: %+.2f%% (limit %d%%)",
  store_name, rss_10 / 1048576, rss_100 / 1048576, growth * 100, GROWTH_LIMIT * 100))
if math.abs(growth) >= GROWTH_LIMIT then
  print(store_name .. ": FAIL resident memory changed by 5% or more")
  os.exit(1)
end
