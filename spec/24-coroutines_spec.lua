-- spec/24-coroutines_spec.lua: every function the cache calls for the user
-- may yield (SPEC section 10): remember's and remember_forever's function,
-- a get default, a decorated function, and every method of a store written
-- in Lua. A driver resumes each coroutine by hand and checks that the
-- yields reach it, that the results, what is stored and the errors are
-- exactly those of a run without yields, and that interleaved coroutines
-- each get their own answer. Runs on every store and every Lua.
local cachy = require("cachy")
local util = require("helpers.util")
local servers = require("helpers.servers")
local luastore = require("helpers.luastore")

local pack, counted, assert_strict = util.pack, util.counted, util.assert_strict
local unpack = table.unpack or unpack

-- Runs fn(...) in a coroutine, resuming it until it ends: the values it
-- yielded (the first of each yield), and what resume finally returned
-- (ok flag first).
local function drive(fn, ...)
  local co = coroutine.create(fn)
  local yields = {}
  local r = pack(coroutine.resume(co, ...))
  while coroutine.status(co) ~= "dead" do
    yields[#yields + 1] = r[2]
    r = pack(coroutine.resume(co, "resumed"))
  end
  return yields, r
end

-- Resumes the coroutines round-robin until all are dead; their final
-- resume results, in order.
local function interleave(fns)
  local cos, results, alive = {}, {}, #fns
  for i, fn in ipairs(fns) do cos[i] = coroutine.create(fn) end
  while alive > 0 do
    for i, co in ipairs(cos) do
      if coroutine.status(co) ~= "dead" then
        local r = pack(coroutine.resume(co))
        if coroutine.status(co) == "dead" then
          results[i] = r
          alive = alive - 1
        end
      end
    end
  end
  return results
end

-- A function that yields `mark` `times` times, then returns ...
local function yielding(mark, times, ...)
  local results = pack(...)
  return counted(function()
    for _ = 1, times do
      assert.are.equal("resumed", coroutine.yield(mark))
    end
    return unpack(results, 1, results.n)
  end)
end

-- A store written in Lua whose every method yields "store:<method>"
-- before it does its work.
local function yielding_factory(backend)
  local make = backend:factory()
  return function(config)
    local inner = make(config)
    local proxy = {}
    for _, method in ipairs({ "get", "put", "add", "forget", "increment", "flush", "many", "put_many" }) do
      proxy[method] = function(_, ...)
        coroutine.yield("store:" .. method)
        return inner[method](inner, ...)
      end
    end
    return proxy
  end
end

local file_dir
local redis, memcached

local stores = {
  { label = "memory", config = function() return { driver = "memory" } end },
  { label = "file", config = function() return { driver = "file", path = file_dir } end },
  { label = "redis", config = function() return { driver = "redis", port = redis.port } end },
  { label = "memcached", config = function()
    return { driver = "memcached", servers = { "127.0.0.1:" .. memcached.port } }
  end },
  { label = "lua (every method yields)", lua = true,
    config = function() return { driver = "yielding" } end },
}

describe("coroutines", function()
  setup(function()
    file_dir = (os.getenv("CACHY_TMP") or "/tmp") .. "/coroutines-" .. os.time() .. "-" .. math.random(1e6)
    redis = servers.start("redis")
    memcached = servers.start("memcached")
  end)

  teardown(function()
    if redis then redis:stop() end
    if memcached then memcached:stop() end
    os.execute("rm -rf '" .. file_dir .. "'")
  end)

  for _, s in ipairs(stores) do
    describe("on the " .. s.label .. " store", function()
      local cache, backend

      -- The store's own yields, when it is the Lua store; the rest are the user's.
      local function user_yields(yields)
        local out = {}
        for _, y in ipairs(yields) do
          if not (type(y) == "string" and y:match("^store:")) then out[#out + 1] = y end
        end
        return out
      end

      before_each(function()
        backend = luastore.new()
        cache = cachy.new({ prefix = "co:", stores = { main = s.config() } })
        cache:extend("yielding", yielding_factory(backend))
        local _, r = drive(function() return cache:flush() end)
        assert.are.same({ n = 2, true, true }, r)
      end)

      after_each(function()
        cache:close()
      end)

      it("remember: the function yields, its value is returned and stored", function()
        local f = yielding("fn", 2, { id = 7, tags = { "a" } })
        local yields, r = drive(function() return cache:remember("k", 10, f.fn) end)
        assert.are.same({ "fn", "fn" }, user_yields(yields))
        assert.are.equal(true, r[1])
        assert_strict({ id = 7, tags = { "a" } }, r[2])
        assert.are.equal(2, r.n)
        yields, r = drive(function() return cache:remember("k", 10, f.fn) end)
        assert.are.same({}, user_yields(yields))
        assert_strict({ id = 7, tags = { "a" } }, r[2])
        assert.are.equal(1, f.calls)
        local _, got = drive(function() return cache:get("k") end)
        assert_strict({ id = 7, tags = { "a" } }, got[2])
      end)

      it("remember_forever: the same, stored without expiry", function()
        local f = yielding("fn", 1, false)
        local yields, r = drive(function() return cache:remember_forever("f", f.fn) end)
        assert.are.same({ "fn" }, user_yields(yields))
        assert.are.same({ n = 2, true, false }, r)
        _, r = drive(function() return cache:remember_forever("f", 5, f.fn) end)
        assert.are.same({ n = 2, true, false }, r)
        assert.are.equal(1, f.calls)
      end)

      it("get: a function default yields, its values are returned and not stored", function()
        local f = yielding("default", 1, "d", 2)
        local yields, r = drive(function() return cache:get("missing", f.fn) end)
        assert.are.same({ "default" }, user_yields(yields))
        assert.are.same({ n = 3, true, "d", 2 }, r)
        _, r = drive(function() return cache:has("missing") end)
        assert.are.same({ n = 2, true, false }, r)
        _, r = drive(function() return cache:pull("missing", f.fn) end)
        assert.are.same({ n = 3, true, "d", 2 }, r)
        assert.are.equal(2, f.calls)
      end)

      it("a decorated function yields; all its results are cached", function()
        local f = counted(function(a, b)
          coroutine.yield("decorated")
          return a + b, nil, "third"
        end)
        local add = cache(f.fn, { key = "add" })
        local yields, r = drive(add, 2, 3)
        assert.are.same({ "decorated" }, user_yields(yields))
        assert.are.same({ n = 4, true, 5, nil, "third" }, r)
        yields, r = drive(add, 2, 3)
        assert.are.same({}, user_yields(yields))
        assert.are.same({ n = 4, true, 5, nil, "third" }, r)
        assert.are.equal(1, f.calls)
        _, r = drive(add, 3, 3)
        assert.are.same({ n = 4, true, 6, nil, "third" }, r)
        assert.are.equal(2, f.calls)
      end)

      it("an error raised after a yield propagates, and nothing is stored", function()
        local boom = function()
          coroutine.yield("fn")
          error({ code = 42 })
        end
        local yields, r = drive(function() return cache:remember("e", 10, boom) end)
        assert.are.same({ "fn" }, user_yields(yields))
        assert.are.equal(false, r[1])
        assert.are.same({ code = 42 }, r[2])
        local wrapped = cache(boom, { key = "boom" })
        _, r = drive(wrapped, 1)
        assert.are.equal(false, r[1])
        assert.are.same({ code = 42 }, r[2])
        _, r = drive(function() return cache:get("missing", boom) end)
        assert.are.equal(false, r[1])
        _, r = drive(function() return cache:has("e") end)
        assert.are.same({ n = 2, true, false }, r)
        -- the decorated call stored nothing either: a new call runs the function again
        local calls = 0
        local again = cache(function(x)
          calls = calls + 1
          coroutine.yield("fn")
          if calls == 1 then error("first call fails") end
          return x
        end, { key = "boom2" })
        _, r = drive(again, 1)
        assert.are.equal(false, r[1])
        assert.is_truthy(tostring(r[2]):match("first call fails$"))
        _, r = drive(again, 1)
        assert.are.same({ n = 2, true, 1 }, r)
        assert.are.equal(2, calls)
      end)

      it("nil, err from the function passes through and is not stored", function()
        local f = yielding("fn", 1, nil, "not found")
        local _, r = drive(function() return cache:remember("n", 10, f.fn) end)
        assert.are.same({ n = 3, true, nil, "not found" }, r)
        _, r = drive(function() return cache:remember("n", 10, f.fn) end)
        assert.are.same({ n = 3, true, nil, "not found" }, r)
        assert.are.equal(2, f.calls)
        local g = yielding("fn", 1, nil, "not found")
        local wrapped = cache(g.fn, { key = "nf" })
        _, r = drive(wrapped, 1)
        assert.are.same({ n = 3, true, nil, "not found" }, r)
        _, r = drive(wrapped, 1)
        assert.are.same({ n = 3, true, nil, "not found" }, r)
        assert.are.equal(2, g.calls)
      end)

      it("three interleaved coroutines each get their own value", function()
        local function worker(i)
          return function()
            local v = cache:remember("w" .. i, 10, function()
              coroutine.yield()
              coroutine.yield()
              return { worker = i }
            end)
            local d = cache(function(x)
              coroutine.yield()
              return x * 10 + i
            end, { key = "inter" .. i })(i)
            return v.worker, d, cache:get("w" .. i).worker
          end
        end
        local results = interleave({ worker(1), worker(2), worker(3) })
        for i = 1, 3 do
          assert.are.same({ n = 4, true, i, i * 11, i }, results[i])
        end
      end)

      it("three interleaved adds of one key: exactly one wins", function()
        local function adder(i)
          return function()
            coroutine.yield()
            return cache:add("once", i, 10)
          end
        end
        local results = interleave({ adder(1), adder(2), adder(3) })
        local wins, winner = 0, nil
        for i = 1, 3 do
          assert.are.equal(true, results[i][1])
          if results[i][2] == true then wins, winner = wins + 1, i end
        end
        assert.are.equal(1, wins)
        local _, r = drive(function() return cache:get("once") end)
        assert.are.equal(winner, r[2])
      end)

      if s.lua then
        it("every repository method works while the store's methods yield", function()
          local yields, r = drive(function()
            local out = {}
            out.put = cache:put("a", { 1, 2 }, 10)
            out.get = cache:get("a")
            out.add1 = cache:add("b", "x", 10)
            out.add2 = cache:add("b", "y", 10)
            out.has = cache:has("b")
            out.incr = cache:increment("n", 5)
            out.decr = cache:decrement("n", 2)
            out.put_many = cache:put_many({ p = 1, q = 2 }, 10)
            out.many = cache:many({ "p", "q", "z" })
            out.pull = cache:pull("p")
            out.forget = cache:forget("q")
            out.forever = cache:forever("f", true)
            local t = cache:tags("t1", "t2")
            out.tput = t:put("tk", "tv", 10)
            out.tget = t:get("tk")
            out.tincr = t:increment("tn")
            out.tflush = cache:tags("t2"):flush()
            out.tgone = t:get("tk") == nil
            out.flush = cache:flush()
            out.gone = cache:get("a") == nil
            return out
          end)
          assert.are.equal(true, r[1], tostring(r[2]))
          assert.are.same({
            put = true, get = { 1, 2 }, add1 = true, add2 = false, has = true, incr = 5, decr = 3,
            put_many = true, many = { p = 1, q = 2 }, pull = 1, forget = true, forever = true,
            tput = true, tget = "tv", tincr = 1, tflush = true, tgone = true, flush = true, gone = true,
          }, r[2])
          local seen = {}
          for _, y in ipairs(yields) do seen[y] = true end
          for _, m in ipairs({ "get", "put", "add", "forget", "increment", "flush", "many", "put_many" }) do
            assert.is_true(seen["store:" .. m], "no yield from the store's " .. m)
          end
        end)

        it("a store method failing after its yield gives nil, err, code", function()
          local _, r = drive(function() return cache:put("k", "v") end)
          assert.are.same({ n = 2, true, true }, r)
          backend.fail = "raise"
          _, r = drive(function() return cache:get("k") end)
          assert.are.equal(true, r[1])
          assert.are.equal(4, r.n)
          assert.is_nil(r[2])
          assert.is_truthy(r[3]:match("^store 'main' %(yielding%): .*backend down$"), r[3])
          assert.are.equal("backend", r[4])
          backend.fail = "return"
          _, r = drive(function() return cache:remember("k2", 1, function() return "v2" end) end)
          assert.are.equal("v2", r[2])
          assert.is_truthy(r[3]:match("backend down$"))
          backend.fail = nil
        end)
      end
    end)
  end

  describe("a decorated recursive function", function()
    -- PUC Lua 5.1 stops at 16,384 call frames in all (its frame array
    -- doubles up to the first size past LUAI_MAXCALLS, 20,000; the
    -- undecorated function reaches about 16,300 levels), and each level
    -- takes two: the wrapper and the function. LuaJIT's whole stack is
    -- 65,500 slots (LJ_STACK_MAX): the undecorated function takes 3 a
    -- level (21,800 levels), the wrapper's Lua frames about 13 more, which
    -- leaves 4,000 levels.
    local depth = jit and 4000 or _VERSION == "Lua 5.1" and 7500 or 10000
    it("reaches depth " .. depth .. ", as the undecorated one does", function()
      local cache = cachy.new()
      local down
      down = cache(function(n)
        if n == 0 then return 0 end
        return down(n - 1) + 1
      end, { key = "down" })
      assert.are.equal(depth, down(depth))
      assert.are.equal(depth, down(depth))     -- now from the cache
      cache:close()
    end)
  end)
end)
