-- spec/23-errors_spec.lua: misuse raises (SPEC section 9), at the caller's
-- line, with the exact text of API.md, on the manager and on repositories
-- alike; a misused call changes nothing in the store.
local cachy = require("cachy")

local SRC = debug.getinfo(1, "S").short_src

-- fn, written on line `line` of this file, raises msg from that line.
local function raises_at(line, fn, msg)
  local ok, err = pcall(fn)
  assert.are.equal(false, ok)
  assert.are.equal(SRC .. ":" .. line .. ": " .. msg, err)
end

local function here()
  return debug.getinfo(2, "l").currentline
end

describe("misuse", function()
  local cache, repo

  before_each(function()
    cache = cachy.new({ stores = { main = { driver = "memory" } } })
    repo = cache:store("main")
    assert.are.equal(true, cache:put("k", "kept"))
  end)

  after_each(function()
    assert.are.equal("kept", cache:get("k"))
    cache:close()
  end)

  describe("keys", function()
    local methods = {
      get = function(c, key) c:get(key) end,
      has = function(c, key) c:has(key) end,
      put = function(c, key) c:put(key, 1) end,
      add = function(c, key) c:add(key, 1) end,
      forever = function(c, key) c:forever(key, 1) end,
      remember = function(c, key) c:remember(key, 1, print) end,
      remember_forever = function(c, key) c:remember_forever(key, print) end,
      pull = function(c, key) c:pull(key) end,
      forget = function(c, key) c:forget(key) end,
      increment = function(c, key) c:increment(key) end,
      decrement = function(c, key) c:decrement(key) end,
    }
    for name, call in pairs(methods) do
      it("of a wrong type raise in " .. name, function()
        for _, target in ipairs({ cache, repo }) do
          for _, bad in ipairs({ {}, true, false }) do
            assert.has_error(function() call(target, bad) end,
              "bad argument #1 to '" .. name .. "' (key must be a non-empty string or a number, got " .. type(bad) .. ")")
          end
          assert.has_error(function() call(target, nil) end,
            "bad argument #1 to '" .. name .. "' (key must be a non-empty string or a number, got nil)")
          assert.has_error(function() call(target, "") end,
            "bad argument #1 to '" .. name .. "' (key must not be empty)")
        end
      end)
    end

    it("raise at the caller's line", function()
      raises_at(here(), function() cache:get({}) end,
        "bad argument #1 to 'get' (key must be a non-empty string or a number, got table)")
      raises_at(here(), function() repo:put("", 1) end,
        "bad argument #1 to 'put' (key must not be empty)")
      raises_at(here(), function() cache:get() end,
        "bad argument #1 to 'get' (key must be a non-empty string or a number, got nil)")
    end)

    it("in put_many raise naming the table argument", function()
      raises_at(here(), function() cache:put_many("k") end,
        "bad argument #1 to 'put_many' (table expected, got string)")
      raises_at(here(), function() repo:put_many({ [{}] = 1 }) end,
        "bad argument #1 to 'put_many' (key must be a non-empty string or a number, got table)")
      raises_at(here(), function() cache:put_many({ [""] = 1 }) end,
        "bad argument #1 to 'put_many' (key must not be empty)")
    end)

    it("in many must be a table", function()
      raises_at(here(), function() cache:many("k") end,
        "bad argument #1 to 'many' (table expected, got string)")
      assert.has_error(function() repo:many(nil) end, "bad argument #1 to 'many' (table expected, got nil)")
    end)
  end)

  describe("values", function()
    it("nil raises, saying to use forget", function()
      raises_at(here(), function() cache:put("k", nil) end,
        "bad argument #2 to 'put' (nil cannot be stored; use forget to remove a key)")
      raises_at(here(), function() repo:add("new", nil) end,
        "bad argument #2 to 'add' (nil cannot be stored; use forget to remove a key)")
      raises_at(here(), function() cache:forever("k", nil) end,
        "bad argument #2 to 'forever' (nil cannot be stored; use forget to remove a key)")
      assert.are.equal(false, cache:has("new"))
    end)

    it("that cannot be stored raise, naming the path", function()
      raises_at(here(), function() cache:put("k", { handlers = { 1, print } }) end,
        "bad argument #2 to 'put' (value.handlers[2] is a function)")
      local t = {}
      t.self = t
      raises_at(here(), function() repo:put("k", t) end,
        "bad argument #2 to 'put' (value.self is a cyclic reference)")
      local deep = {}
      for _ = 1, 150 do deep = { deep } end
      raises_at(here(), function() cache:put("k", deep) end,
        "bad argument #2 to 'put' (value[1][1][1][1]...[1][1][1][1] is nested deeper than 100 levels)")
    end)
  end)

  describe("ttl", function()
    it("of a wrong type raises", function()
      raises_at(here(), function() cache:put("k", 1, "5") end,
        "bad argument #3 to 'put' (ttl must be a number of minutes or a date table, got string)")
      raises_at(here(), function() repo:add("n", 1, false) end,
        "bad argument #3 to 'add' (ttl must be a number of minutes or a date table, got boolean)")
      raises_at(here(), function() cache:put_many({ n = 1 }, "5") end,
        "bad argument #2 to 'put_many' (ttl must be a number of minutes or a date table, got string)")
      raises_at(here(), function() cache:remember("n", "5", print) end,
        "bad argument #2 to 'remember' (ttl must be a number of minutes or a date table, got string)")
      assert.are.equal(false, cache:has("n"))
    end)

    it("NaN raises", function()
      raises_at(here(), function() cache:put("k", 1, 0 / 0) end, "bad argument #3 to 'put' (ttl must not be NaN)")
    end)

    it("a date table without year, month or day raises", function()
      for _, t in ipairs({ {}, { year = 2030, month = 1 }, { month = 1, day = 1 }, { year = 2030, day = 1 } }) do
        raises_at(here(), function() cache:put("k", 1, t) end,
          "bad argument #3 to 'put' (date table needs year, month and day)")
      end
    end)
  end)

  describe("increment", function()
    it("n that is not an integer raises", function()
      raises_at(here(), function() cache:increment("c", 1.5) end,
        "bad argument #2 to 'increment' (n must be an integer)")
      raises_at(here(), function() repo:decrement("c", 0.1) end,
        "bad argument #2 to 'decrement' (n must be an integer)")
      assert.are.equal(false, cache:has("c"))
    end)
  end)

  describe("remember", function()
    it("without a function raises", function()
      raises_at(here(), function() cache:remember("r", 1, nil) end,
        "bad argument #3 to 'remember' (function expected, got nil)")
      raises_at(here(), function() cache:remember("r", 1) end,
        "bad argument #3 to 'remember' (function expected, got no value)")
      assert.are.equal(false, cache:has("r"))
    end)
  end)

  describe("stores", function()
    it("an undefined store raises", function()
      raises_at(here(), function() cache:store("x") end, "cache store 'x' is not defined")
    end)
  end)

  describe("the decorator", function()
    it("raises for an unknown option", function()
      raises_at(here(), function() cache(print, { minuts = 1 }) end, "cache: unknown option 'minuts'")
    end)

    it("raises for an argument that cannot be keyed", function()
      local w = cache(function(...) return 1 end, { key = "w" })
      raises_at(here(), function() w(1, print) end, "cannot cache a call with argument #2: it is a function")
    end)
  end)

  describe("a closed manager", function()
    it("can still be used", function()
      cache:close()
      assert.are.equal(true, cache:put("k", "kept"))
      assert.are.equal("kept", cache:get("k"))
    end)
  end)
end)
