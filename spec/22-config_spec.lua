-- spec/22-config_spec.lua: creating a manager (SPEC sections 1 and 2): the
-- config is validated whole in cachy.new, each mistake raising at the
-- caller's line with the store and field named; drivers resolve on a
-- store's first use, so extend may come after new.
local cachy = require("cachy")
local luastore = require("helpers.luastore")

local SRC = debug.getinfo(1, "S").short_src

-- cachy.new(config) raises msg at this file's line `line`.
local function raises_at(line, fn, msg)
  local ok, err = pcall(fn)
  assert.are.equal(false, ok)
  assert.are.equal(SRC .. ":" .. line .. ": cachy.new: " .. msg, err)
end

local function new_raises(config, msg)
  assert.has_error(function() cachy.new(config) end, "cachy.new: " .. msg)
end

local memory = { driver = "memory" }

describe("config", function()
  describe("errors", function()
    it("name an unknown top-level field at the caller's line", function()
      raises_at(debug.getinfo(1, "l").currentline, function() cachy.new({ defualt = "m", stores = { m = memory } }) end,
        "config has no field 'defualt'")
    end)

    it("name a top-level field of the wrong type", function()
      new_raises({ prefix = 1, stores = { m = memory } }, "config.prefix must be a string, got number")
      new_raises({ default = true, stores = { m = memory } }, "config.default must be a string, got boolean")
      new_raises({ serializer = {}, stores = { m = memory } }, "config.serializer must be a string, got table")
      new_raises({ minutes = "60", stores = { m = memory } }, "config.minutes must be a number, got string")
      new_raises({ on_error = "log", stores = { m = memory } }, "config.on_error must be a function, got string")
      new_raises({ stores = "memory" }, "config.stores must be a table, got string")
    end)

    it("name the store and field of a store field of the wrong type", function()
      new_raises({ stores = { main = { driver = "memory", max_items = "10" } } },
        "store 'main' field 'max_items' must be an integer, got string")
      new_raises({ stores = { main = { driver = "memory", max_bytes = 1.5 } } },
        "store 'main' field 'max_bytes' must be an integer, got number")
      new_raises({ stores = { main = { driver = "memory", prefix = 2 } } },
        "store 'main' field 'prefix' must be a string, got number")
      new_raises({ stores = { main = { driver = 7 } } },
        "store 'main' field 'driver' must be a string, got number")
    end)

    it("name an unknown field of a built-in driver's store", function()
      new_raises({ stores = { main = { driver = "memory", max_item = 10 } } },
        "store 'main' has no field 'max_item'")
      new_raises({ stores = { off = { driver = "null", host = "x" } } },
        "store 'off' has no field 'host'")
    end)

    it("name the redis store's fields", function()
      new_raises({ stores = { redis = { driver = "redis", port = "6379" } } },
        "store 'redis' field 'port' must be an integer, got string")
      new_raises({ stores = { redis = { driver = "redis", hots = "127.0.0.1" } } },
        "store 'redis' has no field 'hots'")
    end)

    it("check the redis store's nginx transport fields (SPEC section 11)", function()
      local function redis(fields)
        local store = { driver = "redis" }
        for k, v in pairs(fields) do store[k] = v end
        return { stores = { r = store } }
      end
      new_raises(redis({ transport = "fast" }),
        "store 'r' field 'transport' must be \"auto\", \"cosocket\" or \"blocking\", got \"fast\"")
      new_raises(redis({ transport = 1 }), "store 'r' field 'transport' must be a string, got number")
      new_raises(redis({ pool_size = 1.5 }), "store 'r' field 'pool_size' must be an integer, got number")
      new_raises(redis({ pool_size = 0 }), "store 'r' field 'pool_size' must be at least 1")
      new_raises(redis({ pool_backlog = -1 }), "store 'r' field 'pool_backlog' must not be negative")
      new_raises(redis({ keepalive = 0 }),
        "store 'r' field 'keepalive' must be a number of seconds above 0, at most 86400")
      new_raises({ stores = { m = { driver = "memory", transport = "auto" } } }, "store 'm' has no field 'transport'")
    end)

    it("accept, and outside nginx ignore, the redis store's nginx transport fields", function()
      for _, t in ipairs({ "auto", "cosocket", "blocking" }) do
        local cache = cachy.new({ stores = { r = { driver = "redis", port = 1, transport = t, pool_size = 8,
                                                   pool_backlog = 4, keepalive = 10 } } })
        local v, err, code = cache:get("k")
        assert.is_nil(v)
        assert.are.equal("store 'r' (redis 127.0.0.1:1): connection refused", err)
        assert.are.equal("refused", code)
      end
    end)

    it("require the file store's path", function()
      new_raises({ stores = { file = { driver = "file" } } },
        "store 'file' field 'path' is required")
    end)

    it("require a driver", function()
      new_raises({ stores = { x = {} } }, "store 'x' field 'driver' is required")
    end)

    it("require default when several stores are configured", function()
      new_raises({ stores = { a = memory, b = memory } },
        "config.default is required when several stores are configured")
    end)

    it("reject a default naming an undefined store", function()
      new_raises({ default = "x", stores = { a = memory } },
        "config.default names store 'x', which is not defined")
    end)

    it("reject an empty stores table", function()
      new_raises({ stores = {} }, "config.stores is empty")
    end)

    it("come from cachy.CacheManager too", function()
      assert.has_error(function() cachy.CacheManager({ stores = {} }) end, "cachy.new: config.stores is empty")
    end)
  end)

  describe("accepted", function()
    it("no config: one default store named memory", function()
      local cache = cachy.new()
      assert.are.equal(cache:store("memory"), cache:store())
      assert.are.equal(true, cache:put("k", 1))
      assert.are.equal(1, cache:store("memory"):get("k"))
      cache:close()
    end)

    it("one store without default", function()
      local cache = cachy.new({ stores = { only = memory } })
      assert.are.equal(cache:store("only"), cache:store())
      assert.are.equal(true, cache:put("k", 1))
      assert.are.equal(1, cache:store("only"):get("k"))
      cache:close()
    end)

    it("cachy.CacheManager is cachy.new", function()
      local cache = cachy.CacheManager({ stores = { only = memory } })
      assert.are.equal(true, cache:put("k", "v"))
      assert.are.equal("v", cache:get("k"))
      cache:close()
    end)

    it("every documented top-level field", function()
      local cache = cachy.new({
        default = "a",
        prefix = "app:",
        serializer = "msgpack",
        minutes = 30,
        on_error = function() end,
        stores = { a = { driver = "memory", max_items = 10, max_bytes = 1024 * 1024 }, b = { driver = "null" } },
      })
      assert.are.equal(true, cache:put("k", { 1 }))
      assert.are.same({ 1 }, cache:get("k"))
      cache:close()
    end)

    it("a per-store prefix and serializer", function()
      local backend = luastore.new()
      local cache = cachy.new({
        default = "a",
        prefix = "global:",
        stores = {
          a = { driver = "luatable", prefix = "own:", serializer = "msgpack" },
          b = { driver = "luatable" },
        },
      })
      cache:extend("luatable", backend:factory())
      assert.are.equal(true, cache:put("k", 1))
      assert.are.equal(true, cache:store("b"):put("k", 2))
      assert.are.same({ "global:k", "own:k" }, backend:keys())
      assert.are.equal(1, cache:get("k"))
      assert.are.equal(2, cache:store("b"):get("k"))
      cache:close()
    end)

    it("the stores of a manager are kept apart", function()
      local cache = cachy.new({ default = "a", stores = { a = memory, b = memory } })
      assert.are.equal(true, cache:put("k", "a"))
      assert.is_nil(cache:store("b"):get("k"))
      assert.are.equal(true, cache:store("b"):put("k", "b"))
      assert.are.equal("a", cache:store("a"):get("k"))
      assert.are.equal("b", cache:store("b"):get("k"))
      cache:close()
    end)

    it("the config table is not kept: changing it later changes nothing", function()
      local config = { prefix = "p:", stores = { main = { driver = "memory" } } }
      local cache = cachy.new(config)
      assert.are.equal(true, cache:put("k", 1))
      config.prefix = "q:"
      config.stores.main.driver = "null"
      assert.are.equal(1, cache:get("k"))
      cache:close()
    end)
  end)

  describe("drivers", function()
    it("an unknown driver raises on the store's first use, naming it", function()
      local cache = cachy.new({ stores = { main = { driver = "nope" } } })
      assert.has_error(function() cache:get("k") end, "cache driver 'nope' is not supported (store 'main')")
      assert.has_error(function() cache:put("k", 1) end, "cache driver 'nope' is not supported (store 'main')")
      cache:close()
    end)

    it("extend after new makes the driver work, and returns the manager", function()
      local backend = luastore.new()
      local cache = cachy.new({ stores = { main = { driver = "nope" } } })
      assert.has_error(function() cache:get("k") end, "cache driver 'nope' is not supported (store 'main')")
      assert.are.equal(cache, cache:extend("nope", backend:factory()))
      assert.are.equal(true, cache:put("k", 1))
      assert.are.equal(1, cache:get("k"))
      assert.are.same({ "k" }, backend:keys())
      cache:close()
    end)

    it("a registered driver's store takes any extra field", function()
      local backend = luastore.new()
      local cache = cachy.new({ stores = { main = { driver = "mine", url = "x://y", depth = 3 } } })
      cache:extend("mine", backend:factory())
      assert.are.equal(true, cache:put("k", 1))
      assert.are.equal("x://y", backend.configs[1].url)
      assert.are.equal(3, backend.configs[1].depth)
      cache:close()
    end)

    it("dict is the memory driver", function()
      local cache = cachy.new({ stores = { main = { driver = "dict", max_items = 2 } } })
      for i = 1, 3 do assert.are.equal(true, cache:put("k" .. i, i)) end
      assert.are.equal(2, cache:stats().items)
      cache:close()
    end)
  end)

  describe("store()", function()
    it("returns the same repository each time", function()
      local cache = cachy.new({ default = "a", stores = { a = memory, b = memory } })
      assert.are.equal(cache:store("a"), cache:store("a"))
      assert.are.equal(cache:store("b"), cache:store("b"))
      assert.are.equal(cache:store("a"), cache:store())
      assert.are_not.equal(cache:store("a"), cache:store("b"))
      cache:close()
    end)

    it("raises for an undefined store at the caller's line", function()
      local cache = cachy.new({ stores = { a = memory } })
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() cache:store("x") end)
      assert.are.equal(false, ok)
      assert.are.equal(SRC .. ":" .. line .. ": cache store 'x' is not defined", err)
      cache:close()
    end)
  end)
end)
