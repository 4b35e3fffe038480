-- bench/bench.lua: times each operation through cachy and through what a
-- user would write by hand, alternating batches of the two in this one
-- process, and prints one line per row for bench/run to lay out:
--   row <TAB> operation <TAB> cachy ns/op <TAB> baseline ns/op <TAB> ratio <TAB> baseline <TAB> limit
-- The ns/op figures are the medians of each side's batches; the ratio is
-- the median of the per-round ratios (each round times one batch of each
-- side back to back), which cancels load that drifts during the run.
-- ("n/a" where a store cannot be measured, with the reason as the baseline).
--
-- Environment: BENCH_REDIS_PORT, BENCH_MEMCACHED_PORT, BENCH_DIR (scratch
-- directory for the file rows), BENCH_INPROCESS=1 (only the rows that need
-- no server or disk: memory, decorator, codec, json), BENCH_ROUNDS (batches per
-- side, default 15), BENCH_BATCH_MS (target length of one batch, default 30),
-- BENCH_ONLY (Lua patterns separated by commas: only rows whose operation
-- matches one).

local B = require("baselines")
local now = B.now
local NKEYS, VLEN = B.nkeys, B.vlen
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "") or 21
local BATCH_NS = (tonumber(os.getenv("BENCH_BATCH_MS") or "") or 30) * 1e6
local INPROCESS = os.getenv("BENCH_INPROCESS") == "1"
local ONLY = os.getenv("BENCH_ONLY")

local VALUE = {}
for i = 1, VLEN do VALUE[i] = string.char(97 + (i - 1) % 26) end
VALUE = table.concat(VALUE)

local function keys_with(prefix)
  local ks = {}
  for i = 1, NKEYS do ks[i] = prefix .. i end
  return ks
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) / 2] end
  return (xs[n / 2] + xs[n / 2 + 1]) / 2
end

local function emit(op, cachy_ns, base_ns, ratio, base_name, limit)
  local function fmt(v, digits)
    if type(v) ~= "number" then return "n/a" end
    return string.format("%." .. digits .. "f", v)
  end
  io.write(string.format("row\t%s\t%s\t%s\t%s\t%s\t%s\n", op, fmt(cachy_ns, 1),
    fmt(base_ns, 1), fmt(ratio, 3), base_name, limit or "-"))
  io.flush()
end

-- Runs cachy_batch(n) and base_batch(n) (each returns elapsed ns for n
-- units of `per` operations) alternately, ROUNDS times each after a
-- calibration that makes one batch last about BATCH_NS, and returns the
-- two medians per operation and the median of the rounds' ratios.
local function measure(cachy_batch, base_batch, per)
  per = per or 1
  base_batch(1)
  cachy_batch(1)
  local n = 1
  while true do
    collectgarbage()
    local t = math.max(cachy_batch(n), base_batch(n))
    if t >= BATCH_NS / 4 or n >= 2 ^ 26 then
      n = math.max(1, math.floor(n * BATCH_NS / math.max(t, 1)))
      break
    end
    n = n * 2
  end
  local cs, bs, rs = {}, {}, {}
  for r = 1, ROUNDS do
    -- alternate which side goes first, so neither always follows the other
    if r % 2 == 1 then
      collectgarbage(); bs[r] = base_batch(n)
      collectgarbage(); cs[r] = cachy_batch(n)
    else
      collectgarbage(); cs[r] = cachy_batch(n)
      collectgarbage(); bs[r] = base_batch(n)
    end
    rs[r] = cs[r] / bs[r]
  end
  return median(cs) / (n * per), median(bs) / (n * per), median(rs)
end

