-- spec/13-jit_spec.lua: the memory store's LuaJIT path (lua/cachy/jit.lua,
-- csrc/lcachy_jit.c): get, put and the decorator's read through the FFI.
-- Every answer is compared with the C decoder's reading of the same
-- stored bytes, the keys with the ones the C path makes, and the hit
-- loops are watched by the trace compiler: they must compile without an
-- abort. Under PUC Lua the C path of lcachy_fast.c must stay in place.
local cachy = require("cachy")
local core = require("cachy.core")
local compat = require("cachy.compat")

local pack, unpack = compat.pack, compat.unpack

local function memory(fields)
  local store = { driver = "memory" }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ stores = { main = store } })
end

-- The handle under the repository (bytes in, bytes out).
local function handle(cache)
  local repo = cache:store()
  repo:_store()
  return repo._st
end

-- The value the C decoder reads from the bytes stored under key.
local function c_reading(cache, key)
  local ok, v = core.decode(assert(handle(cache):get(key)))
  assert(ok, v)
  return v
end

local function same(a, b)
  if a ~= a then return b ~= b end
  if a == 0 and b == 0 then return 1 / a == 1 / b end
  return a == b
end

-- Asserts got is what the C decoder read (want) from bytes #i.
local function read_alike(want, got, i)
  if type(want) == "table" then
    assert.are.same(want, got)
  else
    assert(same(want, got), ("bytes #%d: %s, the C decoder %s"):format(i, tostring(got), tostring(want)))
  end
end

local function source_of(fn)
  return type(fn) == "function" and debug.getinfo(fn, "S").source or type(fn)
end

if not jit then
  describe("the memory store's path under " .. _VERSION, function()
    it("is the C fast path of lcachy_fast.c", function()
      local cache = memory()
      assert(cache:put("k", "v"))
      assert.are.equal("=[C]", source_of(cache.put))
      assert.are.equal("=[C]", source_of(cache._fast.tuple_get))
      assert.are.equal("=[C]", source_of(cache._fast.get))
    end)
  end)
  return
end

-- Bytes other writers may leave: every kind the C decoder reads.
local RAW = {
  "\5", "\127", "\224", "\255", "\204\200", "\205\1\0", "\208\156", "\192", "\194", "\195",
  "\203\64\9\33\251\84\68\45\24",     -- 3.14159... as float 64
  "0", "7", "-7", "123456789012345", "1234567890123456", "9007199254740993",
  "-", "\217\3abc", "\218\0\3abc", "\219\0\0\0\3abc",
  "\202\64\73\15\219",                -- float 32
  "\207\0\0\0\0\0\0\0\1", "\211\255\255\255\255\255\255\255\255",
  "\145\1", "\129\161a\1",            -- tables: the C decoder's
}

