-- spec/33-redis_cluster_spec.lua: the Redis store on a Redis Cluster of 3
-- masters and 3 replicas (redis-server --cluster-enabled yes on free
-- 127.0.0.1 ports, formed by redis-cli --cluster create): the shared
-- behaviour suite, then what only a cluster has: keys spread over the
-- masters, hash tags, MOVED and ASK while a slot migrates, batches and
-- flush across nodes, and the checks of the `cluster` field. Resharding
-- and failover under load are in 34-redis_cluster_faults_spec.lua.
local cachy = require("cachy")
local behaviour = require("behaviour")
local servers = require("helpers.servers")
local util = require("helpers.util")

describe("redis cluster", function()
  local cluster
  local managers = {}

  lazy_setup(function()
    cluster = servers.cluster()
  end)

  lazy_teardown(function()
    if cluster then cluster.stop() end
  end)

  after_each(function()
    util.close_managers(managers)
  end)

  local cli = util.redis_cli

  -- The masters: { port = ..., id = ..., slots = { { from, to }, ... } }.
  local function masters()
    local out = {}
    for line in cli(cluster.nodes[1].port, "CLUSTER", "NODES"):gmatch("[^\n]+") do
      -- id addr flags master ping pong epoch state slot...
      local fields = {}
      for f in line:gmatch("%S+") do fields[#fields + 1] = f end
      local flags = fields[3] or ""
      if flags:find("master", 1, true) and not flags:find("fail", 1, true) then
        local m = { id = fields[1], port = tonumber(fields[2]:match(":(%d+)@")), slots = {} }
        for i = 9, #fields do
          local from, to = fields[i]:match("^(%d+)%-(%d+)$")
          from = from or fields[i]:match("^(%d+)$")
          if from then m.slots[#m.slots + 1] = { tonumber(from), tonumber(to or from) } end
        end
        out[#out + 1] = m
      end
    end
    return out
  end

  local function master_of(slot)
    for _, m in ipairs(masters()) do
      for _, r in ipairs(m.slots) do
        if slot >= r[1] and slot <= r[2] then return m end
      end
    end
  end

  local function store(fields)
    local config = { driver = "redis", cluster = { cluster.seeds[1], cluster.seeds[2] } }
    for k, v in pairs(fields or {}) do config[k] = v end
    local m = cachy.new({ stores = { main = config } })
    managers[#managers + 1] = m
    return m
  end

  behaviour("redis-cluster", {
    config = function() return { driver = "redis", cluster = { cluster.seeds[1], cluster.seeds[4] } } end,
  })

  describe("routing", function()
    before_each(function()
      for _, m in ipairs(masters()) do cli(m.port, "FLUSHALL") end
    end)

    it("puts each key on the master of its slot, as redis-cli -c finds it", function()
      local c = store()
      local seen = {}
      for i = 1, 60 do
        assert.are.equal(true, c:put("k" .. i, "v" .. i))
      end
      for i = 1, 60 do
        local slot = tonumber(cli(cluster.nodes[1].port, "CLUSTER", "KEYSLOT", "k" .. i))
        local m = master_of(slot)
        -- the raw value is the store's encoding of the string; it is there, on that node only
        assert.are.equal("1", cli(m.port, "EXISTS", "k" .. i))
        seen[m.port] = true
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.are.equal(3, n)
    end)

    it("keeps keys with the same {hash tag} in one slot", function()
      local c = store()
      assert.are.equal(true, c:put("{user1}:name", "ann"))
      assert.are.equal(true, c:put("{user1}:mail", "a@x"))
      local slot = tonumber(cli(cluster.nodes[1].port, "CLUSTER", "KEYSLOT", "user1"))
      local m = master_of(slot)
      assert.are.equal("2", cli(m.port, "EXISTS", "{user1}:name", "{user1}:mail"))
    end)

    it("many and put_many reach every master, and flush empties them all", function()
      local c = store()
      local values, keys = {}, {}
      for i = 1, 300 do
        values["m" .. i] = i
        keys[i] = "m" .. i
      end
      assert.are.equal(true, c:put_many(values, 60))
      local got = c:many(keys)
      for i = 1, 300 do assert.are.equal(i, got["m" .. i]) end
      for _, m in ipairs(masters()) do
        assert.is_true(tonumber(cli(m.port, "DBSIZE")) > 50)
      end
      assert.are.equal(true, c:flush())
      for _, m in ipairs(masters()) do
        assert.are.equal("0", cli(m.port, "DBSIZE"))
      end
    end)

    it("a prefixed flush scans every master and leaves other prefixes", function()
      local a = cachy.new({ prefix = "a:", stores = { main = { driver = "redis", cluster = { cluster.seeds[1] } } } })
      local b = cachy.new({ prefix = "b:", stores = { main = { driver = "redis", cluster = { cluster.seeds[1] } } } })
      managers[#managers + 1] = a
      managers[#managers + 1] = b
      for i = 1, 100 do
        assert.are.equal(true, a:put("k" .. i, i))
        assert.are.equal(true, b:put("k" .. i, i))
      end
      assert.are.equal(true, a:flush())
      local left = 0
      for _, m in ipairs(masters()) do left = left + tonumber(cli(m.port, "DBSIZE")) end
      assert.are.equal(100, left)
      for i = 1, 100 do
        assert.is_nil(a:get("k" .. i))
        assert.are.equal(i, b:get("k" .. i))
      end
    end)

    it("counters and tags work across nodes", function()
      local c = store()
      for i = 1, 21 do assert.are.equal(math.ceil(i / 7), c:increment("n" .. (i % 7))) end
      assert.are.equal(5, c:increment("counter", 5))
      assert.are.equal(3, c:decrement("counter", 2))
      local t = c:tags("people", "authors")
      for i = 1, 30 do assert.are.equal(true, t:put("p" .. i, i)) end
      assert.are.equal(7, t:get("p7"))
      t:flush()
      assert.is_nil(t:get("p7"))
    end)
  end)

  describe("redirections", function()
    -- Moves the slot of key from its master to another by hand, as
    -- redis-cli --cluster reshard does: MIGRATING/IMPORTING, MIGRATE the
    -- keys, then (when finish) NODE on every master.
    local function begin_move(key)
      local slot = tonumber(cli(cluster.nodes[1].port, "CLUSTER", "KEYSLOT", key))
      local from = master_of(slot)
      local to
      for _, m in ipairs(masters()) do if m.port ~= from.port then to = m break end end
      assert.are.equal("OK", cli(to.port, "CLUSTER", "SETSLOT", tostring(slot), "IMPORTING", from.id))
      assert.are.equal("OK", cli(from.port, "CLUSTER", "SETSLOT", tostring(slot), "MIGRATING", to.id))
      return slot, from, to
    end

    local function finish_move(slot, to)
      for _, m in ipairs(masters()) do
        assert.are.equal("OK", cli(m.port, "CLUSTER", "SETSLOT", tostring(slot), "NODE", to.id))
      end
    end

    it("follows ASK for a key already migrated, then MOVED once the slot has moved", function()
      local c = store()
      assert.are.equal(true, c:put("{mv}a", "old a"))
      assert.are.equal(true, c:put("{mv}b", "b"))
      local slot, from, to = begin_move("mv")
      -- {mv}a goes to the new node now; {mv}b stays on the old one (still served there)
      assert.are.equal("OK", cli(from.port, "MIGRATE", "127.0.0.1", tostring(to.port), "", "0", "5000",
        "KEYS", "{mv}a"))
      assert.are.equal("old a", c:get("{mv}a"))          -- ASK, then ASKING + GET on the new node
      assert.are.equal(true, c:put("{mv}a", "new a"))     -- ASK again
      assert.are.equal("b", c:get("{mv}b"))
      assert.are.equal("1", cli(from.port, "EXISTS", "{mv}b"))
      local got = c:many({ "{mv}a", "{mv}b", "other" })   -- one of the pipeline's replies redirects
      assert.are.equal("new a", got["{mv}a"])
      assert.are.equal("b", got["{mv}b"])
      assert.are.equal("OK", cli(from.port, "MIGRATE", "127.0.0.1", tostring(to.port), "", "0", "5000",
        "KEYS", "{mv}b"))
      finish_move(slot, to)
      assert.are.equal("b", c:get("{mv}b"))              -- MOVED: the map is read again
      assert.are.equal(true, c:put("{mv}c", "c"))
      assert.are.equal("1", cli(to.port, "EXISTS", "{mv}c"))
      assert.are.equal(4, c:increment("{mv}n", 4))
      servers.wait_cluster(cluster)
    end)
  end)

  describe("config", function()
    it("names a malformed seed, an empty list, and fields that cannot go with cluster", function()
      local function open_err(fields)
        local config = { driver = "redis" }
        for k, v in pairs(fields) do config[k] = v end
        local m = cachy.new({ stores = { main = config } })
        managers[#managers + 1] = m
        local v, err, code = m:get("k")
        assert.is_nil(v)
        assert.are.equal("misuse", code)
        return err
      end
      assert.are.equal("store 'main' (redis cluster): field 'cluster' item 2 must be \"host:port\", got \"nope\"",
        open_err({ cluster = { cluster.seeds[1], "nope" } }))
      assert.are.equal("store 'main' (redis cluster): field 'cluster' item 1 must be \"host:port\", got \"h:99999\"",
        open_err({ cluster = { "h:99999" } }))
      assert.are.equal("store 'main' (redis cluster): field 'cluster' must list at least one node",
        open_err({ cluster = {} }))
      assert.is_truthy(open_err({ cluster = { cluster.seeds[1] }, port = 7000 })
        :find("field 'port' cannot be set with 'cluster'", 1, true))
      assert.is_truthy(open_err({ cluster = { cluster.seeds[1] }, db = 1 })
        :find("field 'db' cannot be set with 'cluster'", 1, true))
      local ok, err = pcall(cachy.new, { stores = { main = { driver = "redis", cluster = "127.0.0.1:7000" } } })
      assert.is_false(ok)
      assert.are.equal("cachy.new: store 'main' field 'cluster' must be a list of strings, got string", err)
    end)

    it("skips a seed that refuses and reads the map from the next", function()
      local c = store({ cluster = { "127.0.0.1:1", cluster.seeds[3] } })
      assert.are.equal(true, c:put("k", "v"))
      assert.are.equal("v", c:get("k"))
    end)

    it("fails with the last seed's error when no seed answers", function()
      local c = store({ cluster = { "127.0.0.1:1" } })
      local v, err, code = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis 127.0.0.1:1): connection refused", err)
      assert.are.equal("refused", code)
    end)
  end)
end)
