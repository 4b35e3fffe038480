-- spec/28-flight_spec.lua: single flight, flexible and the stale values of
-- SPEC section 12 on every store (memory, file, Redis, Memcached, a store
-- written in Lua): coroutines of one process missing one key run its
-- function once, through a sleep that yields; lock = false, a wait that
-- runs out, a runner that fails; flexible's fresh, stale and expired
-- values; stale_if_error, neg_minutes, the decorator's minutes function and
-- should_cache, invalidate and refresh, stats. The stores that processes
-- share also run 5 processes missing one key with a 0.6 s function (once:
-- Lua 5.4 on the plain build, see util.runs_slow_cases).
local cachy = require("cachy")
local servers = require("helpers.servers")
local luastore = require("helpers.luastore")
local util = require("helpers.util")
local system = require("system")

local tmp = os.getenv("CACHY_TMP") or "/tmp"
local SLOW = util.runs_slow_cases()
local q, pack, counted = util.q, util.pack, util.counted
local unpack = table.unpack or unpack
-- a pcall whose function may yield, on PUC Lua 5.1 too
local ypcall = require("cachy.compat").pcall

-- Minutes from seconds: the API's lifetimes are minutes.
local function s(seconds) return seconds / 60 end

local serial = 0
local function fresh(what)
  serial = serial + 1
  return string.format("%s:%d:%d:%d", what, serial, os.time(), math.random(1e6))
end

-- Runs the coroutines round-robin, `tick` seconds apart, until all have
-- ended: what each returned. A coroutine that raises fails the case.
local function drive(fns, tick)
  local cos, out, alive = {}, {}, #fns
  for i, fn in ipairs(fns) do cos[i] = coroutine.create(fn) end
  local rounds = 0
  while alive > 0 do
    for i, co in ipairs(cos) do
      if coroutine.status(co) ~= "dead" then
        local r = pack(coroutine.resume(co))
        assert(r[1], r[2])
        if coroutine.status(co) == "dead" then
          out[i] = pack(unpack(r, 2, r.n))
          alive = alive - 1
        end
      end
    end
    rounds = rounds + 1
    assert(rounds < 200000, "coroutines did not finish")
    if tick then system.sleep(tick) end
  end
  return out
end

-- n copies of fn.
local function times(n, fn)
  local out = {}
  for i = 1, n do out[i] = function() return fn(i) end end
  return out
end

-- A function that yields `steps` times (work that waits), then returns the
-- results of impl(call number); c.calls counts its calls.
local function slow(steps, impl)
  local c
  c = counted(function(...)
    local n = c.calls
    for _ = 1, steps do coroutine.yield() end
    return impl(n, ...)
  end)
  return c
end

-- The sleep of a scheduler: gives the other coroutines their turn.
local function yielding_sleep() coroutine.yield() end

-- A store written in Lua over a file store's directory, so that processes
-- share it; lock releases through forget_if.
local function file_backed(dir)
  return function()
    local inner = cachy.new({ stores = { f = { driver = "file", path = dir } } })
    local h = inner:store("f"):_store()
    local st = { inner = inner }
    function st.get(_, key) return h:get(key) end
    function st.put(_, key, bytes, seconds) return h:put(key, bytes, seconds * 1000) end
    function st.add(_, key, bytes, seconds) return h:add(key, bytes, seconds * 1000) end
    function st.forget(_, key) return h:forget(key) end
    function st.increment(_, key, n) return h:incr(key, n, key, "increment") end
    function st.flush() return h:flush() end
    function st.forget_if(_, key, bytes) return h:forget_if(key, bytes) end
    return st
  end
end

-- ---- the cases every store runs ---------------------------------------------------

