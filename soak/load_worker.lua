-- soak/load_worker.lua: one client process of the load test (soak/load.lua).
--
--   lua5.4 soak/load_worker.lua DRIVER PORT ID STOPFILE SEED MAX_SECONDS
--
-- Runs mixed operations on its own keys until STOPFILE exists (or for
-- MAX_SECONDS, should the test that started it be gone), while the
-- server may be killed and restarted under it. A restart loses data, so a
-- miss is always allowed; a value that this process never wrote for that
-- key is not. A failed write may or may not have happened, so after one
-- the key may hold either value. Prints one line:
--   result ops=N errors=N wrong=N raised=N misses=N recovered=0|1
-- where errors are `nil, err` returns (each checked to name the store),
-- wrong are results no history allows, raised are errors thrown instead of
-- returned, and recovered says the last operation after the last error
-- succeeded. Details of anything wrong go to stderr.
local common = require("soak.common")
local cachy = require("cachy")
local system = require("system")

local driver, port, id, stopfile, seed = arg[1], tonumber(arg[2]), arg[3], arg[4], tonumber(arg[5])
local max_seconds = tonumber(arg[6])
math.randomseed(seed)
local rng = math.random

local config
if driver == "redis" then
  config = { driver = "redis", host = "127.0.0.1", port = port, connect_timeout = 1.0, timeout = 1.0 }
else
  config = { driver = "memcached", servers = { "127.0.0.1:" .. port }, connect_timeout = 1.0, timeout = 1.0 }
end
local decorator_errors = 0
local cache = cachy.new({
  stores = { main = config },
  on_error = function() decorator_errors = decorator_errors + 1 end,
})

local counts = { ops = 0, errors = 0, wrong = 0, raised = 0, misses = 0 }
local last_error_at, last_ok_at = -1, -1
local ERR_PATTERN = "^store 'main' %(" .. driver .. " [^)]*%): ."

local function report_wrong(fmt, ...)
  counts.wrong = counts.wrong + 1
  if counts.wrong <= 5 then
    io.stderr:write(string.format("worker %s: wrong: ", id), string.format(fmt, ...), "\n")
  end
end

-- Runs one call; returns ok (true: a result came back), and the results.
local function run(what, f, ...)
  counts.ops = counts.ops + 1
  local r = table.pack(pcall(f, cache, ...))
  if not r[1] then
    counts.raised = counts.raised + 1
    last_error_at = counts.ops
    io.stderr:write(string.format("worker %s: %s raised: %s\n", id, what, tostring(r[2])))
    return false
  end
  if r[2] == nil and r[3] ~= nil then
    counts.errors = counts.errors + 1
    last_error_at = counts.ops
    if type(r[3]) ~= "string" or not r[3]:match(ERR_PATTERN) then
      report_wrong("%s gave an error that does not name the store: %s", what, tostring(r[3]))
    end
    return false
  end
  last_ok_at = counts.ops
  return true, r[2], r[3]
end

-- ---- values: what a key may hold ---------------------------------------------

local keys = common.keys(rng, 40, "load:" .. id)
local possible = {}        -- key index -> { [seq] = value } the key may hold
for i = 1, #keys do possible[i] = {} end
local seq = 0

local function check_value(i, got)
  if got == nil then
    counts.misses = counts.misses + 1
    return
  end
  if type(got) ~= "table" or got.w ~= id or got.k ~= i or type(got.seq) ~= "number" then
    report_wrong("key %d holds a value this process did not write for it: %s", i, tostring(got))
    return
  end
  local want = possible[i][got.seq]
  if want == nil then
    report_wrong("key %d holds write #%d, which it can no longer hold", i, got.seq)
    return
  end
  local why = common.diff(want, got, "value")
  if why then report_wrong("key %d: %s", i, why) end
end

local function new_value(i)
  seq = seq + 1
  return { w = id, k = i, seq = seq, v = common.value(rng, 2) }
end

-- ---- counters: the values a counter may have -----------------------------------

local counters = {}        -- index -> set of possible values, or false (unknown)
local NCOUNTERS = 5
for c = 1, NCOUNTERS do counters[c] = { [0] = true } end

local function counter_step(c, n, ok, r)
  local cands = counters[c]
  if ok then
    if math.type(r) ~= "integer" then
      report_wrong("counter %d: increment gave %s", c, tostring(r))
    elseif cands and not cands[r - n] and r ~= n then
      report_wrong("counter %d: increment by %d gave %d, from no value it can have had", c, n, r)
    end
    counters[c] = { [r] = true }
    return
  end
  if not cands then return end
  -- Applied or not; or the server lost the key and it started again.
  local nxt, size = {}, 0
  for p in pairs(cands) do
    if not nxt[p] then nxt[p], size = true, size + 1 end
    if not nxt[p + n] then nxt[p + n], size = true, size + 1 end
  end
  nxt[0], nxt[n] = true, true
  counters[c] = size <= 32 and nxt or false
end

-- ---- the memoized function: results depend on the argument alone --------------

local function square(x) return { x = x, square = x * x }, "tail", nil end
local memo = cache(square, { key = "load:memo:" .. id })

-- ---- the loop ------------------------------------------------------------------

local function stop_requested()
  local f = io.open(stopfile)
  if f then f:close() end
  return f ~= nil
end

local started = common.now()
local i = 0
while true do
  i = i + 1
  if i % 200 == 0 and (stop_requested() or common.now() - started > max_seconds) then break end
  local k = rng(#keys)
  local op = rng(100)
  if op <= 35 then
    local ok, v = run("get", cache.get, keys[k])
    if ok then check_value(k, v) end
  elseif op <= 55 then
    local v = new_value(k)
    local ok, res = run("put", cache.put, keys[k], v)
    if ok then
      if res ~= true then report_wrong("put returned %s", tostring(res)) end
      possible[k] = { [v.seq] = common.copy(v) }
    else
      possible[k][v.seq] = common.copy(v)
    end
  elseif op <= 62 then
    local v = new_value(k)
    local ok, res = run("add", cache.add, keys[k], v)
    if ok and res == true then
      possible[k] = { [v.seq] = common.copy(v) }
    elseif ok and res ~= false then
      report_wrong("add returned %s", tostring(res))
    elseif not ok then
      possible[k][v.seq] = common.copy(v)
    end
  elseif op <= 70 then
    local ok, res = run("forget", cache.forget, keys[k])
    if ok then
      if type(res) ~= "boolean" then report_wrong("forget returned %s", tostring(res)) end
      possible[k] = {}
    end
  elseif op <= 85 then
    local c = rng(NCOUNTERS)
    local n = rng(-5, 20)
    local ok, r = run("increment", cache.increment, "load:" .. id .. ":counter:" .. c, n)
    counter_step(c, n, ok, r)
  else
    local x = rng(50)
    counts.ops = counts.ops + 1
    local r = table.pack(pcall(memo, x))
    if not r[1] then
      counts.raised = counts.raised + 1
      io.stderr:write(string.format("worker %s: decorator raised: %s\n", id, tostring(r[2])))
    elseif r.n ~= 4 or type(r[2]) ~= "table" or r[2].x ~= x or r[2].square ~= x * x
        or r[3] ~= "tail" or r[4] ~= nil then
      report_wrong("decorator call %d returned other results", x)
    end
  end
end

cache:close()
print(string.format("result ops=%d errors=%d wrong=%d raised=%d misses=%d decorator_errors=%d recovered=%d",
  counts.ops, counts.errors, counts.wrong, counts.raised, counts.misses, decorator_errors,
  last_ok_at > last_error_at and 1 or 0))
