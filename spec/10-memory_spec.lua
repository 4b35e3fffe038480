-- spec/10-memory_spec.lua: the in-process memory store ("memory", and its
-- Cachy name "dict"): the shared behaviour suite, then what only this store
-- has: bounds on items and bytes with least-recently-used eviction, stats,
-- and the default manager of cachy.new().
local cachy = require("cachy")
local behaviour = require("behaviour")

behaviour("memory", { config = function() return { driver = "memory" } end })
behaviour("dict", { config = function() return { driver = "dict" } end })

local maxinteger = math.maxinteger

local function memory(fields)
  local store = { driver = "memory" }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ stores = { main = store } })
end

describe("memory store", function()
  describe("max_items", function()
    it("keeps at most max_items, evicting the oldest", function()
      local cache = memory({ max_items = 1000 })
      for i = 1, 100000 do
        assert(cache:put("k" .. i, i) == true)
      end
      local stats = cache:stats()
      assert.are.equal(1000, stats.items)
      for i = 99001, 100000 do
        assert.are.equal(i, cache:get("k" .. i))
      end
      for _, i in ipairs({ 1, 2, 500, 98000, 99000 }) do
        assert.are.equal(false, cache:has("k" .. i))
      end
      assert.are.equal(99000, cache:stats().evictions)
      cache:close()
    end)

    it("keeps a key touched by get while others are evicted", function()
      local cache = memory({ max_items = 100 })
      for i = 1, 100 do assert.are.equal(true, cache:put("k" .. i, i)) end
      assert.are.equal(1, cache:get("k1"))
      for i = 101, 150 do assert.are.equal(true, cache:put("k" .. i, i)) end
      assert.are.equal(100, cache:stats().items)
      assert.are.equal(1, cache:get("k1"))
      for i = 2, 51 do assert.is_nil(cache:get("k" .. i), "k" .. i) end
      for i = 52, 150 do assert.are.equal(i, cache:get("k" .. i)) end
      cache:close()
    end)

    it("does not count an overwrite as a new item", function()
      local cache = memory({ max_items = 10 })
      for i = 1, 10 do assert.are.equal(true, cache:put("k" .. i, i)) end
      for _ = 1, 5 do assert.are.equal(true, cache:put("k1", "again")) end
      assert.are.equal(10, cache:stats().items)
      for i = 2, 10 do assert.are.equal(i, cache:get("k" .. i)) end
      assert.are.equal(0, cache:stats().evictions)
      cache:close()
    end)
  end)

  describe("max_bytes", function()
    it("keeps the bytes under max_bytes, evicting the oldest", function()
      local limit = 64 * 1024
      local cache = memory({ max_bytes = limit })
      local value = string.rep("x", 100)
      for i = 1, 10000 do
        assert(cache:put("k" .. i, value) == true)
      end
      local stats = cache:stats()
      assert.is_true(stats.bytes <= limit, "bytes " .. stats.bytes)
      assert.is_true(stats.bytes >= limit / 2, "bytes " .. stats.bytes)
      assert.is_true(stats.items <= limit / 100, "items " .. stats.items)   -- each holds 100 bytes
      for i = 9901, 10000 do
        assert.are.equal(value, cache:get("k" .. i))
      end
      for _, i in ipairs({ 1, 2, 1000, 5000 }) do
        assert.are.equal(false, cache:has("k" .. i))
      end
      assert.are.equal(10000 - stats.items, stats.evictions)
      cache:close()
    end)

    it("keeps a key touched by get while others are evicted", function()
      local cache = memory({ max_bytes = 16 * 1024 })
      local value = string.rep("y", 200)
      for i = 1, 20 do assert.are.equal(true, cache:put("k" .. i, value)) end
      assert.are.equal(20, cache:stats().items)
      assert.are.equal(value, cache:get("k1"))
      for i = 21, 200 do
        assert.are.equal(true, cache:put("k" .. i, value))
        assert.are.equal(value, cache:get("k1"))
      end
      assert.are.equal(false, cache:has("k2"))
      assert.are.equal(value, cache:get("k200"))
      cache:close()
    end)
  end)

  describe("stats", function()
    it("counts items, bytes, hits, misses and evictions", function()
      local cache = memory({ max_items = 3 })
      local s = cache:stats()
      assert.are.same({ items = 0, bytes = 0, hits = 0, misses = 0, evictions = 0, writes = 0, errors = 0,
                        stale = 0, refreshes = 0, lock_waits = 0 }, s)
      assert.are.equal(true, cache:put("a", "1"))
      assert.are.equal(true, cache:put("b", string.rep("z", 1000)))
      assert.are.equal("1", cache:get("a"))
      assert.is_nil(cache:get("missing"))
      assert.is_nil(cache:get("missing"))
      s = cache:stats()
      assert.are.equal(2, s.items)
      assert.are.equal(2, s.writes)
      assert.are.equal(1, s.hits)
      assert.are.equal(2, s.misses)
      assert.are.equal(0, s.evictions)
      assert.is_true(s.bytes >= 1000 + 2, "bytes " .. s.bytes)
      assert.are.equal(true, cache:put("c", 3))
      assert.are.equal(true, cache:put("d", 4))
      s = cache:stats()
      assert.are.equal(3, s.items)
      assert.are.equal(1, s.evictions)
      assert.are.equal(true, cache:flush())
      s = cache:stats()
      assert.are.equal(0, s.items)
      assert.are.equal(0, s.bytes)
      cache:close()
    end)

    it("is the same on the repository and the manager", function()
      local cache = memory()
      assert.are.equal(true, cache:put("a", 1))
      assert.are.same(cache:stats(), cache:store("main"):stats())
      assert.are.equal(1, cache:store():stats().items)
      cache:close()
    end)
  end)

  describe("exact errors", function()
    it("names the key when incrementing a value that is not an integer", function()
      local cache = memory()
      assert.are.equal(true, cache:put("k", "abc"))
      local v, err = cache:increment("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (memory): value of key 'k' is not an integer", err)
      assert.are.equal("abc", cache:get("k"))
      cache:close()
    end)

    local overflow = maxinteger and it or function(title)
      pending(title .. ": without integers (Lua 5.1, 5.2, LuaJIT) numbers stop at 2^53, "
        .. "so no value or n reaches 64 bits")
    end
    overflow("names the key on overflow", function()
      local cache = memory()
      assert.are.equal(true, cache:put("k", maxinteger))
      local v, err = cache:increment("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (memory): increment of key 'k' overflows 64 bits", err)
      assert.are.equal(maxinteger, cache:get("k"))
      assert.are.equal(true, cache:put("k", math.mininteger))
      v, err = cache:decrement("k", 1)
      assert.is_nil(v)
      assert.are.equal("store 'main' (memory): decrement of key 'k' overflows 64 bits", err)
      assert.are.equal(math.mininteger, cache:get("k"))
      cache:close()
    end)

    it("names the driver as configured: dict", function()
      local cache = cachy.new({ stores = { main = { driver = "dict" } } })
      assert.are.equal(true, cache:put("k", "abc"))
      local _, err = cache:increment("k")
      assert.are.equal("store 'main' (dict): value of key 'k' is not an integer", err)
      cache:close()
    end)
  end)

  describe("without a prefix", function()
    it("flush empties the whole store", function()
      local cache = memory()
      assert.are.equal(true, cache:put_many({ a = 1, b = 2, ["x:y"] = 3 }))
      assert.are.equal(true, cache:flush())
      assert.are.equal(0, cache:stats().items)
      cache:close()
    end)
  end)

  describe("close", function()
    it("frees the items and leaves the manager usable", function()
      local cache = memory()
      assert.are.equal(true, cache:put("k", 1))
      cache:close()
      assert.is_nil(cache:get("k"))
      assert.are.equal(true, cache:put("k", 2))
      assert.are.equal(2, cache:get("k"))
      cache:close()
      cache:close()
    end)

    it("gives each manager its own memory store", function()
      local a, b = memory(), memory()
      assert.are.equal(true, a:put("k", "a"))
      assert.is_nil(b:get("k"))
      a:close()
      b:close()
    end)
  end)

  describe("lifetime", function()
    if _VERSION == "Lua 5.4" then
      it("closes a to-be-closed manager at the end of its block", function()
        local chunk = assert(load([[
          local cachy = ...
          local kept
          do
            local c <close> = cachy.new()
            assert(c:put("k", 1) == true)
            kept = c
          end
          return kept
        ]]))
        local cache = chunk(cachy)
        assert.is_nil(cache:get("k"))
        assert.are.equal(true, cache:put("k", 2))
        assert.are.equal(2, cache:get("k"))
        cache:close()
      end)
    else
      pending("closes a to-be-closed manager: <close> exists on Lua 5.4 only")
    end

    it("keeps the manager alive while a repository or a wrapper is reachable", function()
      local repo = cachy.new({ stores = { main = { driver = "memory" } } }):store("main")
      local calls = 0
      local wrapper = cachy.new()(function(x)
        calls = calls + 1
        return x
      end)
      collectgarbage("collect")
      collectgarbage("collect")
      assert.are.equal(true, repo:put("k", "v"))
      assert.are.equal("v", repo:get("k"))
      assert.are.equal(1, wrapper(1))
      assert.are.equal(1, wrapper(1))
      assert.are.equal(1, calls)
    end)

    it("frees managers that are no longer reachable", function()
      for i = 1, 200 do
        local c = cachy.new()
        assert.are.equal(true, c:put("k", string.rep("x", 1000) .. i))
        c:store("memory")
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local c = cachy.new()
      assert.are.equal(true, c:put("k", 1))
      assert.are.equal(1, c:get("k"))
    end)
  end)

  describe("cachy.new()", function()
    it("has one default store named memory", function()
      local cache = cachy.new()
      assert.are.equal(cache:store(), cache:store("memory"))
      assert.are.equal(true, cache:put("k", { 1, "x" }))
      assert.are.same({ 1, "x" }, cache:store("memory"):get("k"))
      assert.are.equal(1, cache:stats().items)
      assert.has_error(function() cache:store("main") end, "cache store 'main' is not defined")
      cache:close()
    end)
  end)
end)
