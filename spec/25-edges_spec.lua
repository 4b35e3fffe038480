-- spec/25-edges_spec.lua: edges of the contract on both paths a repository
-- can take (C fast path: redis; Lua path: a store written in Lua): bytes
-- another client wrote that cannot be decoded, counters at the ends of
-- the 64-bit range, and config strings the C drivers cannot carry.
local cachy = require("cachy")
local util = require("helpers.util")
local servers = require("helpers.servers")
local luastore = require("helpers.luastore")

local pack = util.pack

describe("edges", function()
  local server

  lazy_setup(function() server = servers.start("redis") end)
  lazy_teardown(function() if server then server:stop() end end)

  -- Each target: a manager, and a function writing raw bytes under a key.
  local targets = {
    { label = "redis (C path)", make = function()
      local c = cachy.new({ prefix = "e:", stores = { main = { driver = "redis", port = server.port } } })
      return c, function(key, bytes)
        util.sh(string.format("redis-cli -p %d SET %s %s", server.port, util.q("e:" .. key), util.q(bytes)))
      end
    end },
    { label = "a Lua store (Lua path)", make = function()
      local backend = luastore.new()
      local c = cachy.new({ prefix = "e:", stores = { main = { driver = "luatable" } } })
      c:extend("luatable", backend:factory())
      return c, function(key, bytes) backend.data["e:" .. key] = bytes end
    end },
  }

  for _, t in ipairs(targets) do
    describe("on " .. t.label, function()
      local cache, raw

      before_each(function()
        cache, raw = t.make()
        assert.are.equal(true, cache:flush())
      end)

      after_each(function() cache:close() end)

      local function assert_corrupt(r)
        assert.are.equal(3, r.n)
        assert.is_nil(r[1])
        assert.is_truthy(r[2]:match("^store 'main' %(.-%): value of key 'fk' cannot be decoded: "), r[2])
        assert.are.equal("corrupt", r[3])
      end

      it("answers has, get with a default and pull with nil, err for bytes it cannot decode", function()
        raw("fk", "hello")      -- 'h' is a MessagePack integer, the rest trailing bytes
        assert_corrupt(pack(cache:get("fk")))
        assert_corrupt(pack(cache:get("fk", "default")))
        assert_corrupt(pack(cache:get("fk", function() return "default" end)))
        assert_corrupt(pack(cache:has("fk")))
        assert_corrupt(pack(cache:pull("fk")))
        assert_corrupt(pack(cache:many({ "fk" })))
      end)

      if math.mininteger then
        it("names the store and the verb when a decrement overflows", function()
          local r = pack(cache:decrement("n", math.mininteger))
          assert.are.equal(3, r.n)
          assert.is_truthy(r[2]:match("^store 'main' %(.-%): decrement of key 'n' overflows 64 bits$"), r[2])
          assert.are.equal("overflow", r[3])
          assert.are.equal(true, cache:put("low", math.mininteger))
          r = pack(cache:decrement("low"))
          assert.is_nil(r[1])
          if t.label:match("^redis") then
            assert.are.equal("store 'main' (redis 127.0.0.1:" .. server.port
              .. "): decrement of key 'low' overflows 64 bits", r[2])
            assert.are.equal("overflow", r[3])
          end
          assert.are.equal(math.mininteger, cache:get("low"))
        end)
      end
    end)
  end

  describe("config", function()
    local function refuses(config, msg)
      local ok, err = pcall(cachy.new, config)
      assert.are.equal(false, ok)
      assert.are.equal("cachy.new: " .. msg, (err:gsub("^.-:%d+: ", "", 1)))
    end

    it("refuses NUL bytes in the prefix and in strings the C drivers read", function()
      refuses({ prefix = "tenant\0A", stores = { m = { driver = "memory" } } },
        "config.prefix must not contain a NUL byte")
      refuses({ stores = { m = { driver = "memory", prefix = "a\0b" } } },
        "store 'm' field 'prefix' must not contain a NUL byte")
      refuses({ stores = { r = { driver = "redis", host = "127.0.0.1\0evil" } } },
        "store 'r' field 'host' must not contain a NUL byte")
      refuses({ stores = { f = { driver = "file", path = "/tmp/x\0y" } } },
        "store 'f' field 'path' must not contain a NUL byte")
      refuses({ stores = { mc = { driver = "memcached", servers = { "127.0.0.1:1", "a\0b:2" } } } },
        "store 'mc' field 'servers[2]' must not contain a NUL byte")
      -- a store written in Lua gets its own fields as they are
      local c = cachy.new({ stores = { l = { driver = "mine", secret = "a\0b" } } })
      c:extend("mine", function(config)
        assert.are.equal("a\0b", config.secret)
        return luastore.new():factory()(config)
      end)
      assert.are.equal(true, c:put("k", 1))
    end)

    it("refuses NaN minutes", function()
      refuses({ minutes = 0 / 0, stores = { m = { driver = "memory" } } }, "config.minutes must not be NaN")
    end)
  end)
end)
