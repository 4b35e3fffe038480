-- spec/behaviour.lua: the behaviour every store must show (SPEC sections
-- 3 to 5), as one suite that each store's spec runs:
--
--   require("behaviour")("memory", {
--     config = function() return { driver = "memory" } end,
--     exceptions = { flush_scoped = "why this store cannot do it" },  -- optional
--     manager_config = { on_error = ... },                              -- optional
--     setup = function(manager) manager:extend(...) end,                -- optional
--     expiry_wait = 1.5,   -- optional: seconds after which a 1.2 s entry is gone
--     store_messages = true,  -- optional: a store written in Lua, whose own
--                             -- failure messages are passed on as they are
--   })
--
-- Every case has a name; a store skips a case only by naming it in
-- `exceptions` with the reason, which busted lists as pending.
local busted = require("busted")
local assert = require("luassert")
local system = require("system")
local cachy = require("cachy")
local util = require("helpers.util")
local pack, counted, strict_diff, assert_strict = util.pack, util.counted, util.strict_diff, util.assert_strict

local describe, it, pending = busted.describe, busted.it, busted.pending
local before_each, after_each = busted.before_each, busted.after_each

local unpack = table.unpack or unpack
local math_type = math.type          -- nil on Lua 5.1, 5.2 and LuaJIT: no integer subtype there
local maxinteger, mininteger = math.maxinteger, math.mininteger

local function sleep(seconds)
  system.sleep(seconds)
end

-- err is a backend failure of store 'main' whose cause matches tail_pattern.
local function assert_store_err(err, tail_pattern)
  assert.is_string(err)
  assert.is_truthy(err:match("^store 'main' %(.-%): " .. tail_pattern .. "$"),
    "unexpected error: " .. tostring(err))
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

local run_id = 0