describe("the memory store's LuaJIT path", function()
  it("is bound into the repository and the manager", function()
    local cache = memory()
    assert(cache:put("k", "v"))
    assert.are.equal("@lua/cachy/jit.lua", source_of(cache.put))
    assert.are.equal("@lua/cachy/jit.lua", source_of(cache:store().put))
    assert.are.equal("@lua/cachy/jit.lua", source_of(cache._fast.get))
    assert.are.equal("@lua/cachy/jit.lua", source_of(cache._fast.tuple_get))
  end)

  it("is not bound for other stores", function()
    local cache = cachy.new({ stores = { n = { driver = "null" } } })
    assert(cache:put("k", "v"))
    assert.are.equal("=[C]", source_of(cache.put))
  end)

  it("writes the bytes the C encoder writes and reads them as the C decoder does", function()
    local cache = memory()
    local values = {
      "", "a", ("x"):rep(31), ("x"):rep(32), ("x"):rep(255), ("x"):rep(256),
      ("y"):rep(65535), ("y"):rep(65536), "\0bin\255ary\0",
      0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2 ^ 31, -2 ^ 31,
      2 ^ 53, -2 ^ 53, 2 ^ 53 + 2, 1.5, -0.25, 1e300, -0.0, math.huge, -math.huge, 0 / 0,
      true, false,
    }
    for i, v in ipairs(values) do
      local key = "v" .. i
      assert.are.equal(true, cache:put(key, v))
      assert.are.equal(core.encode(v), handle(cache):get(key))
      local got = cache:get(key)
      assert(v == got or (v ~= v and got ~= got), "value #" .. i .. ": " .. tostring(got))
      assert(same(c_reading(cache, key), got), "value #" .. i)     -- -0.0 is stored as "0"
    end
  end)

  it("reads bytes other writers left as the C decoder does", function()
    local cache = memory()
    local st = handle(cache)
    for i, bytes in ipairs(RAW) do
      assert(st:put("r" .. i, bytes, 0))
      local got = cache:get("r" .. i)
      local want = c_reading(cache, "r" .. i)
      read_alike(want, got, i)
    end
  end)

  -- Every store's read on LuaJIT decodes through cachy.jit's decode
  -- (values.lua), not only the memory store's.
  it("decodes any store's bytes as the C decoder does", function()
    assert.are.equal(require("cachy.jit"), require("cachy.values").jit)   -- what values.decode reads with
    local decode = require("cachy.jit").decode
    local all = {}
    for _, v in ipairs({ "", ("x"):rep(40), ("y"):rep(300), 1, -33, 2 ^ 40, 1.5, true, false, { 1, "x" } }) do
      all[#all + 1] = core.encode(v)
    end
    for _, bytes in ipairs(RAW) do all[#all + 1] = bytes end
    for _, bytes in ipairs({ "\217\9ab", "\193", "", "007", "-0", "12a" }) do all[#all + 1] = bytes end
    for i, bytes in ipairs(all) do
      local ok, got = decode(bytes)
      local wok, want = core.decode(bytes)
      assert.are.equal(wok, ok, "bytes #" .. i)
      read_alike(want, got, i)
    end
  end)

  it("names undecodable bytes as the C path does", function()
    local cache = memory()
    local st = handle(cache)
    for i, bytes in ipairs({ "\217\9ab", "\193", "\161a\0", "\199\1\1\0", "", "007", "-0", "12a" }) do
      assert(st:put("bad" .. i, bytes, 0))
      local v, err, code = cache:get("bad" .. i)
      assert.is_nil(v)
      local ok, why = core.decode(bytes)
      assert.is_false(ok)
      -- 0xC1 opens a stale-serving envelope (a byte MessagePack never writes)
      if bytes:byte(1) == 0xC1 then why = "a stale-serving envelope that is cut short or of an unknown version" end
      assert.are.equal("store 'main' (memory): value of key 'bad" .. i .. "' cannot be decoded: " .. why, err)
      assert.are.equal("corrupt", code)
    end
  end)

  it("hands out a fresh copy of a table each time", function()
    local cache = memory()
    assert(cache:put("t", { list = { 1, 2 }, name = "x" }))
    local a = cache:get("t")
    a.list[1] = "changed"
    a.name = nil
    assert.are.same({ list = { 1, 2 }, name = "x" }, cache:get("t"))
  end)

  it("keeps get's misses, defaults and number keys", function()
    local cache = memory()
    assert.is_nil(cache:get("nothing"))
    assert.are.equal("d", cache:get("nothing", "d"))
    assert.are.equal("f", cache:get("nothing", function() return "f" end))
    assert(cache:put(42, "n"))
    assert.are.equal("n", cache:get("42"))
    assert.are.equal("n", cache:get(42))
  end)

  it("reports misuse at the caller's line, as the C path", function()
    local cache = memory()
    local line = debug.getinfo(1, "l").currentline
    local cases = {
      { function() local x = cache:get("") return x end, line + 2,
        "bad argument #1 to 'get' (key must not be empty)" },
      { function() local x = cache:get({}) return x end, line + 4,
        "bad argument #1 to 'get' (key must be a non-empty string or a number, got table)" },
      { function() local x = cache:put("", 1) return x end, line + 6,
        "bad argument #1 to 'put' (key must not be empty)" },
      { function() local x = cache:put("k") return x end, line + 8,
        "bad argument #2 to 'put' (value expected)" },
      { function() local x = cache:put("k", 1, "x") return x end, line + 10,
        "bad argument #3 to 'put' (ttl must be a number of minutes or a date table, got string)" },
      { function() local x = cache:put("k", 1, 0 / 0) return x end, line + 12,
        "bad argument #3 to 'put' (ttl must not be NaN)" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.are.equal("spec/13-jit_spec.lua:" .. case[2] .. ": " .. case[3], err)
    end
  end)

  it("keeps lifetimes: expiry, a lifetime already over, dates and the default", function()
    local slow = os.getenv("CACHY_SLOW") and 20 or 1        -- under valgrind
    local cache = cachy.new({ minutes = 0.001 * slow, stores = { main = { driver = "memory" } } })
    assert(cache:put("short", "v", 0.001 * slow))   -- 60 ms
    assert(cache:put("default", "v"))               -- 60 ms
    assert(cache:put("long", "v", 10))
    assert(cache:put("old", "v", 10))
    assert.are.equal(false, cache:put("old", "w", 0))
    assert.is_nil(cache:get("old"))
    assert(cache:put("date", "v", os.date("*t", os.time() + 3600)))
    assert.are.equal("v", cache:get("short"))
    local t0 = os.clock()
    repeat local _ = 1 until os.clock() - t0 > 0.15 * slow
    assert.is_nil(cache:get("short"))
    assert.is_nil(cache:get("default"))
    assert.are.equal("v", cache:get("long"))
    assert.are.equal("v", cache:get("date"))
  end)

  it("keeps the limits, eviction and the store's counts", function()
    local cache = memory({ max_items = 3 })
    for i = 1, 5 do assert(cache:put("k" .. i, ("v"):rep(i))) end
    assert.is_nil(cache:get("k1"))
    assert.are.equal("vvvvv", cache:get("k5"))
    local stats = cache:stats()
    assert.are.equal(3, stats.items)
    assert.are.equal(2, stats.evictions)
    assert.are.equal(1, stats.hits)
    assert.are.equal(1, stats.misses)
    local small = memory({ max_bytes = 10 })
    local ok, err, code = small:put("k", ("x"):rep(20))
    assert.is_nil(ok)
    assert.are.equal("store 'main' (memory): value of 21 bytes exceeds max_bytes 10", err)
    assert.are.equal("too_big", code)
  end)

  describe("a hit on the item a get or put found before (touch)", function()
    it("sees a rewrite of the same size, by any method", function()
      local cache = memory()
      assert(cache:put("k", "aaaa"))
      assert.are.equal("aaaa", cache:get("k"))
      assert(handle(cache):put("k", core.encode("bbbb"), 0))     -- rewritten in place
      assert.are.equal("bbbb", cache:get("k"))
      assert.are.equal(12, cache:increment("n", 12))
      assert.are.equal(12, cache:get("n"))
      assert.are.equal(13, cache:increment("n"))                  -- "12" -> "13" in place
      assert.are.equal(13, cache:get("n"))
      assert(cache:forever("k", "cccc"))
      assert.are.equal("cccc", cache:get("k"))
      assert(cache:put("k", true))
      assert.are.equal(true, cache:get("k"))
    end)

    it("sees removals: forget, pull, flush, close, a lifetime that ends", function()
      local cache = memory()
      assert(cache:put("k", "v"))
      assert.are.equal("v", cache:get("k"))
      assert.are.equal(true, cache:forget("k"))
      assert.is_nil(cache:get("k"))
      assert(cache:put("k", "v"))
      assert.are.equal("v", cache:pull("k"))
      assert.is_nil(cache:get("k"))
      assert(cache:put("k", "v"))
      assert(cache:flush())
      assert.is_nil(cache:get("k"))
      assert(cache:put("k", "v"))
      assert.are.equal("v", cache:get("k"))
      cache:close()                                   -- frees every item; reopens empty
      assert.is_nil(cache:get("k"))
      assert(cache:put("k", "w"))
      assert.are.equal("w", cache:get("k"))
      assert(cache:put("short", "v", 0.001))
      assert.are.equal("v", cache:get("short"))
      local t0 = os.clock()
      repeat local _ = 1 until os.clock() - t0 > 0.1
      assert.is_nil(cache:get("short"))
    end)

    -- A read of an item that never expires, after a get that found it,
    -- is a hit without a call (the first get, by key, moved it to the
    -- newest end): the hit marks it, and eviction moves a marked item to
    -- the newest end instead of evicting it (a second chance). Among items all hit that way, the
    -- one that moved least recently goes first, whatever order they were
    -- hit in (README, "LuaJIT").
    it("keeps an item hit without a call over those not read since", function()
      local cache = memory({ max_items = 3 })
      for i = 1, 3 do assert(cache:forever("k" .. i, "v" .. i)) end
      for i = 1, 3 do assert.are.equal("v" .. i, cache:get("k" .. i)) end
      assert.are.equal("v1", cache:get("k1"))
      assert(cache:put("k4", "v4"))
      assert.is_nil(cache:get("k2"))
      for _, i in ipairs({ 1, 3, 4 }) do assert.are.equal("v" .. i, cache:get("k" .. i)) end
    end)

    it("gives items all hit without a call a second chance, in the order they last moved", function()
      local cache = memory({ max_items = 3 })
      for i = 1, 3 do assert(cache:forever("k" .. i, "v" .. i)) end
      for i = 1, 3 do assert.are.equal("v" .. i, cache:get("k" .. i)) end
      for _, i in ipairs({ 3, 2, 1 }) do assert.are.equal("v" .. i, cache:get("k" .. i)) end
      assert(cache:put("k4", "v4"))                   -- k1 moved least recently
      assert.is_nil(cache:get("k1"))
      for _, i in ipairs({ 2, 3, 4 }) do assert.are.equal("v" .. i, cache:get("k" .. i)) end
      assert.are.equal(1, cache:stats().evictions)
    end)

    it("evicts a lone item that was hit", function()
      local cache = memory({ max_items = 1 })
      assert(cache:forever("a", "1"))
      assert.are.equal("1", cache:get("a"))
      assert.are.equal("1", cache:get("a"))
      assert(cache:put("b", "2"))
      assert.is_nil(cache:get("a"))
      assert.are.equal("2", cache:get("b"))
      assert(cache:put("c", "3"))
      assert.are.equal("3", cache:get("c"))
      assert.are.equal(2, cache:stats().evictions)
    end)

    it("counts the hit and makes the item the most recently used", function()
      local cache = memory({ max_items = 3 })
      for i = 1, 3 do assert(cache:put("k" .. i, "v" .. i)) end
      for _ = 1, 5 do assert.are.equal("v1", cache:get("k1")) end
      assert(cache:put("k4", "v4"))                   -- evicts k2, not k1
      assert.are.equal("v1", cache:get("k1"))
      assert.is_nil(cache:get("k2"))
      local stats = cache:stats()
      assert.are.equal(6, stats.hits)
      assert.are.equal(1, stats.misses)
      assert.are.equal(1, stats.evictions)
    end)

    it("stays right past the number of values it keeps, and for long values", function()
      local cache = memory()
      for round = 1, 2 do
        for i = 1, 3000 do assert(cache:put("k" .. i, round .. ":" .. i)) end
        for i = 1, 3000 do assert.are.equal(round .. ":" .. i, cache:get("k" .. i)) end
        for i = 1, 3000, 7 do assert.are.equal(round .. ":" .. i, cache:get("k" .. i)) end
      end
      local long = ("x"):rep(5000)
      assert(cache:put("long", long))
      assert.are.equal(long, cache:get("long"))
      assert(handle(cache):put("long", core.encode(("y"):rep(5000)), 0))
      assert.are.equal(("y"):rep(5000), cache:get("long"))
    end)

    it("is per store: two managers do not see each other's items", function()
      local a, b = memory(), memory()
      assert(a:put("k", "a"))
      assert(b:put("k", "b"))
      assert.are.equal("a", a:get("k"))
      assert.are.equal("b", b:get("k"))
      assert(a:forget("k"))
      assert.is_nil(a:get("k"))
      assert.are.equal("b", b:get("k"))
    end)
  end)

  describe("decorator", function()
    it("keys a call as the C path does", function()
      local cache = memory()
      local calls = 0
      local f = cache(function(...) calls = calls + 1 return select("#", ...), ... end, { key = "f" })
      local argsets = {
        { n = 0 }, { n = 1, 1 }, { n = 1, 1.5 }, { n = 1, -0.0 }, { n = 1, 2 ^ 63 },
        { n = 1, 0 / 0 }, { n = 1, "s" }, { n = 1, "" }, { n = 2, true, false }, { n = 2, nil, 1 },
        { n = 2, 1, nil }, { n = 4, "a", 2, true, nil }, { n = 5, 1, 2, 3, 4, 5 },
        { n = 1, { x = 1 } },
      }
      for i, args in ipairs(argsets) do
        f(unpack(args, 1, args.n))
        local key = assert(core.args_key("f", unpack(args, 1, args.n)))
        assert(handle(cache):get(key), "set #" .. i .. " is not under the C path's key")
        assert.are.equal(i, calls)
        local r = pack(f(unpack(args, 1, args.n)))
        assert.are.equal(i, calls, "set #" .. i .. " missed")
        assert.are.equal(args.n, r[1])
        assert.are.equal(args.n + 1, r.n)
      end
    end)

    it("returns every result as the C decoder reads them", function()
      local cache = memory()
      local results = {
        { n = 0 }, { n = 1, nil }, { n = 1, "a" }, { n = 2, "a", nil }, { n = 3, "x", nil, "b" },
        { n = 3, 1, -1, 200 }, { n = 3, 1.5, true, false }, { n = 2, ("s"):rep(40), ("t"):rep(300) },
        { n = 4, 1, 2, 3, 4 }, { n = 2, { x = 1 }, "y" }, { n = 1, 2 ^ 40 }, { n = 1, -100000 },
      }
      for i, r in ipairs(results) do
        local calls = 0
        local f = cache(function() calls = calls + 1 return unpack(r, 1, r.n) end, { key = "r" .. i })
        local first = pack(f())
        local again = pack(f())
        assert.are.equal(1, calls, "results #" .. i .. " missed")
        assert.are.same(r, first)
        assert.are.same(r, again)
      end
    end)

    it("sees its entry rewritten or removed, and its lifetime end", function()
      local cache = memory()
      local calls = 0
      local f = cache(function(a, b) calls = calls + 1 return "r" .. calls, b end, { key = "t" })
      assert.are.same({ "r1", "u" }, { f(1, "u") })
      assert.are.same({ "r1", "u" }, { f(1, "u") })
      assert.are.same({ "r1", "u" }, { f(1.0, "u") })      -- one key, as in the C path
      local key = assert(core.args_key("t", 1, "u"))
      assert(handle(cache):put(key, core.encode_tuple(2, "r9", "w"), 0))   -- same size, in place
      assert.are.same({ "r9", "w" }, { f(1, "u") })
      assert(handle(cache):forget(key))
      assert.are.same({ "r2", "u" }, { f(1, "u") })
      assert.are.equal(2, calls)
      assert.are.same({ "r3", "u" }, { f("1", "u") })      -- a string is another argument
      assert.are.same({ "r4" }, { f(nil, nil) })
      assert.are.same({ "r4" }, { f(nil, nil) })
      assert.are.same({ "r5", false }, { f(true, false) })
      assert.are.same({ "r5", false }, { f(true, false) })
      assert.are.equal(5, calls)
      local g = cache(function(a, b) return "g", b end, { key = "t2" })
      assert.are.same({ "g", "u" }, { g(1, "u") })          -- another prefix, same arguments
      assert.are.same({ "r2", "u" }, { f(1, "u") })
      local short = cache(function() calls = calls + 1 return calls end, { key = "s", minutes = 0.001 })
      local first = short()
      assert.are.equal(first, short())
      local t0 = os.clock()
      repeat local _ = 1 until os.clock() - t0 > 0.1
      assert.are.equal(first + 1, short())
    end)

    it("hands out fresh tables and counts its hits", function()
      local cache = memory()
      local f = cache(function(a) return { a = a }, "s" end, { key = "tbl" })
      local t = f(1)
      t.a = "changed"
      assert.are.same({ { a = 1 }, "s" }, { f(1) })
      assert.are.same({ { a = 1 }, "s" }, { f(1) })
      local hits = cache:stats().hits
      local g = cache(function(a) return a * 2 end, { key = "dbl" })
      for _ = 1, 10 do assert.are.equal(4, g(2)) end
      assert.are.equal(hits + 9, cache:stats().hits)
    end)

    it("calls the function when the stored results cannot be decoded", function()
      local errors = {}
      local cache = cachy.new({ stores = { main = { driver = "memory" } },
        on_error = function(err) errors[#errors + 1] = err end })
      local calls = 0
      local f = cache(function(a) calls = calls + 1 return a end, { key = "c" })
      local key = assert(core.args_key("c", 7))
      assert(handle(cache):put(key, "\146\1", 0))     -- an array of 2 holding 1 value
      assert.are.equal(7, f(7))
      assert.are.equal(1, calls)
      assert.are.equal(1, #errors)
      assert.matches("value of key 'c:%x+' cannot be decoded: not a cachy value", errors[1])
    end)
  end)

  it("compiles the hit loops without a trace abort", function()
    local jutil, vmdef = require("jit.util"), require("jit.vmdef")
    -- Where the recorder started decides these, not what the loop calls:
    -- LuaJIT drops the attempt and records again from a better start.
    local RETRIED = {}
    for i, why in pairs(vmdef.traceerr) do
      if why == "inner loop in root trace" or why == "leaving loop in root trace"
        or why == "loop unroll limit reached" then RETRIED[i] = true end
    end
    local cache = memory()
    local keys = {}
    for i = 1, 100 do
      keys[i] = "k" .. i
      assert(cache:put(keys[i], ("v"):rep(100), 60))
    end
    local f = cache(function(a, b) return "result", b end, { key = "loop" })
    for i = 1, 100 do f(i, "user") end
    local loops = {
      get = function() for i = 1, 20000 do cache:get(keys[i % 100 + 1]) end end,
      put = function() for i = 1, 20000 do cache:put(keys[i % 100 + 1], "value", 60) end end,
      decorator = function() for i = 1, 20000 do f(i % 100 + 1, "user") end end,
    }
    for name, loop in pairs(loops) do
      local traces, aborts = 0, {}
      local function watch(what, _, func, pc, otr, oex)
        if what == "stop" then
          traces = traces + 1
        elseif what == "abort" and not RETRIED[otr] then
          local why = vmdef.traceerr[otr] or tostring(otr)
          if oex ~= nil then why = why:format(tostring(oex)) end
          aborts[#aborts + 1] = why .. " at " .. tostring(jutil.funcinfo(func, pc).loc)
        end
      end
      jit.flush()
      jit.attach(watch, "trace")
      for _ = 1, 3 do loop() end
      jit.attach(watch)
      assert.are.same({}, aborts, name)
      assert(traces >= 1, name .. ": no trace")
    end
  end)
end)
