-- spec/12-luastore_spec.lua: stores written in Lua and plugged in with
-- cache:extend (SPEC section 8): the shared behaviour suite with and
-- without the optional many/put_many, then what a Lua store lets us see:
-- the bytes it is given, how failures and undecodable data are reported,
-- and that remember and the decorator fail open.
local cachy = require("cachy")
local util = require("helpers.util")
local pack, counted = util.pack, util.counted
local behaviour = require("behaviour")
local luastore = require("helpers.luastore")

local math_type = math.type

for _, variant in ipairs({
  { label = "lua", optional = true },
  { label = "lua without many/put_many", optional = false },
}) do
  local backend = luastore.new({ optional = variant.optional })
  behaviour(variant.label, {
    config = function() return { driver = "luatable" } end,
    setup = function(manager) manager:extend("luatable", backend:factory()) end,
    -- A store written in Lua words its own failures (it sees prefixed keys).
    store_messages = true,
  })
end

-- A manager on one luatable store named main, without a prefix unless given.
local function manager(backend, extra)
  local config = { stores = { main = { driver = "luatable" } } }
  for k, v in pairs(extra or {}) do config[k] = v end
  local cache = cachy.new(config)
  assert.are.equal(cache, cache:extend("luatable", backend:factory()))
  return cache
end

