-- spec/34-redis_cluster_faults_spec.lua: the Redis store on a Redis Cluster
-- that changes under a running client: 2,000 slots resharded between
-- masters, and a master killed with SIGKILL until its replica takes over.
-- Timed and slow, so it runs once per `make check` (spec/run sets
-- CACHY_ONCE for the plain lua5.4 run only).
if not os.getenv("CACHY_ONCE") then return end

local cachy = require("cachy")
local servers = require("helpers.servers")
local system = require("system")
local util = require("helpers.util")

local sh, quote = util.sh, util.q
local tmp = os.getenv("CACHY_TMP") or "/tmp"

local NODE_TIMEOUT_MS = 1000
local KEYS = 2000

describe("redis cluster under change", function()
  local cluster

  lazy_setup(function()
    cluster = servers.cluster({ node_timeout = NODE_TIMEOUT_MS })
  end)

  lazy_teardown(function()
    if cluster then cluster.stop() end
  end)

  local cli = util.redis_cli

  -- The live masters that serve slots: { { id, port, node }, ... }.
  local function masters()
    local out = {}
    for _, node in ipairs(cluster.nodes) do
      if not servers.gone(node.pid) then
        for line in cli(node.port, "CLUSTER", "NODES"):gmatch("[^\n]+") do
          local id, port, flags = line:match("^(%x+) [%d.]+:(%d+)@%d+ (%S+)")
          if flags:find("myself", 1, true) and flags:find("master", 1, true)
             and line:find(" %d+%-%d+") then
            out[#out + 1] = { id = id, port = tonumber(port), node = node }
          end
        end
      end
    end
    return out
  end

  local function new_cache()
    return cachy.new({ stores = { main = { driver = "redis", cluster = cluster.seeds } } })
  end

  -- A client loop over KEYS keys, each put then read back, counting the
  -- reads that returned a value never written to that key (wrong), and the
  -- failed calls (which must come as nil, err: a raise fails the test).
  local function client(c)
    local st = { ops = 0, errors = 0, wrong = 0, written = {}, last_error = nil, samples = {} }
    function st.step(i, round)
      local key = "key:" .. i
      local value = "value " .. i .. " " .. round
      local ok, err = c:put(key, value)
      st.ops = st.ops + 1
      st.written[key] = st.written[key] or {}
      st.written[key][value] = true
      if ok ~= true then
        st.errors = st.errors + 1
        st.last_error = system.monotime()
        if #st.samples < 5 then st.samples[#st.samples + 1] = tostring(err) end
        assert.is_string(err)
      end
      local got
      got, err = c:get(key)
      st.ops = st.ops + 1
      if got == nil and err then
        st.errors = st.errors + 1
        st.last_error = system.monotime()
        if #st.samples < 5 then st.samples[#st.samples + 1] = tostring(err) end
      elseif got ~= nil and not st.written[key][got] then
        st.wrong = st.wrong + 1
      end
      return got == value
    end
    return st
  end

  it("reshards 2,000 slots while a client puts and checks 2,000 keys: no wrong value, under 1 % errors", function()
    local c = new_cache()
    local st = client(c)
    for i = 1, KEYS do st.step(i, 0) end
    assert.are.equal(0, st.errors)
    local ms = masters()
    local log = tmp .. "/reshard-" .. os.time() .. ".log"
    local pid = tonumber(sh(string.format(
      "redis-cli --cluster reshard 127.0.0.1:%d --cluster-from %s --cluster-to %s --cluster-slots 2000 " ..
      "--cluster-yes >%s 2>&1 & echo $!", ms[1].port, ms[1].id, ms[2].id, quote(log))):match("%d+"))
    local round, before = 0, tonumber(cli(ms[2].port, "CLUSTER", "COUNTKEYSINSLOT", "0"))
    repeat
      round = round + 1
      for i = 1, KEYS do st.step(i, round) end
    until servers.gone(pid)
    os.execute("wait " .. pid .. " 2>/dev/null")
    local f = io.open(log)
    local out = f and f:read("*a") or ""
    if f then f:close() end
    assert.is_falsy(out:find("[ERR]", 1, true), out)
    assert.is_truthy(out:find("Moving slot", 1, true), out)
    assert.is_truthy(before)
    -- the moved slots are served by the new master now, and every key reads back
    round = round + 1
    local fresh = new_cache()
    for i = 1, KEYS do
      assert.are.equal(true, c:put("key:" .. i, "final " .. i))
      assert.are.equal("final " .. i, fresh:get("key:" .. i))
    end
    print(string.format("\n# reshard: %d rounds, %d operations, %d errors, %d wrong %s",
      round, st.ops, st.errors, st.wrong, table.concat(st.samples, " | ")))
    assert.are.equal(0, st.wrong)
    assert.is_true(st.errors < st.ops / 100, st.errors .. " errors in " .. st.ops .. " operations")
    c:close()
    fresh:close()
  end)

  it("a master killed with SIGKILL: calls succeed again within cluster-node-timeout + 3 s, no wrong value", function()
    local c = new_cache()
    local st = client(c)
    for i = 1, KEYS do st.step(i, 0) end
    assert.are.equal(0, st.errors)
    system.sleep(0.3)                  -- the replicas have what was written
    local victim = masters()[1]
    victim.node:stop("KILL")
    local killed = system.monotime()
    -- a loop over every key until a whole pass succeeds, or 20 s
    local round, clean = 0, false
    repeat
      round = round + 1
      clean = true
      for i = 1, KEYS do
        if not st.step(i, round) then clean = false end
      end
    until clean or system.monotime() - killed > 20
    local back = (st.last_error or killed) - killed
    print(string.format("\n# failover: last error %.2f s after the kill, %d rounds, %d operations, %d errors, %s",
      back, round, st.ops, st.errors, table.concat(st.samples, " | ")))
    assert.is_true(clean, "no clean pass within 20 s")
    assert.are.equal(0, st.wrong)
    assert.is_true(back < NODE_TIMEOUT_MS / 1000 + 3, "errors until " .. back .. " s after the kill")
    c:close()
  end)
end)