local rows = {}
local function row(op, base_name, limit, setup)
  rows[#rows + 1] = { op = op, base_name = base_name, limit = limit, setup = setup }
end

-- ---- the pure-Lua baselines ---------------------------------------------

-- A table cache as one would write it by hand: value and expiry in a
-- record, the expiry checked against os.time() on every read.
local TableCache = {}
TableCache.__index = TableCache

function TableCache.new()
  return setmetatable({ items = {} }, TableCache)
end

function TableCache:get(key)
  local e = self.items[key]
  if e and e.expires > os.time() then return e.value end
  return nil
end

function TableCache:put(key, value, minutes)
  self.items[key] = { value = value, expires = os.time() + minutes * 60 }
  return true
end

-- A generic memoize: the key is the arguments' tostring, joined.
local function memoize(fn)
  local results = {}
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    local key = table.concat(parts, "\0")
    local hit = results[key]
    if hit then return unpack(hit, 1, hit.n) end
    hit = pack(fn(...))
    results[key] = hit
    return unpack(hit, 1, hit.n)
  end
end

-- ---- cachy ----------------------------------------------------------------

local ok_cachy, cachy = pcall(require, "cachy")
local core = ok_cachy and require("cachy.core")

-- The cache for one driver, or nil and why it cannot be measured.
local function cache_for(driver, config)
  if not ok_cachy then return nil, "cachy does not load" end
  if not core.driver_fields(driver) then return nil, "no " .. driver .. " driver" end
  config.driver = driver
  local cache = cachy.new({ stores = { main = config } })
  return cache
end

local function check(cond, what)
  if not cond then error("bench: " .. what, 2) end
end

-- ---- memory -----------------------------------------------------------------

-- A batch of n gets on obj (cachy or a baseline) over the keys ks.
local function gets_on(obj, ks)
  return function(n)
    local t0 = now()
    for i = 1, n do obj:get(ks[i % NKEYS + 1]) end
    return now() - t0
  end
end

row("memory get-hit", "Lua table + os.time()", "1.5", function()
  local cache, why = cache_for("memory", {})
  if not cache then return nil, why end
  local tc, ks = TableCache.new(), keys_with("k")
  for i = 1, NKEYS do
    assert(cache:put(ks[i], VALUE, 60))
    tc:put(ks[i], VALUE, 60)
  end
  check(cache:get(ks[7]) == VALUE and tc:get(ks[7]) == VALUE, "memory get-hit misses")
  return gets_on(cache, ks), gets_on(tc, ks)
end)

-- Not cachy: a C method that answers any key with a new copy of the value,
-- against the same Lua table. Its ratio is the floor for any store that
-- hands Lua a fresh string from C (see bench/RESULTS.md).
row("floor: C get of a fresh string", "Lua table + os.time()", nil, function()
  local fresh, tc, ks = B.fresh(), TableCache.new(), keys_with("k")
  for i = 1, NKEYS do tc:put(ks[i], VALUE, 60) end
  check(fresh:get(ks[1]) == VALUE, "fresh string differs")
  return gets_on(fresh, ks), gets_on(tc, ks)
end)

row("memory put", "Lua table + os.time()", "1.5", function()
  local cache, why = cache_for("memory", {})
  if not cache then return nil, why end
  local tc, ks = TableCache.new(), keys_with("k")
  return function(n)
    local t0 = now()
    for i = 1, n do cache:put(ks[i % NKEYS + 1], VALUE, 60) end
    return now() - t0
  end, function(n)
    local t0 = now()
    for i = 1, n do tc:put(ks[i % NKEYS + 1], VALUE, 60) end
    return now() - t0
  end
end)

-- ---- the decorator ------------------------------------------------------------

-- A wrapped function and its memoized twin, both warmed on every argument
-- the loop passes; `calls` counts real calls, so a miss in a timed batch
-- is caught.
local function decorator_pair(key)
  local cache, why = cache_for("memory", {})
  if not cache then return nil, why end
  local calls = 0
  local function compute(a, b)
    calls = calls + 1
    return "result", b
  end
  return cache(compute, { key = key }), memoize(compute), function() return calls end
end

row("decorator hit, 2 scalar args", "memoize (tostring keys)", "0.5", function()
  local f, m, calls = decorator_pair("f2")
  if not f then return nil, m end
  for i = 1, NKEYS do f(i, "user"); m(i, "user") end
  local before = calls()
  check(select(2, f(5, "user")) == "user" and calls() == before, "decorator misses")
  return function(n)
    local t0 = now()
    for i = 1, n do f(i % NKEYS + 1, "user") end
    local t = now() - t0
    check(calls() == before, "decorator missed in a timed batch")
    return t
  end, function(n)
    local t0 = now()
    for i = 1, n do m(i % NKEYS + 1, "user") end
    return now() - t0
  end
end)

row("decorator hit, 1 table arg", "memoize (tostring keys)", nil, function()
  local f, m, calls = decorator_pair("f1")
  if not f then return nil, m end
  local args = {}
  for i = 1, NKEYS do
    args[i] = { id = i, kind = "user" }
    f(args[i]); m(args[i])
  end
  local before = calls()
  return function(n)
    local t0 = now()
    for i = 1, n do f(args[i % NKEYS + 1]) end
    local t = now() - t0
    check(calls() == before, "decorator missed in a timed batch")
    return t
  end, function(n)
    local t0 = now()
    for i = 1, n do m(args[i % NKEYS + 1]) end
    return now() - t0
  end
end)

-- ---- stores behind a server or on disk ---------------------------------------

-- setup() returns a cache holding VALUE under every key of ks, the C
-- baseline and ks (or nil and why not).

-- cache:get over the keys, against base:get.
local function get_row(op, base_name, limit, setup)
  row(op, base_name, limit, function()
    local cache, base, ks = setup()
    if not cache then return nil, base end
    return gets_on(cache, ks), function(n) return base:get(n) end
  end)
end

-- cache:put over the keys with a 10 s lifetime, against base_put(base, n).
local function put_row(op, base_name, limit, setup, base_put)
  row(op, base_name, limit, function()
    local cache, base, ks = setup()
    if not cache then return nil, base end
    return function(n)
      local t0 = now()
      for i = 1, n do cache:put(ks[i % NKEYS + 1], VALUE, 10) end
      return now() - t0
    end, function(n) return base_put(base, n) end
  end)
end

-- cache:many of all the keys, per key, against base_many(base, n).
local function many_row(op, base_name, limit, setup, what, base_many)
  row(op, base_name, limit, function()
    local cache, base, ks = setup()
    if not cache then return nil, base end
    local got = cache:many(ks)
    check(got[ks[100]] == VALUE, what .. " many misses")
    return function(n)
      local t0 = now()
      for _ = 1, n do cache:many(ks) end
      return now() - t0
    end, function(n) return base_many(base, n) end, NKEYS
  end)
end

-- ---- redis ------------------------------------------------------------------

-- A redis store of config holding VALUE under the keys, the baseline
-- new_base() makes, the keys and the map put.
local function redis_with(config, new_base)
  local cache, why = cache_for("redis", config)
  if not cache then return nil, why end
  local ks = keys_with("cachy:k")
  local map = {}
  for i = 1, NKEYS do map[ks[i]] = VALUE end
  assert(cache:put_many(map, 10))
  check(cache:get(ks[3]) == VALUE, "redis get misses")
  return cache, new_base(), ks, map
end

local function redis_setup()
  local port = tonumber(os.getenv("BENCH_REDIS_PORT") or "")
  if not port then return nil, "no redis-server" end
  return redis_with({ port = port }, function() return B.redis(port, "raw:k") end)
end

get_row("redis get", "hiredis GET", "1.10", redis_setup)
put_row("redis put", "hiredis SET PX", "1.10", redis_setup,
  function(base, n) return base:set(n, 600000) end)
many_row("redis many(100), per key", "hiredis 100 pipelined GET", "1.5", redis_setup, "redis",
  function(base, n) return base:get_pipe(n) end)

row("redis put_many(100), per key", "hiredis 100 pipelined SET PX", "1.5", function()
  local cache, base, _, map = redis_setup()
  if not cache then return nil, base end
  return function(n)
    local t0 = now()
    for _ = 1, n do cache:put_many(map, 10) end
    return now() - t0
  end, function(n) return base:set_pipe(n, 600000) end, NKEYS
end)

-- ---- redis cluster ----------------------------------------------------------

-- BENCH_CLUSTER_PORTS: the masters of a cluster bench/run formed.
local function cluster_setup()
  local ports = os.getenv("BENCH_CLUSTER_PORTS")
  if not ports or ports == "" then return nil, "no redis cluster" end
  local seeds = {}
  for p in ports:gmatch("%d+") do seeds[#seeds + 1] = "127.0.0.1:" .. p end
  return redis_with({ cluster = seeds }, function() return B.cluster(ports, "raw:k") end)
end

get_row("redis cluster get", "hiredis GET on the slot's master", "1.15", cluster_setup)
many_row("redis cluster many(100), per key", "hiredis GETs, a pipeline per master", "1.15",
  cluster_setup, "redis cluster", function(base, n) return base:get_pipe(n) end)

-- ---- memcached ---------------------------------------------------------------

local function memcached_setup()
  local port = tonumber(os.getenv("BENCH_MEMCACHED_PORT") or "")
  if not port then return nil, "no memcached" end
  local cache, why = cache_for("memcached", { servers = { "127.0.0.1:" .. port } })
  if not cache then return nil, why end
  local ks = keys_with("cachy:k")
  for i = 1, NKEYS do assert(cache:put(ks[i], VALUE, 10)) end
  check(cache:get(ks[3]) == VALUE, "memcached get misses")
  return cache, B.memcached(port, "raw:k"), ks
end

get_row("memcached get", "libmemcached get", "1.10", memcached_setup)
put_row("memcached put", "libmemcached set", "1.10", memcached_setup,
  function(base, n) return base:set(n, 600) end)
many_row("memcached many(100), per key", "libmemcached mget(100)", "1.5", memcached_setup,
  "memcached", function(base, n) return base:mget(n) end)

-- ---- file ---------------------------------------------------------------------

local function file_setup()
  local dir = os.getenv("BENCH_DIR")
  if not dir then return nil, "no BENCH_DIR" end
  local cache, why = cache_for("file", { path = dir .. "/cachy" })
  if not cache then return nil, why end
  local ks = keys_with("k")
  for i = 1, NKEYS do assert(cache:put(ks[i], VALUE, 10)) end
  check(cache:get(ks[3]) == VALUE, "file get misses")
  return cache, B.file(dir .. "/raw"), ks
end

get_row("file get", "C open/read/close", "1.2", file_setup)
put_row("file put", "C write tmp + rename", nil, file_setup,
  function(base, n) return base:put(n) end)

-- ---- codec ----------------------------------------------------------------------

local SAMPLE = {
  id = 12345, name = "Ada Lovelace", active = true, score = 98.25,
  tags = { "math", "poetry", "engines" },
  address = { city = "London", street = "St James's Square", number = 12 },
  history = { { year = 1842, note = "notes" }, { year = 1843, note = "translation" } },
}

-- A batch of n calls f(x).
local function calls_of(f, x)
  return function(n)
    local t0 = now()
    for _ = 1, n do f(x) end
    return now() - t0
  end
end

local function codecs()
  local ok_c, codec = pcall(require, "benchcodec")
  if not ok_c then return nil, "no codec" end
  local ok_j, cjson = pcall(require, "cjson")
  if not ok_j then return nil, "no lua-cjson" end
  return codec, cjson
end

row("codec encode", "lua-cjson encode", "1.2", function()
  local codec, cjson = codecs()
  if not codec then return nil, cjson end
  return calls_of(codec.encode, SAMPLE), calls_of(cjson.encode, SAMPLE)
end)

row("codec decode", "lua-cjson decode", "1.2", function()
  local codec, cjson = codecs()
  if not codec then return nil, cjson end
  local bytes, text = codec.encode(SAMPLE), cjson.encode(SAMPLE)
  local back = codec.decode(bytes)
  check(back.history[2].note == "translation" and back.score == 98.25, "codec round trip")
  return calls_of(codec.decode, bytes), calls_of(cjson.decode, text)
end)

-- The JSON codec of the built-in "json" serializer (csrc/json.c, jansson:
-- exact numbers, refusals by path) against lua-cjson on the same table.
row("json encode", "lua-cjson encode", nil, function()
  local codec, cjson = codecs()
  if not codec then return nil, cjson end
  check(codec.json_encode(SAMPLE), "json encode")
  return calls_of(codec.json_encode, SAMPLE), calls_of(cjson.encode, SAMPLE)
end)

row("json decode", "lua-cjson decode", nil, function()
  local codec, cjson = codecs()
  if not codec then return nil, cjson end
  local text = codec.json_encode(SAMPLE)
  local ok, back = codec.json_decode(text)
  check(ok and back.history[2].note == "translation" and back.score == 98.25, "json round trip")
  return calls_of(codec.json_decode, text), calls_of(cjson.decode, cjson.encode(SAMPLE))
end)

-- ---- run ---------------------------------------------------------------------------

local IN_PROCESS = { memory = true, floor = true, decorator = true, codec = true, json = true }

for _, r in ipairs(rows) do
  local family = r.op:match("^(%a+)")
  local wanted = not ONLY
  for pattern in (ONLY or ""):gmatch("[^,]+") do
    wanted = wanted or r.op:find(pattern) ~= nil
  end
  if (not INPROCESS or IN_PROCESS[family]) and wanted then
    local ok, cachy_batch, base_batch, per = pcall(r.setup)
    if not ok then
      io.stderr:write("bench: ", r.op, ": ", tostring(cachy_batch), "\n")
      emit(r.op, nil, nil, nil, "error: see stderr", r.limit)
    elseif not cachy_batch then
      emit(r.op, nil, nil, nil, "n/a: " .. tostring(base_batch), r.limit)
    else
      local ok2, c, b, ratio = pcall(measure, cachy_batch, base_batch, per)
      if ok2 then
        emit(r.op, c, b, ratio, r.base_name, r.limit)
      else
        io.stderr:write("bench: ", r.op, ": ", tostring(c), "\n")
        emit(r.op, nil, nil, nil, "error: see stderr", r.limit)
      end
    end
  end
end