describe("lua store", function()
  local backend, cache

  before_each(function()
    backend = luastore.new()
    cache = manager(backend, { prefix = "app:" })
  end)

  after_each(function()
    cache:close()
  end)

  describe("factory", function()
    it("is called on first use, once, with the store's config", function()
      local b = luastore.new()
      local c = cachy.new({ stores = { main = { driver = "luatable", answer = 42, name = "x" } } })
      c:extend("luatable", b:factory())
      assert.are.equal(0, #b.configs)
      assert.are.equal(true, c:put("k", 1))
      assert.are.equal(1, c:get("k"))
      assert.are.equal(1, #b.configs)
      assert.are.equal("luatable", b.configs[1].driver)
      assert.are.equal(42, b.configs[1].answer)
      assert.are.equal("x", b.configs[1].name)
      c:close()
    end)

    it("gives the store prefixed keys, bytes and seconds", function()
      assert.are.equal(true, cache:put("k", "v", 0.5))
      assert.are.same({ "app:k" }, backend:keys())
      assert.are.equal("string", type(backend.data["app:k"]))
      local left = backend.expires["app:k"] - require("system").monotime()
      assert.is_true(left > 29 and left <= 30, "seconds left: " .. left)
      assert.are.equal(true, cache:forever("f", 1))
      assert.is_nil(backend.expires["app:f"])
    end)

    it("passes the prefix to flush so only this manager's keys go", function()
      assert.are.equal(true, cache:put("k", 1))
      backend.data["other:k"] = "1"
      assert.are.equal(true, cache:flush())
      assert.are.same({ "other:k" }, backend:keys())
      assert.are.same({ "app:" }, backend.flush_args)
    end)
  end)

  describe("optional methods", function()
    it("uses many and put_many when the store has them", function()
      assert.are.equal(true, cache:put_many({ a = 1, b = 2, c = 3 }))
      assert.are.same({ put_many = 1 }, backend.calls)
      backend:reset_calls()
      assert.are.same({ a = 1, c = 3 }, cache:many({ "a", "c", "missing" }))
      assert.are.same({ many = 1 }, backend.calls)
    end)

    it("falls back to single calls without them", function()
      local b = luastore.new({ optional = false })
      local c = manager(b, { prefix = "app:" })
      assert.are.equal(true, c:put_many({ a = 1, b = 2, c = 3 }))
      assert.are.same({ put = 3 }, b.calls)
      b:reset_calls()
      assert.are.same({ a = 1, c = 3 }, c:many({ "a", "c", "missing" }))
      assert.are.same({ get = 3 }, b.calls)
      c:close()
    end)
  end)

  describe("top-level integers", function()
    it("are stored as decimal text", function()
      assert.are.equal(true, cache:put("n", 10))
      assert.are.equal("10", backend.data["app:n"])
      assert.are.equal(true, cache:put("neg", -3))
      assert.are.equal("-3", backend.data["app:neg"])
      assert.are.equal(true, cache:put("big", 2 ^ 53))
      if math_type then
        assert.are_not.equal("9007199254740992", backend.data["app:big"])   -- a float on 5.3+
      else
        assert.are.equal("9007199254740992", backend.data["app:big"])
      end
      assert.are.equal(11, cache:increment("n"))
      assert.are.equal("11", backend.data["app:n"])
    end)

    it("are read back from decimal text written by another client", function()
      backend.data["app:raw"] = "10"
      local v = cache:get("raw")
      assert.are.equal(10, v)
      if math_type then assert.are.equal("integer", math_type(v)) end
      assert.are.equal(11, cache:increment("raw"))
      assert.are.equal(11, cache:get("raw"))
      backend.data["app:neg"] = "-42"
      assert.are.equal(-42, cache:get("neg"))
    end)

    it("do not include floats, strings of digits or tables", function()
      assert.are.equal(true, cache:put("s", "10"))
      assert.are_not.equal("10", backend.data["app:s"])
      assert.are.equal("10", cache:get("s"))
      assert.are.equal(true, cache:put("f", 1.5))
      assert.are_not.equal("1.5", backend.data["app:f"])
      assert.are.equal(true, cache:put("t", { 10 }))
      assert.are_not.equal("10", backend.data["app:t"])
      if math_type then
        assert.are.equal(true, cache:put("ff", 10.0))
        assert.are_not.equal("10", backend.data["app:ff"])
        assert.are.equal("float", math_type(cache:get("ff")))
      end
    end)
  end)

  describe("data this library did not write", function()
    local garbage = {
      ["a never-used MessagePack byte"] = "\193",
      ["a truncated array"] = "\146\1",
      ["a truncated string"] = "\165ab",
      ["text with trailing bytes"] = "hello",
      ["an empty string"] = "",
    }
    for what, bytes in pairs(garbage) do
      it("gives nil, err naming the key for " .. what, function()
        local c = manager(backend)
        backend.data["g"] = bytes
        local r = pack(c:get("g"))
        assert.are.equal(3, r.n)
        assert.are.equal("corrupt", r[3])
        assert.is_nil(r[1])
        assert.is_string(r[2])
        local head = "store 'main' (luatable): value of key 'g' cannot be decoded: "
        assert.are.equal(head, r[2]:sub(1, #head))
        assert.is_true(#r[2] > #head, r[2])
        r = pack(c:pull("g"))
        assert.is_nil(r[1])
        assert.are.equal(head, r[2]:sub(1, #head))
        c:close()
      end)
    end
  end)

  describe("default on_error", function()
    it("writes one line per store to stderr, at most once a second", function()
      local stderr = util.run_script([[
        package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
        package.preload["cachy.core"] = package.loadlib(arg[1], "luaopen_cachy_core")
        local cachy = require("cachy")
        local backend = require("helpers.luastore").new()
        backend.fail = "return"
        local cache = cachy.new({ default = "a", stores = { a = { driver = "luatable" }, b = { driver = "luatable" } } })
        cache:extend("luatable", backend:factory())
        local wa = cache(function(x) return x end, { key = "a" })
        local wb = cache("b", function(x) return x end, { key = "b" })
        for i = 1, 5 do
          assert(wa(i) == i)
          assert(wb(i) == i)
        end
        io.stdout:write("done")
      ]], "2>&1 >/dev/null")
      assert.are.equal("cachy: store 'a' (luatable): backend down\n"
        .. "cachy: store 'b' (luatable): backend down\n", stderr)
    end)
  end)

  for _, mode in ipairs({ "return", "raise" }) do
    describe("failing by " .. (mode == "return" and "returning nil, err" or "raising"), function()
      local c, errors
      local function cause_pattern()
        if mode == "return" then return "backend down" end
        return "[^:]*luastore%.lua:%d+: backend down"
      end

      local function assert_failure(...)
        local r = pack(...)
        assert.are.equal(3, r.n)
        assert.are.equal("backend", r[3])
        assert.is_nil(r[1])
        assert.is_string(r[2])
        assert.is_truthy(r[2]:match("^store 'main' %(luatable%): " .. cause_pattern() .. "$"), r[2])
        return r[2]
      end

      before_each(function()
        errors = {}
        c = manager(backend, {
          on_error = function(err, store_name)
            errors[#errors + 1] = { err, store_name }
          end,
        })
        assert.are.equal(true, c:put("k", "v"))
        backend.fail = mode
      end)

      after_each(function()
        c:close()
      end)

      it("makes every method return nil, err naming the store", function()
        local d = counted(function() return "default" end)
        assert_failure(c:get("k"))
        assert_failure(c:get("k", "default"))
        assert_failure(c:get("k", d.fn))
        assert.are.equal(0, d.calls)
        assert_failure(c:many({ "k", "j" }))
        assert_failure(c:has("k"))
        assert_failure(c:put("k", 1))
        assert_failure(c:put_many({ a = 1 }))
        assert_failure(c:add("new", 1))
        assert_failure(c:forever("k", 1))
        assert_failure(c:pull("k"))
        assert_failure(c:pull("k", d.fn))
        assert.are.equal(0, d.calls)
        assert_failure(c:forget("k"))
        assert_failure(c:increment("k"))
        assert_failure(c:decrement("k", 2))
        assert_failure(c:flush())
        assert_failure(c:store("main"):get("k"))
      end)

      it("makes remember fail open: the function's value and err", function()
        local f = counted(function() return "fresh" end)
        local r = pack(c:remember("r", 10, f.fn))
        assert.are.equal(2, r.n)
        assert.are.equal("fresh", r[1])
        assert.is_truthy(r[2]:match("^store 'main' %(luatable%): " .. cause_pattern() .. "$"), r[2])
        r = pack(c:remember_forever("r", f.fn))
        assert.are.equal("fresh", r[1])
        assert.is_string(r[2])
        assert.are.equal(2, f.calls)
      end)

      it("makes the decorator fail open and report through on_error", function()
        local f = counted(function(x) return x * 2, nil, "third" end)
        local w = c(f.fn, { key = "dec" })
        assert.are.same({ n = 3, 4, nil, "third" }, pack(w(2)))
        assert.are.same({ n = 3, 4, nil, "third" }, pack(w(2)))
        assert.are.equal(2, f.calls)
        assert.is_true(#errors >= 2 and #errors <= 4, #errors .. " reports")
        for _, e in ipairs(errors) do
          assert.are.equal("main", e[2])
          assert.is_truthy(e[1]:match("^store 'main' %(luatable%): " .. cause_pattern() .. "$"), e[1])
        end
      end)

      it("recovers when the store works again", function()
        assert_failure(c:get("k"))
        backend.fail = nil
        assert.are.equal("v", c:get("k"))
        assert.are.equal(true, c:put("k", "w"))
        assert.are.equal("w", c:get("k"))
        local f = counted(function() return "x" end)
        local w = c(f.fn, { key = "rec" })
        assert.are.equal("x", w())
        assert.are.equal("x", w())
        assert.are.equal(1, f.calls)
        assert.are.same({}, errors)
      end)
    end)
  end
end)
