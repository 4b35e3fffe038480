-- bench/stampede/locations.lua: the locations bench/stampede/run loads with
-- wrk, on two nginx workers sharing a Redis store over cosockets.
--   /stampede  the key changes every 0.5 s, so every round begins with the
--              wrk connections missing it at once; its function takes
--              100 ms. A caller that found the key cold (a get before the
--              remember) counts its latency in the shared dict; runs count
--              per round.
--   /flexible  a warm key in its stale window (fresh 0.2 s, then stale):
--              the answer is the stale value while the refresh runs in a
--              timer; wrk's own latency percentiles measure it.
--   /get       a plain get of that key: what a request costs at that load
--   /report    rounds, the most runs in one round, cold callers, their p99
--              and the worst, in ms
local cachy = require("cachy")

local M = {}
local cache

function M.init(redis_port)
  cache = cachy.new({ prefix = "stampede:", stores = { main = { driver = "redis", port = redis_port } } })
end

local function slow(round)
  return function()
    ngx.shared.stampede:incr("runs:" .. round, 1, 0)
    ngx.sleep(0.1)
    return "value of round " .. round
  end
end

function M.stampede()
  ngx.update_time()
  local round = math.floor(ngx.now() * 2)
  local key = "round:" .. round
  local cold = cache:get(key) == nil
  local t0 = ngx.now()
  local v = cache:remember(key, 10, slow(round))
  ngx.update_time()
  if cold then
    local dict = ngx.shared.stampede
    dict:incr("cold", 1, 0)
    dict:incr("ms:" .. math.floor((ngx.now() - t0) * 1000), 1, 0)
    dict:set("round:" .. round, true)
  end
  ngx.say(v)
end

function M.flexible()
  ngx.say(cache:flexible("warm", { 0.2 / 60, 10 }, slow("flexible")))
end

-- The reference for /flexible's latency: a plain get of the same key.
function M.get()
  ngx.say(cache:get("warm"))
end

function M.report()
  local dict = ngx.shared.stampede
  local rounds, most, lat, cold = 0, 0, {}, dict:get("cold") or 0
  for _, k in ipairs(dict:get_keys(0)) do
    local r = k:match("^round:(%d+)$")
    if r then
      rounds = rounds + 1
      most = math.max(most, dict:get("runs:" .. r) or 0)
    end
    local ms = k:match("^ms:(%d+)$")
    if ms then lat[#lat + 1] = { tonumber(ms), dict:get(k) } end
  end
  table.sort(lat, function(a, b) return a[1] < b[1] end)
  local seen, p99, worst = 0, nil, 0
  for _, e in ipairs(lat) do
    seen = seen + e[2]
    if p99 == nil and seen >= 0.99 * cold then p99 = e[1] end
    worst = e[1]
  end
  ngx.say(rounds, " ", most, " ", cold, " ", p99 or "n/a", " ", worst, " ", dict:get("runs:flexible") or 0)
end

return M
