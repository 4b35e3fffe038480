-- bench/nginx/loop.lua: the in-handler rows of bench/nginx/run. One
-- request to /loop times, inside the worker, a loop of gets through cachy
-- against the same loop through what one would use by hand, 100 keys of a
-- 100-byte value, all hits:
--
--   shdict get        the shdict store (cache:get)  vs  ngx.shared.DICT:get
--                     of the same key + cachy's codec decode (core.decode)
--   tiered L1 hit     a tiered { memory, shdict, redis } store whose memory
--                     level holds every key  vs  lua-resty-lrucache's get
--   memory get        the memory store  vs  lua-resty-lrucache's get
--
-- Rounds alternate the two sides batch by batch (ROUNDS rounds, a batch
-- being BATCH gets), timed with os.clock (the worker's CPU time); ns/op is
-- each side's median batch, the ratio the median of the rounds' ratios
-- (above 1: cachy slower), as bench/run computes its rows. Answers one
-- row per line, tab-separated:
--   nginx <TAB> operation <TAB> cachy ns/op <TAB> base ns/op <TAB> ratio <TAB> baseline <TAB> limit
local M = {}

local NKEYS, VLEN = 100, 100
local ROUNDS, BATCH = 21, 20000

local VALUE = {}
for i = 1, VLEN do VALUE[i] = string.char(97 + (i - 1) % 26) end
VALUE = table.concat(VALUE)

local keys = {}
for i = 1, NKEYS do keys[i] = "k" .. i end

local cache, zone, lru, decode, prefix

-- init_by_lua: the managers are made before the worker forks.
function M.init(redis_port)
  prefix = "loop:"
  cache = require("cachy").new({
    prefix = prefix,
    default = "shared",
    stores = {
      shared = { driver = "shdict", dict = "bench" },
      memory = { driver = "memory" },
      redis = { driver = "redis", port = redis_port },
      tiered = { driver = "tiered", levels = { "memory", "shared", "redis" }, max_stale = 60 },
    },
  })
  decode = require("cachy.core").decode
end

local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- A timed batch over f, as its own function: each side gets its own copy
-- of the loop's bytecode (load of one source), so LuaJIT records a trace
-- per side; one loop shared by both sides ran the second side through a
-- side trace of the first.
local BATCH_SOURCE = [[
local f, batch, nkeys, value, clock = ...
return function()
  local t0 = clock()
  for i = 1, batch do
    if f(i % nkeys + 1) ~= value then error("a side read another value", 0) end
  end
  return (clock() - t0) / batch * 1e9
end
]]
local function batch_of(f)
  return assert((loadstring or load)(BATCH_SOURCE, "=loop batch"))(f, BATCH, NKEYS, VALUE, os.clock)
end

-- Times cachy_fn against base_fn (each called with a key index 1..NKEYS,
-- each returning the value): cachy ns, base ns, ratio.
local function compare(cachy_fn, base_fn)
  -- The rows time hits, so their traces are recorded on hits. LuaJIT
  -- records a function that is called often as a trace of its own, on the
  -- path of the call that made it hot; a loop that calls that function
  -- later can only include it when that trace returned. The setup's reads
  -- were misses, and a get recorded on a miss (which goes on into the
  -- levels below) ends a loop's trace at its call: 30-45 ns a hit instead
  -- of 15. So the traces made so far are dropped, for both sides, and
  -- every key is read once: what a side keeps from its last read (the
  -- memory store's reference to an unchanged item) is then there when the
  -- timed loop's trace is recorded.
  jit.flush()
  for i = 1, NKEYS do cachy_fn(i); base_fn(i) end
  local sides = { batch_of(cachy_fn), batch_of(base_fn) }
  local ct, bt, ratios = {}, {}, {}
  for round = 1, ROUNDS do
    local times = {}
    for j = 0, 1 do
      local side = (round + j) % 2 + 1
      times[side] = sides[side]()
    end
    ct[round], bt[round], ratios[round] = times[1], times[2], times[1] / times[2]
  end
  return median(ct), median(bt), median(ratios)
end

function M.loop()
  zone = zone or ngx.shared.bench
  if not lru then
    lru = assert(require("resty.lrucache").new(NKEYS * 2))
    for i = 1, NKEYS do lru:set(keys[i], VALUE, 600) end
  end
  local shared, memory, tiered = cache:store("shared"), cache:store("memory"), cache:store("tiered")
  -- The keys are written through the tiered store, whose levels are the
  -- other two rows' stores. Each write posts an invalidation event, which
  -- this worker's poller applies too, dropping its copies of the key; so
  -- the copies are made once the poller has applied them all (the reads
  -- below do not yield: the shdict level answers them). Otherwise a key
  -- could miss in the timed loops, or in the reads that record their
  -- traces, which are then traces of a miss.
  for i = 1, NKEYS do assert(tiered:put(keys[i], VALUE, 10)) end
  ngx.sleep(5 * require("cachy.tiered").POLL)
  for i = 1, NKEYS do
    assert(shared:get(keys[i]) == nil)             -- forgotten: the put invalidated it
    assert(tiered:get(keys[i]) == VALUE)           -- now in its memory and shdict levels
  end
  for i = 1, NKEYS do
    assert(memory:get(keys[i]) == VALUE and shared:get(keys[i]) == VALUE)
  end
  local rows = {
    { "shdict get", 1.5, "ngx.shared.DICT:get + core.decode",
      function(i) return shared:get(keys[i]) end,
      function(i)
        local _, v = decode(zone:get(prefix .. keys[i]))
        return v
      end },
    { "tiered L1 hit", 2.0, "lua-resty-lrucache get",
      function(i) return tiered:get(keys[i]) end,
      function(i) return lru:get(keys[i]) end },
    { "memory get", 2.0, "lua-resty-lrucache get",
      function(i) return memory:get(keys[i]) end,
      function(i) return lru:get(keys[i]) end },
  }
  for _, r in ipairs(rows) do
    local c, b, ratio = compare(r[4], r[5])
    ngx.say(string.format("nginx\t%s, in-handler loop\t%.1f\t%.1f\t%.3f\t%s\t%.1f", r[1], c, b, ratio, r[3], r[2]))
  end
end

return M
