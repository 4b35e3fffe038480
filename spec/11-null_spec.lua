-- spec/11-null_spec.lua: the null store, which accepts every write and keeps
-- nothing (so caching can be switched off by configuration alone).
--
-- It does not run the shared behaviour suite: that suite reads back what it
-- wrote, and the null store by design never returns a stored value. Its own
-- contract is checked here instead: writes succeed, reads miss, counters
-- return n, misuse still raises.
local cachy = require("cachy")
local util = require("helpers.util")
local pack, counted = util.pack, util.counted

describe("null store", function()
  local cache

  before_each(function()
    cache = cachy.new({ prefix = "p:", stores = { main = { driver = "null" } } })
  end)

  after_each(function()
    cache:close()
  end)

  it("accepts every write and returns true", function()
    assert.are.equal(true, cache:put("k", 1))
    assert.are.equal(true, cache:put("k", { 1, 2 }, 10))
    assert.are.equal(true, cache:forever("k", "v"))
    assert.are.equal(true, cache:put_many({ a = 1, b = 2 }))
    assert.are.equal(true, cache:add("k", 1))
    assert.are.equal(true, cache:add("k", 1))
    assert.are.equal(true, cache:flush())
  end)

  it("keeps nothing", function()
    assert.are.equal(true, cache:put("k", 1))
    assert.is_nil(cache:get("k"))
    assert.are.equal("d", cache:get("k", "d"))
    assert.are.equal(false, cache:has("k"))
    assert.are.same({}, cache:many({ "k", "a" }))
    assert.is_nil(cache:pull("k"))
    assert.are.equal("d", cache:pull("k", "d"))
    assert.are.equal(false, cache:forget("k"))
  end)

  it("calls a function default on every get", function()
    local d = counted(function() return "computed" end)
    assert.are.equal("computed", cache:get("k", d.fn))
    assert.are.equal("computed", cache:get("k", d.fn))
    assert.are.equal(2, d.calls)
  end)

  it("returns n from increment and -n from decrement", function()
    assert.are.equal(1, cache:increment("c"))
    assert.are.equal(1, cache:increment("c"))
    assert.are.equal(5, cache:increment("c", 5))
    assert.are.equal(-1, cache:decrement("c"))
    assert.are.equal(-3, cache:decrement("c", 3))
    assert.are.equal(false, cache:has("c"))
  end)

  it("calls the function of remember every time", function()
    local f = counted(function() return "v" end)
    assert.are.equal("v", cache:remember("r", 10, f.fn))
    assert.are.equal("v", cache:remember("r", 10, f.fn))
    assert.are.equal("v", cache:remember_forever("r", f.fn))
    assert.are.equal(3, f.calls)
    local failing = counted(function() return nil, "db down" end)
    assert.are.same({ n = 2, nil, "db down" }, pack(cache:remember("r", 10, failing.fn)))
  end)

  it("makes the decorator call the function every time", function()
    local errors = 0
    local c = cachy.new({
      stores = { main = { driver = "null" } },
      on_error = function() errors = errors + 1 end,
    })
    local f = counted(function(x) return x, nil end)
    local w = c(f.fn)
    assert.are.same({ n = 2, 1, nil }, pack(w(1)))
    assert.are.same({ n = 2, 1, nil }, pack(w(1)))
    assert.are.equal(2, f.calls)
    assert.are.equal(0, errors)
    c:close()
  end)

  it("treats ttl 0 like every store: nothing stored, put returns false", function()
    assert.are.equal(false, cache:put("k", 1, 0))
    assert.are.equal(false, cache:add("k", 1, -1))
  end)

  it("counts what its calls saw, as every store does", function()
    assert.are.equal(true, cache:put("k", 1))
    assert.is_nil(cache:get("k"))
    assert.are.same({ hits = 0, misses = 1, writes = 1, errors = 0, stale = 0, refreshes = 0, lock_waits = 0 },
      cache:stats())
  end)

  it("still raises on misuse", function()
    assert.has_error(function() cache:put("k", nil) end,
      "bad argument #2 to 'put' (nil cannot be stored; use forget to remove a key)")
    assert.has_error(function() cache:put("k", { handlers = { 1, print } }) end,
      "bad argument #2 to 'put' (value.handlers[2] is a function)")
    assert.has_error(function() cache:get({}) end,
      "bad argument #1 to 'get' (key must be a non-empty string or a number, got table)")
    assert.has_error(function() cache:put("k", 1, "soon") end,
      "bad argument #3 to 'put' (ttl must be a number of minutes or a date table, got string)")
    assert.has_error(function() cache:increment("k", 1.5) end,
      "bad argument #2 to 'increment' (n must be an integer)")
  end)
end)