-- kind: { make(config) -> manager with store "main" (config: top-level
-- fields), backend (a helpers.luastore backend, for the Lua store), raw(cache,
-- key) -> the bytes stored, whole_seconds (memcached: a lifetime ends
-- within a second of its time, so the cases that wait for a plain item
-- to expire wait 2.1 s there, and run once) }
local function flight_cases(kind)
  local short, after = 0.1, 0.15
  local expiring = it
  if kind.whole_seconds then
    short, after = 1, 2.1
    if not SLOW then expiring = function() end end
  end

  local function make(config)
    config = config or {}
    config.prefix = fresh("flight") .. ":"
    return kind.make(config)
  end

  describe("single flight among coroutines", function()
    local cases = {
      remember = function(c, f) return c:remember("k", 10, f) end,
      remember_forever = function(c, f) return c:remember_forever("k", f) end,
      flexible = function(c, f) return c:flexible("k", { 5, 10 }, f) end,
      ["a decorated function"] = function(c, f)
        return c(f, { key = "deco" })(7)
      end,
    }
    for name, call in pairs(cases) do
      it(name .. ": 5 coroutines missing one key run the function once and all get its value", function()
        local cache = make({ sleep = yielding_sleep })
        local f = slow(20, function(n, ...) return { n = n, args = { ... } } end)
        local decorated = name == "a decorated function"
        local wrapped
        if decorated then wrapped = cache(f.fn, { key = "deco" }) end
        local out = drive(times(5, function()
          if decorated then return wrapped(7) end
          return call(cache, f.fn)
        end))
        assert.are.equal(1, f.calls)
        local want = { n = 1, args = decorated and { 7 } or {} }
        for i = 1, 5 do assert.are.same({ n = 1, want }, out[i]) end
        -- each caller has its own copy
        assert.are_not.equal(out[1][1], out[2][1])
        assert.are.equal(4, cache:stats().lock_waits)
        cache:close()
      end)
    end

    it("lock = false: every caller computes (as an option and in the config)", function()
      local cache = make({ sleep = yielding_sleep })
      local f = slow(5, function(n) return "v" .. n end)
      drive(times(3, function() return cache:remember("k", 10, f.fn, { lock = false }) end))
      assert.are.equal(3, f.calls)
      local w = cache(f.fn, { key = "nolock", lock = false })
      drive(times(3, function() return w(1) end))
      assert.are.equal(6, f.calls)
      cache:close()
      cache = make({ sleep = yielding_sleep, lock = false })
      drive(times(3, function() return cache:remember("k", 10, f.fn) end))
      assert.are.equal(9, f.calls)
      assert.are.equal(0, cache:stats().lock_waits)
      cache:close()
    end)

    it("a waiter whose wait runs out computes itself", function()
      local cache = make({ sleep = yielding_sleep })
      local release = false
      local f
      f = counted(function()
        if f.calls == 1 then
          while not release do coroutine.yield() end
          return "runner"
        end
        return "waiter"
      end)
      local start = system.monotime()
      local out = drive({
        function() return cache:remember("k", 10, f.fn) end,
        function()
          local v = cache:remember("k", 10, f.fn, { wait = 0.05 })
          release = true
          return v, system.monotime() - start
        end,
      }, 0.001)
      assert.are.equal(2, f.calls)
      assert.are.equal("runner", out[1][1])
      assert.are.equal("waiter", out[2][1])
      assert.is_true(out[2][2] >= 0.045, "waited " .. out[2][2])
      cache:close()
    end)

    it("a runner that returns nil, err lets the waiters compute", function()
      local cache = make({ sleep = yielding_sleep })
      local f = slow(10, function(n)
        if n == 1 then return nil, "db down" end
        return "v" .. n
      end)
      local out = drive(times(5, function() return cache:remember("k", 10, f.fn) end))
      assert.are.equal(2, f.calls)
      assert.are.same({ n = 2, nil, "db down" }, out[1])
      for i = 2, 5 do assert.are.same({ n = 1, "v2" }, out[i]) end
      cache:close()
    end)

    it("a runner that raises lets the waiters compute, and its caller gets the error", function()
      local cache = make({ sleep = yielding_sleep })
      local boom = { "boom" }
      local f = slow(10, function(n)
        if n == 1 then error(boom) end
        return "v" .. n
      end)
      local w = cache(f.fn, { key = "raising" })
      local out = drive(times(5, function()
        local ok, v = ypcall(w, 1)
        if ok then return v end
        return "raised", v
      end))
      assert.are.equal(2, f.calls)
      assert.are.equal("raised", out[1][1])
      assert.are.equal(boom, out[1][2])
      for i = 2, 5 do assert.are.same({ n = 1, "v2" }, out[i]) end
      -- the same with remember
      f = slow(10, function(n)
        if n == 1 then error(boom) end
        return "r" .. n
      end)
      out = drive(times(3, function()
        local ok, v = ypcall(cache.remember, cache, "r", 10, f.fn)
        if ok then return v end
        return "raised", v
      end))
      assert.are.equal(2, f.calls)
      assert.are.same({ n = 2, "raised", boom }, out[1])
      assert.are.same({ n = 1, "r2" }, out[2])
      cache:close()
    end)

    it("a decorated recursive function whose error is caught inside leaves no flight behind", function()
      local cache = make({ sleep = yielding_sleep, wait = 0.5 })
      local down
      down = cache(function(n)
        if n == 0 then error("bottom") end
        if n == 3 then
          local ok, err = pcall(down, n - 1)
          return ok and "no error" or ("caught: " .. tostring(err):match("bottom"))
        end
        return down(n - 1)
      end, { key = "down" })
      -- the levels the error unwound (2, 1, 0) are not left computing: while
      -- the coroutine that ran them lives on, another one calling them runs
      -- at once instead of waiting for them
      local done = false
      local out = drive({
        function()
          local v = down(6)
          while not done do coroutine.yield() end
          return v
        end,
        function()
          local t = system.monotime()
          local ok = pcall(down, 2)
          done = true
          return ok, system.monotime() - t
        end,
      }, 0.001)
      assert.are.equal("caught: bottom", out[1][1])
      assert.are.equal(false, out[2][1])
      assert.is_true(out[2][2] < 0.25, "waited " .. out[2][2])
      assert.are.equal(0, cache:stats().lock_waits)
      cache:close()
    end)
  end)

  describe("flexible", function()
    it("answers fresh, then stale while one refresh runs, then computes once the stale window is over", function()
      local cache = make()
      local f_n
      local f = counted(function() return "v" .. f_n end)
      f_n = 1
      assert.are.equal("v1", cache:flexible("f", { s(0.2), s(0.5) }, f.fn))
      f_n = 2
      assert.are.equal("v1", cache:flexible("f", { s(0.2), s(0.5) }, f.fn))
      assert.are.equal(1, f.calls)
      system.sleep(0.25)
      -- stale: the stale value, and the refresh ran in this call
      assert.are.equal("v1", cache:flexible("f", { s(0.2), s(0.5) }, f.fn))
      assert.are.equal(2, f.calls)
      f_n = 3
      assert.are.equal("v2", cache:flexible("f", { s(0.2), s(0.5) }, f.fn))
      assert.are.equal(2, f.calls)
      assert.are.equal("v2", cache:get("f"))       -- other methods see it while it is visible
      system.sleep(0.55)
      assert.is_nil(cache:get("f"))                -- past the stale window: expired everywhere
      assert.are.equal(false, cache:has("f"))
      assert.are.equal("v3", cache:flexible("f", { s(0.2), s(0.5) }, f.fn))
      assert.are.equal(3, f.calls)
      local st = cache:stats()
      assert.are.equal(1, st.stale)
      assert.are.equal(1, st.refreshes)
      cache:close()
    end)

    it("hands the refresh to the config's defer", function()
      local jobs = {}
      local cache = make({ defer = function(job) jobs[#jobs + 1] = job end })
      local n = 0
      local f = function() n = n + 1 return "v" .. n end
      assert.are.equal("v1", cache:flexible("f", { s(0.1), 10 }, f))
      system.sleep(0.15)
      assert.are.equal("v1", cache:flexible("f", { s(0.1), 10 }, f))
      assert.are.equal("v1", cache:flexible("f", { s(0.1), 10 }, f))   -- one refresh at a time
      assert.are.equal(1, #jobs)
      assert.are.equal(1, n)
      jobs[1]()
      assert.are.equal(2, n)
      assert.are.equal("v2", cache:flexible("f", { s(0.1), 10 }, f))
      cache:close()
    end)

    it("a cold miss is computed once among coroutines; forget removes all of it", function()
      local cache = make({ sleep = yielding_sleep })
      local f = slow(10, function(n) return "v" .. n end)
      local out = drive(times(4, function() return cache:flexible("f", { 1, 2 }, f.fn) end))
      assert.are.equal(1, f.calls)
      for i = 1, 4 do assert.are.same({ n = 1, "v1" }, out[i]) end
      assert.are.equal(true, cache:forget("f"))
      assert.are.equal(false, cache:has("f"))
      assert.are.equal(false, cache:forget("f"))
      if kind.backend then
        for _, k in ipairs(kind.backend:keys()) do
          assert.are_not.equal(cache._ms.prefix, k:sub(1, #cache._ms.prefix), "left behind: " .. k)
        end
      end
      cache:close()
    end)

    it("raises for a bad pair or option", function()
      local cache = make()
      assert.has_error(function() cache:flexible("f", 5, print) end,
        "bad argument #2 to 'flexible' ({ fresh, stale } expected, got number)")
      assert.has_error(function() cache:flexible("f", { 10, 5 }, print) end,
        "bad argument #2 to 'flexible' (the fresh lifetime must not be longer than the stale one)")
      assert.has_error(function() cache:flexible("f", { 1, 5 }, print, { neg_minutes = 1 }) end,
        "bad argument #4 to 'flexible' (unknown option 'neg_minutes')")
      cache:close()
    end)
  end)

  describe("stale_if_error", function()
    it("remember: a failing function gets the value that expired at most that long ago, with the error", function()
      local cache = make()
      local opts = { stale_if_error = s(0.5) }
      assert.are.equal("old", cache:remember("s", s(0.1), function() return "old" end, opts))
      system.sleep(0.15)
      assert.is_nil(cache:get("s"))                -- expired for every other method
      assert.are.equal(false, cache:has("s"))
      assert.are.same({ n = 2, "old", "db down" },
        pack(cache:remember("s", s(0.1), function() return nil, "db down" end, opts)))
      local boom = { "boom" }
      assert.are.same({ n = 2, "old", boom }, pack(cache:remember("s", s(0.1), function() error(boom) end, opts)))
      -- without the option the failure is the caller's
      assert.are.same({ n = 2, nil, "db down" },
        pack(cache:remember("s", s(0.1), function() return nil, "db down" end)))
      system.sleep(0.5)
      assert.are.same({ n = 2, nil, "db down" },
        pack(cache:remember("s", s(0.1), function() return nil, "db down" end, opts)))
      assert.are.equal(2, cache:stats().stale)
      cache:close()
    end)

    it("flexible and the decorator serve it too; forget removes it", function()
      local cache = make()
      local opts = { stale_if_error = 1 }
      assert.are.equal("f1", cache:flexible("f", { s(0.05), s(0.1) }, function() return "f1" end, opts))
      local fails = true
      local w = cache(function(id)
        if fails and id == "x" then return nil, "down" end
        return id, "second"
      end, { key = "sie", minutes = s(0.1), stale_if_error = 1 })
      fails = false
      assert.are.same({ n = 2, "x", "second" }, pack(w("x")))
      fails = true
      system.sleep(0.15)
      assert.are.same({ n = 2, "f1", "down" },
        pack(cache:flexible("f", { s(0.05), s(0.1) }, function() return nil, "down" end, opts)))
      -- the cached results, then the error
      assert.are.same({ n = 3, "x", "second", "down" }, pack(w("x")))
      assert.are.equal(true, cache:invalidate(w, "x"))
      assert.are.same({ n = 2, nil, "down" }, pack(w("x")))
      assert.are.equal(true, cache:forget("f"))
      assert.are.same({ n = 2, nil, "down" },
        pack(cache:flexible("f", { s(0.05), s(0.1) }, function() return nil, "down" end, opts)))
      cache:close()
    end)
  end)

  describe("neg_minutes", function()
    it("remember caches a nil result that long; other methods see nothing", function()
      local cache = make()
      local f = counted(function() return nil end)
      local opts = { neg_minutes = s(0.2) }
      assert.are.same({ n = 1 }, pack(cache:remember("n", 10, f.fn, opts)))
      assert.are.same({ n = 1 }, pack(cache:remember("n", 10, f.fn, opts)))
      assert.are.equal(1, f.calls)
      assert.are.equal(false, cache:has("n"))
      assert.are.equal("d", cache:get("n", "d"))
      system.sleep(0.25)
      assert.is_nil(cache:remember("n", 10, f.fn, opts))
      assert.are.equal(2, f.calls)
      -- without it, a nil is not cached
      cache:remember("m", 10, f.fn)
      cache:remember("m", 10, f.fn)
      assert.are.equal(4, f.calls)
      cache:close()
    end)

    expiring("the decorator caches a nil result for its own lifetime", function()
      local cache = make()
      local f = counted(function(id) if id == 0 then return nil end return id end)
      local w = cache(f.fn, { key = "neg", minutes = 10, neg_minutes = s(short) })
      assert.is_nil(w(0))
      assert.are.equal(1, w(1))
      assert.is_nil(w(0))
      assert.are.equal(1, w(1))
      assert.are.equal(2, f.calls)
      system.sleep(after)
      assert.is_nil(w(0))
      assert.are.equal(1, w(1))
      assert.are.equal(3, f.calls)
      cache:close()
    end)
  end)

  describe("the decorator's options", function()
    expiring("minutes as a function of the results", function()
      local cache = make()
      local f = counted(function(id) return id end)
      local w = cache(f.fn, { key = "mf", minutes = function(v) return v == "short" and s(short) or 10 end })
      w("short")
      w("long")
      w("short")
      w("long")
      assert.are.equal(2, f.calls)
      system.sleep(after)
      w("short")
      w("long")
      assert.are.equal(3, f.calls)
      local bad = cache(function() return 1 end, { key = "mfbad", minutes = function() return "soon" end })
      assert.has_error(function() bad() end,
        "cache: option 'minutes' returned a bad lifetime: ttl must be a number of minutes or a date table, got string (in 'mfbad')")
      cache:close()
    end)

    it("an option's function that raises leaves no flight behind", function()
      local cache = make({ sleep = yielding_sleep, wait = 0.5 })
      local bad = true
      local w = cache(function() return 1 end, { key = "ask", should_cache = function()
        if bad then error("nope", 0) end
        return true
      end })
      local done = false
      local out = drive({
        function()
          local ok, err = ypcall(w)
          while not done do coroutine.yield() end
          return ok, err
        end,
        function()
          coroutine.yield()
          bad = false
          local t = system.monotime()
          local v = w()
          done = true
          return v, system.monotime() - t
        end,
      }, 0.001)
      assert.are.same({ n = 2, false, "nope" }, out[1])
      assert.are.equal(1, out[2][1])
      assert.is_true(out[2][2] < 0.25, "waited " .. out[2][2])
      cache:close()
    end)

    it("should_cache decides from the results", function()
      local cache = make()
      local f = counted(function(id) return id, id > 0 end)
      local w = cache(f.fn, { key = "sc", should_cache = function(_, ok) return ok end })
      assert.are.same({ n = 2, 1, true }, pack(w(1)))
      assert.are.same({ n = 2, 1, true }, pack(w(1)))
      assert.are.same({ n = 2, -1, false }, pack(w(-1)))
      assert.are.same({ n = 2, -1, false }, pack(w(-1)))
      assert.are.equal(3, f.calls)
      assert.has_error(function() cache(print, { should_cache = 1 }) end,
        "cache: option 'should_cache' must be a function, got number")
      assert.has_error(function() cache(print, { wait = -1 }) end,
        "cache: option 'wait' must be a number of seconds from 0, got -1")
      cache:close()
    end)
  end)

  describe("invalidate and refresh", function()
    it("forget one call's results, or compute and store them now", function()
      local cache = make()
      local n = 0
      local f = function(id) n = n + 1 return id .. n end
      local w = cache(f, { key = "ir" })
      assert.are.equal("a1", w("a"))
      assert.are.equal("b2", w("b"))
      assert.are.equal(true, cache:invalidate(w, "a"))
      assert.are.equal(false, cache:invalidate(w, "a"))
      assert.are.equal("a3", w("a"))
      assert.are.equal("b2", w("b"))
      assert.are.equal("b4", cache:refresh(w, "b"))
      assert.are.equal("b4", w("b"))
      assert.are.equal(4, n)
      assert.are.equal(1, cache:stats().refreshes)
      assert.has_error(function() cache:invalidate(f, "a") end,
        "bad argument #1 to 'invalidate' (a function decorated by this cache expected, got function)")
      assert.has_error(function() cache:refresh(w, print) end,
        "bad argument #2 to 'refresh' (it is a function)")
      cache:close()
    end)
  end)

  describe("stats", function()
    it("count this process's hits, misses, writes, stale answers and lock waits", function()
      local cache = make()
      assert.are.equal("v", cache:remember("a", 10, function() return "v" end))   -- miss, write
      assert.are.equal("v", cache:remember("a", 10, function() return "w" end))   -- hit
      assert.are.equal("v", cache:get("a"))                                         -- hit
      assert.is_nil(cache:get("b"))                                                 -- miss
      assert.are.equal(true, cache:put("c", 1))                                     -- write
      assert.are.same({ c = 1 }, cache:many({ "c", "d" }))                          -- hit, miss
      local w = cache(function(x) return x end, { key = "st" })
      w(1)                                                                          -- miss, write
      w(1)                                                                          -- hit
      assert.are.equal(1, cache:tags("t"):increment("n"))                           -- write
      local st = cache:stats()
      assert.are.equal(4, st.hits)
      assert.are.equal(4, st.misses)
      assert.are.equal(4, st.writes)
      assert.are.equal(0, st.errors)
      assert.are.equal(0, st.stale)
      assert.are.equal(0, st.lock_waits)
      assert.are.same(st, cache:store("main"):stats())
      cache:close()
    end)
  end)

  describe("values kept plain", function()
    it("remember without a stale window writes what put writes; flexible writes the documented envelope", function()
      local cache = make()
      local raw = kind.raw
      if raw == nil then return end
      cache:put("p", { 1, "x" }, 10)
      cache:remember("r", 10, function() return { 1, "x" } end)
      assert.are.equal(raw(cache, "p"), raw(cache, "r"))
      cache:flexible("f", { 1, 2 }, function() return { 1, "x" } end)
      local bytes = raw(cache, "f")
      local before = os.time() * 1000
      assert.are.equal("\193\1v", bytes:sub(1, 3))
      local function be64(at)
        local v = 0
        for i = at, at + 7 do v = v * 256 + bytes:byte(i) end
        return v
      end
      local fresh_until, visible_until = be64(4), be64(12)
      assert.is_true(math.abs(fresh_until - (before + 60000)) < 3000, "fresh until " .. fresh_until)
      assert.is_true(math.abs(visible_until - (before + 120000)) < 3000, "visible until " .. visible_until)
      assert.are.equal(raw(cache, "p"), bytes:sub(20))
      cache:close()
    end)
  end)
end

-- ---- processes ---------------------------------------------------------------------------

-- 5 processes (forked; each makes its own manager with config()) miss one
-- key at once; `call(cache, fn)` runs fn, which takes `seconds` and counts
-- its runs in a file. The run count and what each process got.
local function race(config, call, seconds, n)
  local process = require("spec_process")
  local dir = string.format("%s/flight-race-%d-%d", tmp, os.time(), math.random(1e9))
  assert(os.execute("mkdir -p " .. q(dir)))
  local pids = {}
  for id = 1, n or 5 do
    local pid = process.fork()
    if pid == 0 then
      local ok = pcall(function()
        local cache = cachy.new({ prefix = config.prefix, stores = { main = config.store() } })
        while not util.exists(dir .. "/go") do system.sleep(0.001) end
        local v, err = call(cache, function()
          local f = io.open(dir .. "/runs", "a")
          f:write(id, "\n")
          f:close()
          system.sleep(seconds)
          return "from " .. id
        end, id)
        util.writefile(dir .. "/got." .. id, tostring(v) .. " " .. tostring(err))
      end)
      process.exit(ok and 0 or 1)
    end
    pids[id] = pid
  end
  system.sleep(0.05)
  util.writefile(dir .. "/go", "")
  for id = 1, n or 5 do assert.are.equal(0, process.wait(pids[id])) end
  local runs = 0
  for _ in io.lines(dir .. "/runs") do runs = runs + 1 end
  local got = {}
  for id = 1, n or 5 do got[id] = util.readfile(dir .. "/got." .. id) end
  os.execute("rm -rf " .. q(dir))
  return runs, got
end

local function process_cases(store)
  local function config()
    return { prefix = fresh("race") .. ":", store = store }
  end

  it("5 processes missing one key with a 0.6 s function: it runs once, all get its value", function()
    local runs, got = race(config(), function(c, fn) return c:remember("k", 10, fn) end, 0.6)
    assert.are.equal(1, runs)
    for id = 2, 5 do assert.are.equal(got[1], got[id]) end
    assert.matches("^from %d nil$", got[1])
    runs, got = race(config(), function(c, fn) return c(fn, { key = "race" })() end, 0.6)
    assert.are.equal(1, runs)
    for id = 2, 5 do assert.are.equal(got[1], got[id]) end
  end)

  it("a process whose wait runs out computes itself; lock = false: every process computes", function()
    local runs = race(config(), function(c, fn, id)
      if id == 2 then system.sleep(0.1) end
      return c:remember("k", 10, fn, { wait = 0.2 })
    end, 0.6, 2)
    assert.are.equal(2, runs)
    runs = race(config(), function(c, fn) return c:remember("k", 10, fn, { lock = false }) end, 0.3, 3)
    assert.are.equal(3, runs)
  end)

  it("a runner that fails lets a waiting process compute", function()
    local runs, got = race(config(), function(c, fn, id)
      if id == 2 then
        system.sleep(0.1)
        return c:remember("k", 10, fn)
      end
      return c:remember("k", 10, function()
        fn()
        return nil, "down"
      end)
    end, 0.3, 2)
    assert.are.equal(2, runs)
    assert.are.equal("nil down", got[1])
    assert.are.equal("from 2 nil", got[2])
  end)
end

-- ---- the stores ---------------------------------------------------------------------------

local function manager(store, config)
  config.stores = { main = store }
  return cachy.new(config)
end

describe("single flight and stale values", function()
  it("take lock, wait and defer in the config, checked there", function()
    local function raises(config, msg)
      local ok, err = pcall(cachy.new, config)
      assert.is_false(ok)
      assert.are.equal("cachy.new: " .. msg, err)
    end
    raises({ wait = -1 }, "config.wait must be a number of seconds from 0, got -1")
    raises({ lock = "yes" }, "config.lock must be a boolean, got string")
    raises({ defer = true }, "config.defer must be a function, got boolean")
    raises({ stores = { m = { driver = "memory", wait = 0 / 0 } } },
      "store 'm' field 'wait' must be a number of seconds from 0, got " .. tostring(0 / 0))
    local c = cachy.new({ lock = false, wait = 1, defer = print, stores = { m = { driver = "memory", wait = 2 } } })
    c:close()
  end)

  describe("on the memory store", function()
    flight_cases({ make = function(config) return manager({ driver = "memory" }, config) end })
  end)

  describe("on the file store", function()
    local dir = string.format("%s/flight-file-%d-%d", tmp, os.time(), math.random(1e9))
    local function store() return { driver = "file", path = dir } end
    flight_cases({ make = function(config) return manager(store(), config) end })
    if SLOW then process_cases(store) end
    teardown(function() os.execute("rm -rf " .. q(dir)) end)
  end)

  describe("on redis", function()
    local srv
    lazy_setup(function() srv = servers.start("redis") end)
    lazy_teardown(function() srv:stop() end)
    local function store() return { driver = "redis", port = srv.port } end
    flight_cases({
      make = function(config) return manager(store(), config) end,
      raw = function(cache, key)
        local out = util.sh(string.format("redis-cli -p %d --raw GET %s", srv.port, q(cache._ms.prefix .. key)))
        return out:sub(1, -2)
      end,
    })
    if SLOW then process_cases(store) end
  end)

  describe("on memcached", function()
    local srv
    lazy_setup(function() srv = servers.start("memcached") end)
    lazy_teardown(function() srv:stop() end)
    local function store() return { driver = "memcached", servers = { "127.0.0.1:" .. srv.port } } end
    flight_cases({ make = function(config) return manager(store(), config) end, whole_seconds = true })
    if SLOW then process_cases(store) end
  end)

  describe("on a store written in Lua", function()
    local backend = luastore.new({ locks = true })
    flight_cases({
      backend = backend,
      make = function(config)
        local c = manager({ driver = "luatable" }, config)
        c:extend("luatable", backend:factory())
        return c
      end,
      raw = function(cache, key) return backend.data[cache._ms.prefix .. key] end,
    })
  end)

  if SLOW then
    describe("on a store written in Lua that processes share", function()
      local dir = string.format("%s/flight-lua-%d-%d", tmp, os.time(), math.random(1e9))
      local factory = file_backed(dir)
      local real_new = cachy.new
      process_cases(function() return { driver = "shared_lua" } end)
      -- the forked children register the driver on their own managers
      setup(function()
        cachy.new = function(config)
          local c = real_new(config)
          c:extend("shared_lua", factory)
          return c
        end
      end)
      teardown(function()
        cachy.new = real_new
        os.execute("rm -rf " .. q(dir))
      end)
    end)
  end
end)
