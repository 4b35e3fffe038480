-- spec/21-decorator_spec.lua: the manager as a memoizing decorator (SPEC
-- section 5), beyond what the shared suite checks on every store: how the
-- entry key is made (function identity or the key option, then a hash of
-- the arguments' canonical form, equal across processes), which arguments
-- and results cannot be cached, and the minutes option.
local cachy = require("cachy")
local util = require("helpers.util")
local pack, counted = util.pack, util.counted
local luastore = require("helpers.luastore")

local HEX32 = string.rep("%x", 32)

-- Lua pattern matching s literally.
local function literal(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

describe("decorator", function()
  local cache, backend

  before_each(function()
    backend = luastore.new()
    cache = cachy.new({ prefix = "app:", stores = { main = { driver = "luatable" } } })
    cache:extend("luatable", backend:factory())
  end)

  after_each(function()
    cache:close()
  end)

  describe("entry keys", function()
    it("are the key option, a colon and a 128-bit hash of the arguments", function()
      local w = cache(function(x) return x end, { key = "users" })
      w(1)
      local keys = backend:keys()
      assert.are.equal(1, #keys)
      assert.is_truthy(keys[1]:match("^app:users:" .. HEX32 .. "$"), keys[1])
    end)

    it("are named by source:linedefined without the key option", function()
      local function f(x) return x end
      local info = debug.getinfo(f, "S")
      cache(f)(1)
      local keys = backend:keys()
      assert.are.equal(1, #keys)
      local source = info.source:gsub("^@", "")
      assert.is_truthy(keys[1]:match("^app:@?" .. literal(source) .. ":" .. info.linedefined .. ":" .. HEX32 .. "$"),
        keys[1])
    end)

    it("name a callable table by its __call", function()
      local call = function(_, x) return x end
      local info = debug.getinfo(call, "S")
      cache(setmetatable({}, { __call = call }))(1)
      local keys = backend:keys()
      assert.are.equal(1, #keys)
      assert.is_truthy(keys[1]:match(":" .. info.linedefined .. ":" .. HEX32 .. "$"), keys[1])
    end)

    it("are shared by closures made on one line, and kept apart by the key option", function()
      local calls = 0
      local function make(tag)
        return function(x) calls = calls + 1; return x .. tag end
      end
      local a, b = cache(make("a")), cache(make("b"))
      assert.are.equal("1a", a(1))
      assert.are.equal("1a", b(1))          -- b hits a's entry: same identity
      assert.are.equal(1, calls)
      local ka, kb = cache(make("a"), { key = "ka" }), cache(make("b"), { key = "kb" })
      assert.are.equal("1a", ka(1))
      assert.are.equal("1b", kb(1))
      assert.are.equal(3, calls)
    end)

    it("are shared by two functions given the same key option", function()
      local f1 = counted(function() return "first" end)
      local f2 = counted(function() return "second" end)
      assert.are.equal("first", cache(f1.fn, { key = "same" })(7))
      assert.are.equal("first", cache(f2.fn, { key = "same" })(7))
      assert.are.equal(0, f2.calls)
    end)

    it("differ between functions defined on different lines", function()
      local f1 = function(x) return "one" .. x end
      local f2 = function(x) return "two" .. x end
      assert.are.equal("one1", cache(f1)(1))
      assert.are.equal("two1", cache(f2)(1))
    end)

    it("are the same in another process for equal arguments", function()
      local out = util.run_script([[
        package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
        package.preload["cachy.core"] = package.loadlib(arg[1], "luaopen_cachy_core")
        local cachy = require("cachy")
        local backend = require("helpers.luastore").new()
        local cache = cachy.new({ prefix = "app:", stores = { main = { driver = "luatable" } } })
        cache:extend("luatable", backend:factory())
        local w = cache(function(...) return 1 end, { key = "xproc" })
        local big = {}
        for i = 1, 50 do big["k" .. i] = i end
        w({ b = 2, a = 1, [1] = "x", [true] = { z = 1.0, y = { "deep" } } }, 1, nil, "s")
        w(big, 2.5, -7)
        for _, k in ipairs(backend:keys()) do io.write(k, "\n") end
      ]])

      local w = cache(function(...) return 1 end, { key = "xproc" })
      local big = {}
      for i = 50, 1, -1 do big["k" .. i] = i end
      w({ [true] = { y = { "deep" }, z = 1 }, [1] = "x", a = 1, b = 2 }, 1.0, nil, "s")
      w(big, 2.5, -7)
      local mine = table.concat(backend:keys(), "\n") .. "\n"
      assert.are.equal(2, #backend:keys())
      assert.are.equal(mine, out)
    end)
  end)

  describe("arguments", function()
    local w, f
    before_each(function()
      f = counted(function(...) return select("#", ...) end)
      w = cache(f.fn, { key = "args" })
    end)

    it("compare tables by content, keys in any order", function()
      local t1, t2 = {}, {}
      for i = 1, 40 do t1["k" .. i] = i end
      for i = 40, 1, -1 do t2["k" .. i] = i end
      t2.extra = true
      t2.extra = nil
      w(t1)
      w(t2)
      w({ x = { a = 1, b = 2 } })
      w({ x = { b = 2, a = 1 } })
      assert.are.equal(2, f.calls)
      w({ x = { a = 1, b = 3 } })
      w({ 1, 2 })
      w({ 2, 1 })
      assert.are.equal(5, f.calls)
    end)

    it("treat 1 and 1.0 alike, also inside tables", function()
      w(1)
      w(1.0)
      w({ n = 1 })
      w({ n = 1.0 })
      assert.are.equal(2, f.calls)
    end)

    it("keep types apart: '1' and 1, true and 'true', [1] and ['1']", function()
      w(1)
      w("1")
      w(true)
      w("true")
      w({ [1] = "a" })
      w({ ["1"] = "a" })
      assert.are.equal(6, f.calls)
    end)

    it("count nils by position", function()
      assert.are.equal(2, w(nil, 1))
      assert.are.equal(1, w(1))
      assert.are.equal(2, w(1, nil))
      assert.are.equal(0, w())
      assert.are.equal(1, w(nil))
      assert.are.equal(5, f.calls)
      assert.are.equal(2, w(nil, 1))
      assert.are.equal(5, f.calls)
    end)

    it("raise for a function, userdata or thread, naming the argument", function()
      assert.has_error(function() w(1, print) end,
        "cannot cache a call with argument #2: it is a function")
      assert.has_error(function() w(io.stdout) end,
        "cannot cache a call with argument #1: it is a userdata")
      assert.has_error(function() w("a", "b", coroutine.create(function() end)) end,
        "cannot cache a call with argument #3: it is a thread")
      local ok, err = pcall(function() w({ f = print }) end)
      assert.are.equal(false, ok)
      assert.is_truthy(err:match("cannot cache a call with argument #1"), err)
      assert.are.equal(0, f.calls)
    end)

    it("raise at the caller's line", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() w(print) end)
      assert.are.equal(false, ok)
      local where = debug.getinfo(1, "S").short_src .. ":" .. line .. ": "
      assert.are.equal(where, err:sub(1, #where))
    end)
  end)

  describe("results", function()
    it("come back as fresh copies of tables", function()
      local w = cache(function() return { list = { 1, 2 } } end, { key = "fresh" })
      local first = w()
      local a, b = w(), w()
      assert.are.same({ list = { 1, 2 } }, a)
      assert.are_not.equal(first, a)
      assert.are_not.equal(a, b)
      a.list[1] = 99
      assert.are.same({ list = { 1, 2 } }, w())
    end)

    it("with nil, nil are cached (the second value is nil)", function()
      local f = counted(function() return nil, nil end)
      local w = cache(f.fn, { key = "nilnil" })
      assert.are.same({ n = 2 }, pack(w()))
      assert.are.same({ n = 2 }, pack(w()))
      assert.are.equal(1, f.calls)
    end)

    it("with nil, false are not cached (the second value is not nil)", function()
      local f = counted(function() return nil, false end)
      local w = cache(f.fn, { key = "nilfalse" })
      assert.are.same({ n = 2, nil, false }, pack(w()))
      assert.are.same({ n = 2, nil, false }, pack(w()))
      assert.are.equal(2, f.calls)
    end)

    it("that cannot be stored raise, naming the result", function()
      local f = counted(function() return 1, { handlers = { print } } end)
      local w = cache(f.fn, { key = "bad" })
      local ok, err = pcall(w)
      assert.are.equal(false, ok)
      assert.is_truthy(err:match("cannot cache the results of .+: result #2%.handlers%[1%] is a function$"), err)
      ok, err = pcall(cache(function() return print end, { key = "bad2" }))
      assert.are.equal(false, ok)
      assert.is_truthy(err:match("cannot cache the results of .+: result #1 is a function$"), err)
      assert.are.same({}, backend:keys())
    end)
  end)

  describe("minutes", function()
    local function calls_after_two(minutes)
      local f = counted(function() return "v" end)
      local w = cache(f.fn, { key = "m", minutes = minutes })
      assert.are.equal("v", w())
      assert.are.equal("v", w())
      assert.are.equal(true, cache:flush())
      return f.calls
    end

    it("takes a number of minutes", function()
      assert.are.equal(1, calls_after_two(10))
      assert.are.equal(1, calls_after_two(0.5))
      backend:reset_calls()
      cache(function() return 1 end, { key = "ttl", minutes = 0.5 })()
      local k = backend:keys()[1]
      local left = backend.expires[k] - require("system").monotime()
      assert.is_true(left > 29 and left <= 30, "seconds left: " .. left)
    end)

    it("takes a date table", function()
      assert.are.equal(1, calls_after_two(os.date("*t", os.time() + 600)))
    end)

    it("caches nothing for 0, a negative number or a past date", function()
      assert.are.equal(2, calls_after_two(0))
      assert.are.equal(2, calls_after_two(-1))
      assert.are.equal(2, calls_after_two(os.date("*t", os.time() - 600)))
      assert.are.same({}, backend:keys())
    end)

    it("defaults to the configured minutes", function()
      local c = cachy.new({ minutes = 0.5, stores = { main = { driver = "luatable" } } })
      local b = luastore.new()
      c:extend("luatable", b:factory())
      c(function() return 1 end)()
      local k = b:keys()[1]
      local left = b.expires[k] - require("system").monotime()
      assert.is_true(left > 29 and left <= 30, "seconds left: " .. left)
      c:close()
    end)

    it("raises for a string, NaN or a boolean", function()
      for _, bad in ipairs({ "10", 0 / 0, true }) do
        local ok = pcall(function() cache(function() return 1 end, { minutes = bad })() end)
        assert.are.equal(false, ok)
      end
    end)
  end)

  describe("options", function()
    it("raise for an unknown option", function()
      assert.has_error(function() cache(print, { minuts = 5 }) end, "cache: unknown option 'minuts'")
    end)

    it("raise for an unknown store", function()
      assert.has_error(function() cache("nope", print) end, "cache store 'nope' is not defined")
      assert.has_error(function() cache(print, { store = "nope" }) end, "cache store 'nope' is not defined")
    end)

    it("store names the store the entries go to", function()
      local c = cachy.new({
        default = "a",
        stores = { a = { driver = "luatable" }, b = { driver = "luatable", prefix = "b:" } },
      })
      local b = luastore.new()
      c:extend("luatable", b:factory())
      c(function() return 1 end, { key = "x", store = "b" })()
      c("b", function() return 1 end, { key = "y" })()
      c:store("b")(function() return 1 end, { key = "z" })()
      local keys = b:keys()
      assert.are.equal(3, #keys)
      for i, k in ipairs({ "x", "y", "z" }) do
        assert.is_truthy(keys[i]:match("^b:" .. k .. ":" .. HEX32 .. "$"), keys[i])
      end
      c:close()
    end)

    it("raise when the wrapped value is not callable", function()
      assert.has_error(function() cache(42) end)
      assert.has_error(function() cache("main", {}) end)
    end)
  end)
end)