return function(label, opts)
  local exceptions = opts.exceptions or {}
  local known = {}
  local expiry_wait = opts.expiry_wait or 1.5

  describe(label .. " store", function()
    local cache, prefix
    local managers = {}

    run_id = run_id + 1
    local base = string.format("cachy-spec-%d-%s-%d", os.time(), label, run_id)

    -- A manager on this store; extra: config fields merged in.
    local function new_manager(pfx, extra)
      local config = { default = "main", prefix = pfx, stores = { main = opts.config() } }
      for k, v in pairs(opts.manager_config or {}) do config[k] = v end
      for k, v in pairs(extra or {}) do config[k] = v end
      local m = cachy.new(config)
      if opts.setup then opts.setup(m) end
      managers[#managers + 1] = m
      return m
    end

    before_each(function()
      prefix = base .. ":a:"
      cache = new_manager(prefix)
      assert.are.equal(true, cache:flush())
    end)

    after_each(function()
      util.close_managers(managers)
    end)

    local function case(name, title, fn)
      assert(not known[name], "case defined twice: " .. name)
      known[name] = true
      if exceptions[name] then
        pending(title .. " [" .. name .. "]: " .. exceptions[name])
      else
        it(title, fn)
      end
    end

    -- Stores value under key, reads it back twice, checks both are fresh
    -- strict copies of value.
    local function round_trip(key, value)
      assert.are.equal(true, cache:put(key, value))
      local got = cache:get(key)
      assert_strict(value, got)
      if type(value) == "table" then
        local again = cache:get(key)
        assert.are_not.equal(value, got)       -- not the table given to put
        assert.are_not.equal(got, again)       -- a fresh copy on every read
        assert_strict(value, again)
      end
    end

    ------------------------------------------------------------------ get

    describe("get", function()
      case("get_miss", "returns nil or the default on a miss", function()
        assert.is_nil(cache:get("missing"))
        assert.are.equal("d", cache:get("missing", "d"))
        assert.are.equal(false, cache:get("missing", false))
        assert.are.equal(0, cache:get("missing", 0))
      end)

      case("get_default_fn", "calls a function default only on a miss, with no arguments, and does not store its result", function()
        local nargs
        local d = counted(function(...)
          nargs = select("#", ...)
          return "computed"
        end)
        assert.are.equal("computed", cache:get("k", d.fn))
        assert.are.equal(1, d.calls)
        assert.are.equal(0, nargs)
        assert.are.equal(false, cache:has("k"))
        assert.are.equal(true, cache:put("k", "stored"))
        assert.are.equal("stored", cache:get("k", d.fn))
        assert.are.equal(1, d.calls)
      end)

      case("get_false", "returns a stored false, not the default", function()
        local d = counted(function() return "default" end)
        assert.are.equal(true, cache:put("f", false))
        assert.are.equal(false, cache:get("f"))
        assert.are.equal(false, cache:get("f", "default"))
        assert.are.equal(false, cache:get("f", d.fn))
        assert.are.equal(0, d.calls)
      end)

      case("repository", "the repository and the manager act on the same store", function()
        local repo = cache:store("main")
        assert.are.equal(repo, cache:store())
        assert.are.equal(repo, cache:store("main"))
        assert.are.equal(true, cache:put("shared", 1))
        assert.are.equal(1, repo:get("shared"))
        assert.are.equal(true, repo:put("shared", 2))
        assert.are.equal(2, cache:get("shared"))
        assert.are.equal(true, repo:forget("shared"))
        assert.are.equal(false, cache:has("shared"))
      end)
    end)

    ------------------------------------------------------------------ many, has

    describe("many", function()
      case("many", "returns the values of the keys found, missing ones absent", function()
        assert.are.equal(true, cache:put("a", 1))
        assert.are.equal(true, cache:put("b", { x = "y" }))
        assert.are.equal(true, cache:put("c", false))
        local got = cache:many({ "a", "b", "c", "missing" })
        assert_strict({ a = 1, b = { x = "y" }, c = false }, got)
        assert_strict({}, cache:many({}))
        assert_strict({}, cache:many({ "missing", "other" }))
      end)

      case("many_number_keys", "indexes the result by the keys as given", function()
        assert.are.equal(true, cache:put(42, "n"))
        assert.are.equal(true, cache:put("s", "str"))
        assert_strict({ [42] = "n", ["42"] = "n", s = "str" }, cache:many({ 42, "42", "s", 7 }))
      end)

      case("many_repeated_keys", "answers a key asked several times, between misses", function()
        assert.are.equal(true, cache:put("a", 1))
        assert.are.equal(true, cache:put("b", "two"))
        assert_strict({ a = 1, b = "two" },
          cache:many({ "gone", "a", "gone", "b", "a", "other", "a", "b" }))
        assert_strict({ a = 1 }, cache:many({ "a", "a", "a" }))
      end)
    end)

    describe("has", function()
      case("has", "is true for a stored value, a stored false included", function()
        assert.are.equal(false, cache:has("k"))
        assert.are.equal(true, cache:put("k", 0))
        assert.are.equal(true, cache:has("k"))
        assert.are.equal(true, cache:put("f", false))
        assert.are.equal(true, cache:has("f"))
      end)
    end)

    ------------------------------------------------------------------ writes

    describe("put", function()
      case("put", "stores, returns true and overwrites", function()
        assert.are.equal(true, cache:put("k", "v1"))
        assert.are.equal("v1", cache:get("k"))
        assert.are.equal(true, cache:put("k", "v2", 10))
        assert.are.equal("v2", cache:get("k"))
        assert.are.equal(true, cache:put("k", 3))
        assert.are.equal(3, cache:get("k"))
      end)

      case("put_many", "stores every pair and returns true", function()
        assert.are.equal(true, cache:put_many({ a = 1, b = "two", c = { 3 }, d = false }))
        assert.are.equal(true, cache:put_many({ e = 5 }, 10))
        assert_strict({ a = 1, b = "two", c = { 3 }, d = false, e = 5 },
          cache:many({ "a", "b", "c", "d", "e" }))
      end)

      case("put_many_number_keys", "stores number keys under their tostring", function()
        assert.are.equal(true, cache:put_many({ "first", "second" }))
        assert.are.equal("first", cache:get(1))
        assert.are.equal("second", cache:get("2"))
      end)

      case("add", "stores only when absent", function()
        assert.are.equal(true, cache:add("k", "first"))
        assert.are.equal(false, cache:add("k", "second"))
        assert.are.equal("first", cache:get("k"))
        assert.are.equal(true, cache:put("f", false))
        assert.are.equal(false, cache:add("f", "x", 10))     -- a stored false is present
        assert.are.equal(false, cache:get("f"))
        assert.are.equal(false, cache:add("zero", "x", 0))
        assert.are.equal(false, cache:has("zero"))
      end)

      case("forever", "stores without expiry and returns true", function()
        assert.are.equal(true, cache:forever("k", { 1, 2 }))
        assert_strict({ 1, 2 }, cache:get("k"))
      end)
    end)

    ------------------------------------------------------------------ remember

    describe("remember", function()
      case("remember_hit", "calls the function on a miss only", function()
        local f = counted(function() return { answer = 42 } end)
        assert_strict({ answer = 42 }, cache:remember("r", 10, f.fn))
        assert_strict({ answer = 42 }, cache:remember("r", 10, f.fn))
        assert.are.equal(1, f.calls)
        assert_strict({ answer = 42 }, cache:get("r"))
      end)

      case("remember_false", "treats a stored false as a hit", function()
        local f = counted(function() return "computed" end)
        assert.are.equal(true, cache:put("f", false))
        assert.are.equal(false, cache:remember("f", 10, f.fn))
        assert.are.equal(0, f.calls)
      end)

      case("remember_nil_err", "stores nothing and returns nil, err when the function fails", function()
        local f = counted(function() return nil, "db down" end)
        local r = pack(cache:remember("r", 10, f.fn))
        assert.are.same({ n = 2, nil, "db down" }, r)
        assert.are.equal(false, cache:has("r"))
        r = pack(cache:remember("r", 10, f.fn))
        assert.are.same({ n = 2, nil, "db down" }, r)
        assert.are.equal(2, f.calls)
      end)

      case("remember_error", "lets an error of the function through and stores nothing", function()
        local e = { code = 1 }
        local ok, err = pcall(function() cache:remember("r", 10, function() error(e) end) end)
        assert.are.equal(false, ok)
        assert.are.equal(e, err)
        assert.are.equal(false, cache:has("r"))
        local f = counted(function() return "later" end)
        assert.are.equal("later", cache:remember("r", 10, f.fn))
        assert.are.equal(1, f.calls)
      end)

      case("remember_nil", "stores nothing when the function returns nil", function()
        local f = counted(function() return nil end)
        assert.is_nil(cache:remember("r", 10, f.fn))
        assert.are.equal(false, cache:has("r"))
        assert.is_nil(cache:remember("r", 10, f.fn))
        assert.are.equal(2, f.calls)
      end)

      case("remember_forever", "accepts (key, fn) and (key, ttl, fn)", function()
        local f = counted(function() return "v" end)
        assert.are.equal("v", cache:remember_forever("a", f.fn))
        assert.are.equal("v", cache:remember_forever("a", f.fn))
        assert.are.equal("v", cache:remember_forever("b", 10, f.fn))
        assert.are.equal("v", cache:remember_forever("b", 10, f.fn))
        assert.are.equal(2, f.calls)
        assert.are.equal("v", cache:get("a"))
        assert.are.equal("v", cache:get("b"))
      end)
    end)

    ------------------------------------------------------------------ pull, forget

    describe("pull and forget", function()
      case("pull", "returns the value and removes it", function()
        assert.are.equal(true, cache:put("k", { 1 }))
        assert_strict({ 1 }, cache:pull("k"))
        assert.are.equal(false, cache:has("k"))
        assert.is_nil(cache:pull("k"))
        assert.are.equal("d", cache:pull("k", "d"))
        local d = counted(function() return "computed" end)
        assert.are.equal("computed", cache:pull("k", d.fn))
        assert.are.equal(1, d.calls)
        assert.are.equal(true, cache:put("f", false))
        assert.are.equal(false, cache:pull("f", "d"))
        assert.are.equal(false, cache:has("f"))
      end)

      case("forget", "returns true when something was removed", function()
        assert.are.equal(true, cache:put("k", 1))
        assert.are.equal(true, cache:forget("k"))
        assert.are.equal(false, cache:forget("k"))
        assert.is_nil(cache:get("k"))
        assert.are.equal(false, cache:forget("never"))
      end)
    end)

    ------------------------------------------------------------------ increment

    describe("increment and decrement", function()
      case("incr", "counts from 0 by 1 or n, below zero too", function()
        assert.are.equal(1, cache:increment("c"))
        assert.are.equal(2, cache:increment("c"))
        assert.are.equal(7, cache:increment("c", 5))
        assert.are.equal(6, cache:decrement("c"))
        assert.are.equal(-4, cache:decrement("c", 10))
        assert.are.equal(-6, cache:increment("c", -2))
        assert.are.equal(-6, cache:increment("c", 0))
        assert_strict(-6, cache:get("c"))
        assert.are.equal(-1, cache:decrement("d"))
      end)

      case("incr_put_integer", "increments an integer stored with put", function()
        assert.are.equal(true, cache:put("n", 10))
        assert.are.equal(11, cache:increment("n"))
        assert_strict(11, cache:get("n"))
        assert.are.equal(true, cache:put("m", -3))
        assert.are.equal(-5, cache:decrement("m", 2))
        assert_strict(-5, cache:get("m"))
      end)

      case("incr_not_integer", "gives nil, err naming the key for a value that is not an integer, and keeps it", function()
        local values = { "abc", "10", 1.5, { 1 }, true }
        for i, v in ipairs(values) do
          local key = "v" .. i
          assert.are.equal(true, cache:put(key, v))
          for _, method in ipairs({ "increment", "decrement" }) do
            local r = pack(cache[method](cache, key))
            assert.are.equal(3, r.n)
            assert.is_nil(r[1])
            if opts.store_messages then
              assert_store_err(r[2], "value of key '.*" .. key .. "' is not an integer")
              assert.are.equal("backend", r[3])
            else
              assert_store_err(r[2], "value of key '" .. key .. "' is not an integer")
              assert.are.equal("not_integer", r[3])
            end
          end
          assert_strict(v, cache:get(key))
        end
      end)

      if maxinteger then
        case("incr_overflow", "gives nil, err on 64-bit overflow and keeps the value", function()
          assert.are.equal(true, cache:put("max", maxinteger))
          local v, err = cache:increment("max")
          assert.is_nil(v)
          assert_store_err(err, "increment of key '.*max' overflows 64 bits")
          assert_strict(maxinteger, cache:get("max"))
          assert.are.equal(true, cache:put("min", mininteger))
          v, err = cache:decrement("min")
          assert.is_nil(v)
          -- (a store written in Lua words it its own way)
          assert_store_err(err, (opts.store_messages and "increment" or "decrement") .. " of key '.*min' overflows 64 bits")
          assert_strict(mininteger, cache:get("min"))
          local half = math.tointeger(2 ^ 62)
          assert.are.equal(true, cache:put("half", half))
          v, err = cache:increment("half", half)
          assert.is_nil(v)
          assert_store_err(err, "increment of key '.*half' overflows 64 bits")
          assert_strict(half, cache:get("half"))
          assert.are.equal(maxinteger, cache:increment("half", half - 1))
        end)
      else
        known.incr_overflow = true
        pending("gives nil, err on 64-bit overflow [incr_overflow]: without integers (Lua 5.1, 5.2, "
          .. "LuaJIT) numbers stop at 2^53, so no value or n reaches 64 bits")
      end

      case("incr_n_not_integer", "raises when n is not an integer", function()
        assert.has_error(function() cache:increment("k", 1.5) end,
          "bad argument #2 to 'increment' (n must be an integer)")
        assert.has_error(function() cache:decrement("k", 0.5) end,
          "bad argument #2 to 'decrement' (n must be an integer)")
        assert.are.equal(false, cache:has("k"))
      end)
    end)

    ------------------------------------------------------------------ flush

    describe("flush", function()
      case("flush", "removes every item and returns true", function()
        assert.are.equal(true, cache:put_many({ a = 1, b = 2 }))
        assert.are.equal(true, cache:forever("c", 3))
        assert.are.equal(true, cache:flush())
        assert_strict({}, cache:many({ "a", "b", "c" }))
        assert.are.equal(true, cache:put("a", 4))
        assert.are.equal(4, cache:get("a"))
      end)

      case("flush_scoped", "removes only the keys under this manager's prefix", function()
        local other = new_manager(base .. ":b:")
        assert.are.equal(true, other:put("k", "other"))
        assert.are.equal(true, cache:put("k", "ours"))
        assert.are.equal(true, cache:flush())
        assert.are.equal(false, cache:has("k"))
        assert.are.equal("other", other:get("k"))
        assert.are.equal(true, other:flush())
      end)
    end)

    ------------------------------------------------------------------ TTL forms

    describe("ttl", function()
      case("ttl_remove", "0, below 0 or a past date store nothing and remove the key", function()
        local past = os.date("*t", os.time() - 3600)
        for _, ttl in ipairs({ 0, -1, -0.5, past }) do
          assert.are.equal(true, cache:put("k", "v"))
          assert.are.equal(false, cache:put("k", "new", ttl))
          assert.are.equal(false, cache:has("k"))
          assert.is_boolean(cache:put_many({ k = "v" }, ttl))
          assert.are.equal(false, cache:has("k"))
          assert.are.equal(false, cache:add("k", "v", ttl))
          assert.are.equal(false, cache:has("k"))
          local f = counted(function() return "computed" end)
          assert.are.equal("computed", cache:remember("k", ttl, f.fn))
          assert.are.equal(false, cache:has("k"))
        end
      end)

      case("ttl_date_future", "takes a date table in the future", function()
        local t = os.date("*t", os.time() + 3600)
        assert.are.equal(true, cache:put("k", "v", t))
        assert.are.equal("v", cache:get("k"))
        assert.are.equal(true, cache:add("a", "v", { year = t.year + 1, month = 1, day = 1 }))
        assert.are.equal("v", cache:get("a"))
      end)

      case("ttl_bad", "raises for a string, NaN, a boolean or an incomplete date", function()
        assert.has_error(function() cache:put("k", 1, "10") end,
          "bad argument #3 to 'put' (ttl must be a number of minutes or a date table, got string)")
        assert.has_error(function() cache:put("k", 1, true) end,
          "bad argument #3 to 'put' (ttl must be a number of minutes or a date table, got boolean)")
        assert.has_error(function() cache:put("k", 1, 0 / 0) end,
          "bad argument #3 to 'put' (ttl must not be NaN)")
        assert.has_error(function() cache:put("k", 1, { year = 2030, month = 1 }) end,
          "bad argument #3 to 'put' (date table needs year, month and day)")
        assert.has_error(function() cache:add("k", 1, "10") end,
          "bad argument #3 to 'add' (ttl must be a number of minutes or a date table, got string)")
        assert.are.equal(false, cache:has("k"))
      end)

      case("expiry", "expires entries after their ttl, and keeps those without one", function()
        local c = new_manager(base .. ":e:", { minutes = 0.02 })
        assert.are.equal(true, c:flush())
        local r = counted(function() return "r" end)
        local d = counted(function(x) return x * 2 end)
        local dec = c(d.fn)                                          -- the configured minutes
        local dec_timed = c(d.fn, { key = "timed", minutes = 0.02 })
        assert.are.equal(true, c:put("default_ttl", 1))              -- the configured minutes
        assert.are.equal(true, c:put("ttl", 1, 0.02))
        assert.are.equal(true, c:put("long", 1, 10))
        assert.are.equal(true, c:add("added", 1, 0.02))
        assert.are.equal(true, c:put("counter", 5, 0.02))
        assert.are.equal(6, c:increment("counter"))                  -- keeps its expiry
        -- A date is whole seconds: the next second must not be about to
        -- begin. (os.time() can still give the last second for a few ms
        -- after a new one began, so the date is taken from the clock.)
        local frac = system.gettime() % 1
        if frac > 0.8 then sleep(1.01 - frac) end
        local next_second = math.floor(system.gettime()) + 1
        assert.are.equal(true, c:put("date", 1, os.date("*t", next_second)))
        assert.are.equal(true, c:put_many({ pm = 1 }, 0.02))
        assert.are.equal("r", c:remember("remembered", 0.02, r.fn))
        assert.are.equal("r", c:remember_forever("rf", r.fn))
        assert.are.equal("r", c:remember_forever("rf_ttl", 0.02, r.fn))
        assert.are.equal(true, c:forever("forever", 1))
        assert.are.equal(1, c:increment("fresh_counter"))            -- no expiry
        assert.are.equal(2, dec(1))
        assert.are.equal(4, dec_timed(2))
        assert.are.equal(2, d.calls)
        local short = { "default_ttl", "ttl", "added", "counter", "pm", "remembered" }
        local kept = { "long", "rf", "rf_ttl", "forever", "fresh_counter" }
        for _, k in ipairs(short) do assert.are.equal(true, c:has(k), k) end
        sleep(expiry_wait)
        for _, k in ipairs(short) do assert.are.equal(false, c:has(k), k) end
        assert.are.equal(false, c:has("date"))
        for _, k in ipairs(kept) do assert.are.equal(true, c:has(k), k) end
        assert.are.equal(true, c:add("added", 2, 10))                 -- absent again
        assert.are.equal(1, c:increment("counter"))                  -- starts again at 0
        assert.are.equal("r", c:remember("remembered", 0.02, r.fn))
        assert.are.equal(4, r.calls)
        assert.are.equal(2, dec(1))
        assert.are.equal(4, dec_timed(2))
        assert.are.equal(4, d.calls)
      end)
    end)

    ------------------------------------------------------------------ keys

    describe("keys", function()
      local keys = {
        spaces = "a key with spaces",
        newline = "line one\nline two",
        crlf_tab = "a\r\n\tb",
        control = "\1\2\127",
        nul = "a\0b",
        utf8 = "ключ-キー-🔑",
        long = string.rep("k", 10 * 1024),
      }
      for name, key in pairs(keys) do
        case("key_" .. name, "works with a key holding " .. name, function()
          assert.are.equal(true, cache:put(key, name))
          assert.are.equal(name, cache:get(key))
          assert.are.equal(true, cache:has(key))
          assert.are.equal(false, cache:add(key, "again"))
          assert_strict({ [key] = name }, cache:many({ key }))
          assert.are.equal(name, cache:pull(key))
          assert.are.equal(false, cache:has(key))
          assert.are.equal(1, cache:increment(key))
          assert.are.equal(true, cache:forget(key))
        end)
      end

      case("keys_distinct", "keeps keys apart that differ in one byte", function()
        local long = string.rep("k", 10 * 1024)
        local pairs_of = {
          { "a\0b", "a" }, { "a b", "a_b" }, { "a\nb", "a\tb" }, { long .. "x", long .. "y" },
          { "ключ", "ключ " },
        }
        for i, p in ipairs(pairs_of) do
          assert.are.equal(true, cache:put(p[1], i))
          assert.are.equal(true, cache:put(p[2], -i))
        end
        for i, p in ipairs(pairs_of) do
          assert.are.equal(i, cache:get(p[1]))
          assert.are.equal(-i, cache:get(p[2]))
        end
      end)

      case("number_keys", "treats a number key as its tostring", function()
        assert.are.equal(true, cache:put(42, "n"))
        assert.are.equal("n", cache:get("42"))
        assert.are.equal("n", cache:get(42))
        assert.are.equal(true, cache:put("7", "s"))
        assert.are.equal("s", cache:get(7))
        assert.are.equal(true, cache:put(1.5, "f"))
        assert.are.equal("f", cache:get("1.5"))
        assert.are.equal(true, cache:has(42))
        assert.are.equal(1, cache:increment(100))
        assert_strict(1, cache:get("100"))
        assert.are.equal(true, cache:forget(42))
        assert.are.equal(false, cache:has("42"))
      end)
    end)

    ------------------------------------------------------------------ values

    describe("values", function()
      local values = {
        { "true", true },
        { "false", false },
        { "zero", 0 },
        { "an integer", 42 },
        { "a negative integer", -7 },
        { "a float", 1.5 },
        { "a negative float", -0.25 },
        { "float 1.0", 1.0 },
        { "a large float", 1e300 },
        { "a tiny float", 5e-324 },
        { "inf", math.huge },
        { "-inf", -math.huge },
        { "an empty string", "" },
        { "a string", "hello" },
        { "a string of digits", "10" },
        { "a negative number as text", "-5" },
        { "a binary string of all 256 bytes", all_bytes() },
        { "a 1 MB string", string.rep("0123456789abcdef", 65536) },
        { "an empty table", {} },
        { "an array", { 1, 2, 3, "four", 5.5 } },
        { "a map", { a = 1, b = "x", c = true } },
        { "a mixed table", { 1, 2, x = "y", [10] = false } },
        { "nested tables", { a = { b = { c = { 1, { 2, { 3 } } } } }, list = { { x = 1 }, { y = 2 } } } },
        { "key types", { [1] = "int", ["1"] = "str", [1.5] = "float", [true] = "t", [false] = "f", [-3] = "neg" } },
      }
      if maxinteger then
        values[#values + 1] = { "math.maxinteger", maxinteger }
        values[#values + 1] = { "math.mininteger", mininteger }
        values[#values + 1] = { "float 2^63", 2.0 ^ 63 }
        values[#values + 1] = { "a table of floats with integral values", { 1.0, 2.0, x = -0.0 } }
      end
      for _, v in ipairs(values) do
        case("value_" .. v[1], "round-trips " .. v[1], function()
          round_trip("v", v[2])
        end)
      end

      case("value_copy", "reads a fresh copy, unaffected by later changes", function()
        local t = { a = { 1 } }
        assert.are.equal(true, cache:put("t", t))
        t.a[1] = 99
        local got = cache:get("t")
        assert_strict({ a = { 1 } }, got)
        got.a[1] = 100
        assert_strict({ a = { 1 } }, cache:get("t"))
      end)

      case("value_metatable", "does not keep metatables", function()
        local mt = { __index = function() return "from mt" end }
        local t = setmetatable({ a = 1, inner = setmetatable({ 2 }, mt) }, mt)
        assert.are.equal(true, cache:put("t", t))
        local got = cache:get("t")
        assert.is_nil(getmetatable(got))
        assert.is_nil(getmetatable(got.inner))
        assert.is_nil(got.missing)
        assert_strict({ a = 1, inner = { 2 } }, got)
      end)

      case("value_shared", "stores a table referenced twice (not a cycle)", function()
        local shared = { 1, 2 }
        assert.are.equal(true, cache:put("t", { a = shared, b = shared }))
        assert_strict({ a = { 1, 2 }, b = { 1, 2 } }, cache:get("t"))
      end)
    end)

    ------------------------------------------------------------------ decorator

    describe("decorator", function()
      local forms = {
        { "cache(fn)", function(fn) return cache(fn) end },
        { "cache(fn, opts)", function(fn) return cache(fn, { key = "f2", minutes = 5 }) end },
        { "cache(store, fn, opts)", function(fn) return cache("main", fn, { key = "f3", minutes = 5 }) end },
        { "repository(fn, opts)", function(fn) return cache:store("main")(fn, { minutes = 5 }) end },
        { "opts.store", function(fn) return cache(fn, { store = "main", key = "f5" }) end },
        { "a date table", function(fn) return cache(fn, { minutes = os.date("*t", os.time() + 600) }) end },
      }
      for _, form in ipairs(forms) do
        case("decorator_" .. form[1], "caches through " .. form[1], function()
          local f = counted(function(x) return x * 2, "second" end)
          local w = form[2](f.fn)
          assert.are.same({ n = 2, 6, "second" }, pack(w(3)))
          assert.are.same({ n = 2, 6, "second" }, pack(w(3)))
          assert.are.equal(1, f.calls)
          assert.are.same({ n = 2, 8, "second" }, pack(w(4)))
          assert.are.equal(2, f.calls)
          assert.are.equal(true, cache:flush())
          assert.are.same({ n = 2, 6, "second" }, pack(w(3)))
          assert.are.equal(3, f.calls)
        end)
      end

      -- Returns the wrapper and its counter for a function returning impl's results.
      local function wrapped(key, impl)
        local f = counted(impl)
        return cache(f.fn, { key = key }), f
      end

      case("decorator_multi", "caches every return value, nils included", function()
        local w, f = wrapped("multi", function() return 1, nil, "x", nil end)
        assert.are.same({ n = 4, 1, nil, "x", nil }, pack(w()))
        assert.are.same({ n = 4, 1, nil, "x", nil }, pack(w()))
        assert.are.equal(1, f.calls)
      end)

      case("decorator_zero", "caches zero return values", function()
        local w, f = wrapped("zero", function() end)
        assert.are.equal(0, select("#", w()))
        assert.are.equal(0, select("#", w()))
        assert.are.equal(1, f.calls)
      end)

      case("decorator_lone_nil", "caches a lone nil", function()
        local w, f = wrapped("nil", function() return nil end)
        assert.are.same({ n = 1 }, pack(w("id")))
        assert.are.same({ n = 1 }, pack(w("id")))
        assert.are.equal(1, f.calls)
      end)

      case("decorator_false", "caches false", function()
        local w, f = wrapped("false", function() return false end)
        assert.are.same({ n = 1, false }, pack(w()))
        assert.are.same({ n = 1, false }, pack(w()))
        assert.are.equal(1, f.calls)
      end)

      case("decorator_nil_err", "does not cache nil, err", function()
        local w, f = wrapped("err", function() return nil, "not found" end)
        assert.are.same({ n = 2, nil, "not found" }, pack(w(1)))
        assert.are.same({ n = 2, nil, "not found" }, pack(w(1)))
        assert.are.equal(2, f.calls)
      end)

      case("decorator_error", "lets errors through unchanged and caches nothing", function()
        local e = { code = 7 }
        local w, f = wrapped("raises", function(kind)
          if kind == "table" then error(e) end
          error("boom", 0)
        end)
        local ok, err = pcall(w, "table")
        assert.are.equal(false, ok)
        assert.are.equal(e, err)
        ok, err = pcall(w, "string")
        assert.are.equal(false, ok)
        assert.are.equal("boom", err)
        ok = pcall(w, "string")
        assert.are.equal(false, ok)
        assert.are.equal(3, f.calls)
      end)

      case("decorator_table_args", "keys table arguments by content", function()
        local w, f = wrapped("targs", function(t) return t.a + t.b end)
        assert.are.equal(3, w({ a = 1, b = 2 }))
        assert.are.equal(3, w({ b = 2, a = 1 }))
        assert.are.equal(1, f.calls)
        assert.are.equal(4, w({ a = 1, b = 3 }))
        assert.are.equal(2, f.calls)
      end)

      case("decorator_int_float", "keys 1 and 1.0 alike, and apart from '1'", function()
        local w, f = wrapped("num", function(x) return tostring(x) end)
        local first = w(1)
        assert.are.equal(first, w(1.0))
        assert.are.equal(1, f.calls)
        assert.are.equal("1", w("1"))
        assert.are.equal(2, f.calls)
      end)

      case("decorator_callable", "wraps a callable table", function()
        local ct = setmetatable({ calls = 0 }, {
          __call = function(self, x)
            self.calls = self.calls + 1
            return x + 1
          end,
        })
        local w = cache(ct)
        assert.are.equal(2, w(1))
        assert.are.equal(2, w(1))
        assert.are.equal(1, ct.calls)
        assert.are.equal(3, w(2))
        assert.are.equal(2, ct.calls)
      end)

      case("decorator_fresh_tables", "returns fresh copies of cached tables", function()
        local w = wrapped("tables", function() return { a = { 1 } }, { 2 } end)
        w()
        local a1, b1 = w()
        local a2, b2 = w()
        assert_strict({ a = { 1 } }, a2)
        assert_strict({ 2 }, b2)
        assert.are_not.equal(a1, a2)
        a2.a[1] = 9
        assert_strict({ a = { 1 } }, (w()))
      end)

      case("decorator_args_unpacked", "passes every argument, nils included, to the function", function()
        local seen
        local w = wrapped("args", function(...)
          seen = pack(...)
          return true
        end)
        w(nil, 2, nil)
        assert.are.same({ n = 3, nil, 2, nil }, seen)
        w(1, 2, 3, 4, 5)
        assert.are.same({ n = 5, 1, 2, 3, 4, 5 }, seen)
      end)
    end)

    ----------------------------------------------------------------- tags

    describe("tags", function()
      case("tags_john_anne", "flushes by tag as SPEC section 6 shows", function()
        local john, anne = { name = "John" }, { name = "Anne" }
        cache:tags("people", "artists"):put("John", john, 10)
        cache:tags({ "people", "authors" }):put("Anne", anne, 10)
        assert.are.same(john, cache:tags("people", "artists"):get("John"))
        assert.are.same(anne, cache:tags("people", "authors"):get("Anne"))
        cache:tags("people", "authors"):flush()   -- removes John and Anne
        assert.is_nil(cache:tags("people", "artists"):get("John"))
        assert.is_nil(cache:tags("people", "authors"):get("Anne"))

        cache:tags("people", "artists"):put("John", john, 10)
        cache:tags({ "people", "authors" }):put("Anne", anne, 10)
        cache:tags("authors"):flush()             -- removes Anne only
        assert.are.same(john, cache:tags("people", "artists"):get("John"))
        assert.is_nil(cache:tags("people", "authors"):get("Anne"))
      end)

      case("tags_namespace", "keeps tagged items apart from untagged ones and from other tag lists", function()
        local t = cache:tags("a", "b")
        assert.are.equal(true, t:put("k", "tagged"))
        assert.are.equal(true, cache:put("k", "plain"))
        assert.are.equal("tagged", t:get("k"))
        assert.are.equal("plain", cache:get("k"))
        assert.is_nil(cache:tags("b", "a"):get("k"))   -- reading needs the same ordered list
        assert.is_nil(cache:tags("a"):get("k"))
        t:flush()
        assert.is_nil(t:get("k"))
        assert.are.equal("plain", cache:get("k"))
      end)

      case("tags_methods", "have every repository method", function()
        local t = cache:tags("m")
        assert.are.equal(true, t:add("a", 1, 10))
        assert.are.equal(false, t:add("a", 2, 10))
        assert.are.equal(true, t:has("a"))
        assert.are.equal(3, t:increment("a", 2))
        assert.are.equal(2, t:decrement("a"))
        assert.are.equal(true, t:forever("f", { 1, 2 }))
        assert.are.equal(true, t:put_many({ x = "X", y = "Y" }, 10))
        assert.are.same({ x = "X", y = "Y" }, t:many({ "x", "y", "z" }))
        assert.are.equal("X", t:pull("x"))
        assert.is_nil(t:get("x"))
        assert.are.equal(true, t:forget("y"))
        assert.are.equal(false, t:forget("y"))
        local loads = counted(function() return "loaded" end)
        assert.are.equal("loaded", t:remember("r", 10, loads.fn))
        assert.are.equal("loaded", t:remember_forever("r", loads.fn))
        assert.are.equal(1, loads.calls)
        local f = counted(function(x) return x * 2 end)
        local w = t(f.fn, { key = "double" })
        assert.are.equal(4, w(2))
        assert.are.equal(4, w(2))
        assert.are.equal(1, f.calls)
        t:flush()
        for _, k in ipairs({ "a", "f", "r" }) do assert.is_nil(t:get(k)) end
        assert.are.equal(4, w(2))
        assert.are.equal(2, f.calls)
        assert.are.equal(1, t:increment("a"))      -- starts again at 0 after the flush
      end)

      case("tags_flush_leaves_others", "flushing one tag keeps items of other tags and untagged items", function()
        cache:tags("x"):put("k", 1, 10)
        cache:tags("y"):put("k", 2, 10)
        cache:put("k", 3, 10)
        cache:tags("x"):flush()
        assert.is_nil(cache:tags("x"):get("k"))
        assert.are.equal(2, cache:tags("y"):get("k"))
        assert.are.equal(3, cache:get("k"))
      end)

      case("tags_bad_names", "raise for tags that are not non-empty strings", function()
        assert.has_error(function() cache:tags() end)
        assert.has_error(function() cache:tags("") end)
        assert.has_error(function() cache:tags({ "a", {} }) end)
      end)
    end)

    -- Every exception must name a case that exists, so typos cannot hide one.
    -- (Checked in a test: busted collects nested blocks after this body.)
    it("excepts only cases that exist", function()
      for name in pairs(exceptions) do
        assert(known[name], label .. ": exception for an unknown case '" .. name .. "'")
      end
    end)
  end)
end
