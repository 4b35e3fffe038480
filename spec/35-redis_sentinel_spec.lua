-- spec/35-redis_sentinel_spec.lua: the Redis store behind Redis Sentinel: a
-- master and its replica, watched by two sentinels (redis-server
-- --sentinel with a generated config, free 127.0.0.1 ports): the shared
-- behaviour suite on `sentinel = { master = ..., nodes = ... }`, the
-- checks of that field, a sentinel that refuses, and (once per make
-- check, CACHY_ONCE) the master SIGKILLed under a client loop: calls
-- succeed again on the promoted replica within 10 s, no wrong value.
local cachy = require("cachy")
local behaviour = require("behaviour")
local failover = require("helpers.failover")
local servers = require("helpers.servers")
local system = require("system")
local util = require("helpers.util")

local sh = util.sh

describe("redis sentinel", function()
  local group
  local managers = {}

  lazy_setup(function()
    group = servers.sentinel_group()
  end)

  lazy_teardown(function()
    if group then group.stop() end
  end)

  after_each(function()
    util.close_managers(managers)
  end)

  local function store(fields)
    local config = { driver = "redis", sentinel = { master = "mymaster", nodes = group.nodes } }
    for k, v in pairs(fields or {}) do config[k] = v end
    local m = cachy.new({ stores = { main = config } })
    managers[#managers + 1] = m
    return m
  end

  behaviour("redis-sentinel", {
    config = function()
      return { driver = "redis", sentinel = { master = "mymaster", nodes = { group.nodes[1], group.nodes[2] } } }
    end,
  })

  describe("sentinel", function()
    it("writes to the master the sentinels name, which the replica copies", function()
      local c = store()
      assert.are.equal(true, c:put("where", "master"))
      assert.is_truthy(sh(string.format("redis-cli -p %d EXISTS where", group.master.port)):find("1", 1, true))
      for _ = 1, 100 do
        if sh(string.format("redis-cli -p %d EXISTS where", group.replica.port)):find("1", 1, true) then return end
        system.sleep(0.02)
      end
      error("the replica never got the key")
    end)

    it("locks: one owner at a time, released by its owner only", function()
      local a, b = store(), store()
      local la, lb = a:lock("sentinel-lock", 5), b:lock("sentinel-lock", 5)
      assert.are.equal(true, la:get())
      assert.are.equal(false, lb:get())
      assert.are.equal(false, lb:release())
      assert.are.equal(true, la:refresh(5))
      assert.are.equal(true, la:release())
      assert.are.equal(true, lb:get())
      assert.are.equal(true, lb:release())
    end)

    it("skips a sentinel that refuses; with none answering, fails with the last one's error", function()
      local c = store({ sentinel = { master = "mymaster", nodes = { "127.0.0.1:1", group.nodes[2] } } })
      assert.are.equal(true, c:put("k", "v"))
      assert.are.equal("v", c:get("k"))
      c = store({ sentinel = { master = "mymaster", nodes = { "127.0.0.1:1" } } })
      local v, err, code = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis sentinel 127.0.0.1:1): connection refused", err)
      assert.are.equal("refused", code)
      c = store({ sentinel = { master = "nosuch", nodes = { group.nodes[1] } } })
      v, err, code = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis sentinel " .. group.nodes[1] .. "): the sentinel knows no master named 'nosuch'", err)
      assert.are.equal("backend", code)
    end)

    it("names what is wrong with the sentinel field", function()
      local function new_err(sentinel, extra)
        local config = { driver = "redis", sentinel = sentinel }
        for k, v in pairs(extra or {}) do config[k] = v end
        local ok, err = pcall(cachy.new, { stores = { main = config } })
        assert.is_false(ok)
        return err
      end
      assert.are.equal("cachy.new: store 'main' field 'sentinel' must be a table { master = name, nodes = { \"host:port\", ... } }, got string",
        new_err("127.0.0.1:26379"))
      assert.are.equal("cachy.new: store 'main' field 'sentinel': 'master' must be the master's name, got nil",
        new_err({ nodes = { "127.0.0.1:26379" } }))
      assert.are.equal("cachy.new: store 'main' field 'sentinel': 'nodes' must be a list of strings \"host:port\", at least one",
        new_err({ master = "m", nodes = {} }))
      assert.are.equal("cachy.new: store 'main' field 'sentinel' has no field 'node'",
        new_err({ master = "m", node = "x" }))
      local c = store({ sentinel = { master = "m", nodes = { "nope" } } })
      local v, err, code = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis sentinel m): field 'sentinel' node 1 must be \"host:port\", got \"nope\"", err)
      assert.are.equal("misuse", code)
      c = store({ host = "127.0.0.1" })
      v, err = c:get("k")
      assert.is_truthy(err:find("field 'host' cannot be set with 'sentinel'", 1, true), err)
    end)

    if os.getenv("CACHY_ONCE") then
      it("a master turned replica under an open connection: READONLY drops it, the next call finds the new master", function()
        local c = store()
        assert.are.equal(true, c:put("ro", "before"))
        local old, new = group.master, group.replica
        assert.is_truthy(sh(string.format("redis-cli -p %d SENTINEL FAILOVER mymaster", group.sentinels[1].port)):find("OK", 1, true))
        group.master, group.replica = new, old
        servers.wait_sentinels(group, 30)
        -- the old master's connection is still open: its first write gets READONLY
        for _ = 1, 100 do
          if sh(string.format("redis-cli -p %d ROLE", old.port)):find("^slave") then break end
          system.sleep(0.05)
        end
        local ok, err, code = c:put("ro", "after")
        if ok == nil then
          assert.are.equal("backend", code)
          assert.is_truthy(err:find("): READONLY", 1, true), err)
          ok, err = c:put("ro", "after")
        end
        assert.are.equal(true, ok, err)
        assert.are.equal("after", c:get("ro"))
        assert.is_truthy(sh(string.format("redis-cli -p %d GET ro", new.port)):find("after", 1, true))
      end)

      it("the master SIGKILLed: calls succeed again on the promoted replica within 10 s, no wrong value", function()
        local c = store()
        local r = failover.run({
          cache = c, prefix = "f", n = 200, limit = 30,
          first_put = function(_, ...) assert.are.equal(true, ...) end,
          kill = function() group.master:stop("KILL") end,
          error = function(err) assert.is_string(err) end,
          now = system.monotime, sleep = system.sleep,
        })
        local back = r.back
        print(string.format("\n# sentinel failover: last error %.2f s after the kill, %d rounds, %d errors", back, r.rounds, r.errors))
        assert.is_true(r.clean, "no clean pass within 30 s")
        assert.are.equal(0, r.wrong)
        assert.is_true(back < 10, "errors until " .. back .. " s after the kill")
        -- the promoted replica is the master now
        assert.are.equal("v1 " .. r.rounds, c:get("f1"))
        assert.is_truthy(sh(string.format("redis-cli -p %d ROLE", group.replica.port)):find("^master"))
      end)
    end
  end)
end)
