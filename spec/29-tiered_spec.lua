-- spec/29-tiered_spec.lua: the tiered store outside nginx (SPEC section
-- 11): the shared behaviour suite on { memory, redis } and { memory, file },
-- copies made with the lifetime left, writes through the last level, and
-- two processes that see each other's writes within max_stale (1 s). Also
-- the shdict store's refusal outside nginx and both drivers' config
-- checks. (Inside nginx: spec/nginx/workers and the nginx suite.)
--
-- Lua 5.4 only: it waits for lifetimes and for another process, and the
-- drivers are Lua over the same C handles on every interpreter. On the
-- sanitizer build only the cases that wait for nothing run again: the C
-- they reach is the ttl slot.
if rawget(_G, "jit") or _VERSION ~= "Lua 5.4" then return end

local cachy = require("cachy")
local behaviour = require("behaviour")
local servers = require("helpers.servers")
local system = require("system")
local util = require("helpers.util")

local tmp = os.getenv("CACHY_TMP") or "/tmp"
local sanitized = not util.runs_slow_cases()

describe("tiered", function()
  local server
  local managers = {}
  local dir = tmp .. "/tiered-spec-" .. os.time() .. "-" .. math.random(1e9)

  -- the suites' redis level (its port is known once the server runs)
  local l2_redis = { driver = "redis" }

  lazy_setup(function()
    server = servers.start("redis")
    l2_redis.port = server.port
  end)

  lazy_teardown(function()
    for _, m in ipairs(managers) do m:close() end
    if server then server:stop() end
    os.execute("rm -rf " .. util.q(dir))
  end)

  local function tiered(last, fields, prefix)
    local t = { driver = "tiered", levels = { "memory", "last" } }
    for k, v in pairs(fields or {}) do t[k] = v end
    local m = cachy.new({
      default = "main",
      prefix = prefix or "ts:",
      stores = { main = t, memory = { driver = "memory" }, last = last },
    })
    managers[#managers + 1] = m
    return m
  end

  local function redis_store() return { driver = "redis", port = server.port } end

  if not sanitized then
    behaviour("tiered memory, redis", {
      config = function() return { driver = "tiered", levels = { "l1", "l2" }, max_stale = 60 } end,
      manager_config = {
        stores = {
          main = { driver = "tiered", levels = { "l1", "l2" }, max_stale = 60 },
          l1 = { driver = "memory" },
          l2 = l2_redis,
        },
      },
    })

    behaviour("tiered memory, file", {
      config = function() return { driver = "tiered", levels = { "l1", "l2" } } end,
      manager_config = {
        stores = {
          main = { driver = "tiered", levels = { "l1", "l2" } },
          l1 = { driver = "memory" },
          l2 = { driver = "file", path = dir },
        },
      },
    })
  end

  for _, last in ipairs({ "redis", "file" }) do
    it("copies a value from " .. last .. " into the level above with the lifetime it has left, at most max_stale", function()
      local c = tiered(last == "redis" and redis_store() or { driver = "file", path = dir .. "/copies" }, { max_stale = 60 })
      assert(c:flush())
      assert.are.equal(true, c:store("last"):put("k", "v", 0.5))        -- 30 s
      assert.are.equal(true, c:store("last"):forever("f", "w"))
      assert.are.equal(nil, c:store("memory"):get("k"))
      assert.are.equal("v", c:get("k"))
      assert.are.equal("v", c:store("memory"):get("k"))                 -- the copy, same key
      local mem = c:store("memory"):_store()
      local left = mem:ttl("k")
      assert.is_true(left > 29000 and left <= 30000, "left " .. tostring(left))
      assert.are.equal("w", c:get("f"))
      left = mem:ttl("f")
      assert.is_true(left > 59000 and left <= 59995, "left " .. tostring(left))
      assert.are.same({ k = "v", f = "w" }, c:many({ "k", "f", "none" }))
    end)
  end

  it("a store's ttl: milliseconds left, 0 without expiry, nothing for a miss; memcached cannot tell", function()
    local c = cachy.new({
      default = "memory",
      stores = {
        memory = { driver = "memory" },
        redis = redis_store(),
        file = { driver = "file", path = dir .. "/ttl" },
        memcached = { driver = "memcached", servers = { "127.0.0.1:1" } },
      },
    })
    managers[#managers + 1] = c
    for _, name in ipairs({ "memory", "redis", "file" }) do
      local repo = c:store(name)
      assert(repo:put("t", 1, 0.5))
      assert(repo:forever("f", 1))
      assert(repo:forget("none") ~= nil)
      local st = repo:_store()
      local left = st:ttl("t")
      assert.is_true(left > 29000 and left <= 30000, name .. " left " .. tostring(left))
      assert.are.equal(0, st:ttl("f"), name)
      assert.are.equal(0, select("#", st:ttl("none")), name)
    end
    local v, err, code = c:store("memcached"):_store():ttl("k")
    assert.is_nil(v)
    assert.are.equal("store 'memcached' (memcached 127.0.0.1:1): the memcached driver cannot tell a key's lifetime", err)
    assert.are.equal("misuse", code)
  end)

  it("answers from the first level that holds the key", function()
    local c = tiered(redis_store())
    assert(c:flush())
    assert.are.equal(true, c:store("memory"):put("only-up", "up", 1))
    assert.are.equal("up", c:get("only-up"))
    assert.are.equal(nil, c:store("last"):get("only-up"))
  end)

  -- A first-level hit is answered by that level's bound get (the C or
  -- FFI path), without the tiered store's Lua get: it is counted here too.
  it("counts its hits, those its first level answers included", function()
    local c = tiered(redis_store(), { max_stale = 60 }, "tstats:")
    assert(c:flush())
    assert(c:put("k", "v", 1))
    for _ = 1, 3 do assert.are.equal("v", c:get("k")) end     -- from redis, then the copy twice
    assert.is_nil(c:get("absent"))
    local s = c:stats()
    assert.are.same({ 3, 1, 1 }, { s.hits, s.misses, s.writes })
  end)

  it("writes to the last level and removes the copies above", function()
    local c = tiered(redis_store(), { max_stale = 60 })
    assert(c:flush())
    assert.are.equal(true, c:put("k", "v1"))
    assert.are.equal(nil, c:store("memory"):get("k"))
    assert.are.equal("v1", c:get("k"))
    assert.are.equal("v1", c:store("memory"):get("k"))
    assert.are.equal(true, c:put("k", "v2"))
    assert.are.equal(nil, c:store("memory"):get("k"))
    assert.are.equal("v2", c:store("last"):get("k"))
    assert.are.equal("v2", c:get("k"))
    assert.are.equal(false, c:add("k", "v3"))
    assert.are.equal("v2", c:store("memory"):get("k"))           -- nothing changed
    assert.are.equal(1, c:increment("n"))
    assert.are.equal(1, c:get("n"))
    assert.are.equal(2, c:increment("n"))
    assert.are.equal(nil, c:store("memory"):get("n"))
    assert.are.equal(2, c:store("last"):get("n"))
    assert.are.equal(true, c:forget("k"))
    assert.are.equal(nil, c:store("memory"):get("k"))
    assert.are.equal(nil, c:store("last"):get("k"))
    assert.are.equal(2, c:get("n"))
    assert.are.equal(true, c:flush())
    assert.are.equal(nil, c:store("memory"):get("n"))
    assert.are.equal(nil, c:store("last"):get("n"))
  end)

  it("names itself and the level in a failure", function()
    local c = tiered({ driver = "redis", port = 1, retry_after = 0 })
    local v, err, code = c:get("k")
    assert.is_nil(v)
    assert.are.equal("store 'main' (tiered memory, last): store 'last' (redis 127.0.0.1:1): connection refused", err)
    assert.are.equal("refused", code)
    v, err = c:put("k", 1)
    assert.is_nil(v)
    assert.are.equal("store 'main' (tiered memory, last): store 'last' (redis 127.0.0.1:1): connection refused", err)
  end)

  -- This process and another (spec/helpers/tiered_worker.lua), each with
  -- its own { memory, redis } store, max_stale = 1: each reads k (its
  -- memory level holds a copy), the other writes, the reader sees the new
  -- value within 1 s of the write.
  local slow_it = sanitized and pending or it
  slow_it("two processes with max_stale = 1 see each other's writes within 1 s", function()
    local prefix = "two:" .. os.time() .. ":"
    local sync = dir .. "/sync-" .. math.random(1e9)
    os.execute("mkdir -p " .. util.q(sync))
    local c = tiered(redis_store(), { max_stale = 1 }, prefix)
    local worker = util.worker_command("spec/helpers/tiered_worker.lua")
    local function mark_written()
      util.writefile(sync .. "/written.tmp", string.format("%.6f", system.gettime()))
      assert(os.rename(sync .. "/written.tmp", sync .. "/written"))
    end

    -- the other process reads, this one writes
    assert.are.equal(true, c:put("k", "old"))
    local p = assert(io.popen(string.format("%s watch %d %s k old new %s", worker, server.port,
      util.q(prefix), util.q(sync))))
    local limit = system.gettime() + 10
    while not util.exists(sync .. "/ready") and system.gettime() < limit do system.sleep(0.002) end
    assert.is_true(util.exists(sync .. "/ready"), "the other process did not start")
    assert.are.equal(true, c:put("k", "new"))
    mark_written()
    local out = p:read("*a")
    p:close()
    local took = tonumber(out:match("^ok (%S+)"))
    assert.is_truthy(took, out)
    assert.is_true(took <= 1.0, "the other process saw the write after " .. tostring(took) .. " s")

    -- this process reads (its copy lives 1 s), the other writes
    os.remove(sync .. "/written")
    assert.are.equal("new", c:get("k"))
    assert.are.equal("new", c:store("memory"):get("k"))
    out = util.sh(string.format("%s put %d %s k newer", worker, server.port, util.q(prefix)))
    local written = tonumber(out:match("^ok (%S+)"))
    assert.is_truthy(written, out)
    assert.are.equal("new", c:get("k"))              -- the copy answers until it expires
    local seen
    while system.gettime() < written + 5 do
      if c:get("k") == "newer" then seen = system.gettime() break end
      system.sleep(0.001)
    end
    assert.is_truthy(seen, "never saw the other process's write")
    assert.is_true(seen - written <= 1.0, "saw the write after " .. (seen - written) .. " s")
  end)

  describe("config", function()
    local function refused(config, msg)
      local ok, err = pcall(cachy.new, config)
      assert.is_false(ok)
      assert.are.equal(msg, err)
    end

    it("checks the levels, max_stale and the serializers", function()
      local m = { driver = "memory" }
      refused({ stores = { t = { driver = "tiered" } } }, "cachy.new: store 't' field 'levels' is required")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m" } }, m = m } },
        "cachy.new: store 't' field 'levels' must name at least two stores")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "x" } }, m = m } },
        "cachy.new: store 't' field 'levels[2]' names store 'x', which is not defined")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "m" } }, m = m } },
        "cachy.new: store 't' field 'levels' names store 'm' twice")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "t" } }, m = m } },
        "cachy.new: store 't' field 'levels[2]' names a tiered store ('t')")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "n" }, prefix = "p:" }, m = m, n = m } },
        "cachy.new: store 't' field 'prefix': a tiered store has no prefix of its own (each level's applies)")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "n" }, max_stale = 0 }, m = m, n = m } },
        "cachy.new: store 't' field 'max_stale' must be a number of seconds above 0")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "n" }, max_stale = "1" }, m = m, n = m } },
        "cachy.new: store 't' field 'max_stale' must be a number, got string")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "n" } }, m = m,
                                           n = { driver = "memory", serializer = "json" } } },
        "cachy.new: store 't' level 'n' has serializer 'json', the tiered store 'msgpack': they must be the same")
      refused({ default = "t", stores = { t = { driver = "tiered", levels = { "m", "n" }, bogus = 1 }, m = m, n = m } },
        "cachy.new: store 't' has no field 'bogus'")
    end)

    it("shdict needs its zone's name, and outside nginx raises on first use, naming the zone", function()
      refused({ stores = { s = { driver = "shdict" } } }, "cachy.new: store 's' field 'dict' is required")
      refused({ stores = { s = { driver = "shdict", dict = 1 } } }, "cachy.new: store 's' field 'dict' must be a string, got number")
      local c = cachy.new({ stores = { s = { driver = "shdict", dict = "cachy" } } })
      assert.has_error(function() c:get("k") end,
        "store 's' (shdict cachy): lua_shared_dict zone 'cachy' can only be used inside nginx (ngx.shared is not available)")
    end)
  end)
end)
