-- spec/27-locks_spec.lua: locks (SPEC section 12) on every store: the
-- memory, file, Redis and Memcached stores, stores written in Lua with and
-- without forget_if, and the null store. The same cases run on each; the
-- stores that processes share also race 8 processes for one lock, hand a
-- lock to another process and lose a holder to SIGKILL (once: Lua 5.4 on
-- the plain build, see util.runs_slow_cases).
local cachy = require("cachy")
local servers = require("helpers.servers")
local luastore = require("helpers.luastore")
local util = require("helpers.util")
local system = require("system")

local tmp = os.getenv("CACHY_TMP") or "/tmp"
local SLOW = util.runs_slow_cases()
local q, sh, exists, pack = util.q, util.sh, util.exists, util.pack

local serial = 0
-- A lock name no other case uses (stores are shared between cases).
local function fresh(what)
  serial = serial + 1
  return what .. ":" .. serial .. ":" .. os.time()
end

local function fresh_dir(what)
  local dir = string.format("%s/locks-%s-%d-%d", tmp, what, os.time(), math.random(1e9))
  assert(os.execute("mkdir -p " .. q(dir)))
  return dir
end

local function wait_for(path, what)
  for _ = 1, 1000 do
    if exists(path) then return end
    system.sleep(0.005)
  end
  error("timed out waiting for " .. what)
end

-- Round-robin over coroutines until every one has ended; a coroutine that
-- raises fails the case.
local function run_all(cos)
  local alive = #cos
  local rounds = 0
  while alive > 0 do
    alive = 0
    for _, co in ipairs(cos) do
      if coroutine.status(co) ~= "dead" then
        local ok, err = coroutine.resume(co)
        assert(ok, err)
        if coroutine.status(co) ~= "dead" then alive = alive + 1 end
      end
    end
    rounds = rounds + 1
    assert(rounds < 100000, "coroutines did not finish")
  end
end

-- ---- the cases every store runs -------------------------------------------------

-- kind: { name, make(opts) -> manager, short = lease seconds that ends soon,
-- slack = how late the store may end it (memcached: whole seconds), shared =
-- processes share the store, config() for a forked child }
local function lock_cases(kind)
  local cache
  local short, slack = kind.short or 0.2, kind.slack or 0.25

  before_each(function()
    cache = kind.make()
  end)

  -- Cases that wait for leases to end run once (see the top), but always
  -- on the memory store.
  local waits = (SLOW or kind.waits) and it or function() end

  it("is acquired by one owner at a time", function()
    local name = fresh("one")
    local a, b = cache:lock(name, 10), cache:lock(name, 10)
    assert.are.equal(true, a:get())
    assert.are.equal(false, b:get())
    assert.are.equal(false, a:get())          -- not reentrant: the item is there
    assert.are.equal(true, a:release())
    assert.are.equal(false, a:release())
    assert.are.equal(true, b:get())
    assert.are.equal(true, b:release())
  end)

  it("ignores a release by anyone but the owner", function()
    local name = fresh("nonowner")
    local a = cache:lock(name, 10)
    assert.are.equal(true, a:get())
    assert.are.equal(false, cache:lock(name, 10):release())
    assert.are.equal(false, cache:restore_lock(name, "someone else"):release())
    assert.are.equal(false, cache:restore_lock(name, "someone else"):refresh(10))
    assert.are.equal(false, cache:lock(name, 10):get())      -- still held
    assert.are.equal(true, a:release())
  end)

  it("runs get's function under the lock and releases it after", function()
    local name = fresh("fn")
    local lock = cache:lock(name, 10)
    local inside
    local r = pack(lock:get(function()
      inside = cache:lock(name, 10):get()
      return "a", nil, 3
    end))
    assert.are.same({ n = 3, "a", nil, 3 }, r)
    assert.are.equal(false, inside)
    assert.are.equal(true, cache:lock(name, 10):get())      -- released
  end)

  it("does not run get's function when another owner holds the lock", function()
    local name = fresh("held")
    assert.are.equal(true, cache:lock(name, 10):get())
    local calls = 0
    assert.are.same({ n = 1, false }, pack(cache:lock(name, 10):get(function() calls = calls + 1 end)))
    assert.are.equal(0, calls)
  end)

  it("releases the lock when the function raises, and raises the same error", function()
    local name = fresh("raise")
    local thrown = { why = "boom" }
    local ok, err = pcall(function()
      return cache:lock(name, 10):get(function() error(thrown) end)
    end)
    assert.are.equal(false, ok)
    assert.are.equal(thrown, err)
    ok, err = pcall(function()
      return cache:lock(name, 10):block(1, function() error("text error", 0) end)
    end)
    assert.are.same({ false, "text error" }, { ok, err })
    assert.are.equal(true, cache:lock(name, 10):get())
  end)

  waits("ends a lease by itself", function()
    local name = fresh("lease")
    assert.are.equal(true, cache:lock(name, short):get())
    assert.are.equal(false, cache:lock(name, 10):get())
    system.sleep(short + slack)
    assert.are.equal(true, cache:lock(name, 10):get())
  end)

  waits("block waits for the holder's lease to end, or gives up with a message", function()
    local name = fresh("block")
    assert.are.equal(true, cache:lock(name, short):get())
    local t0 = system.monotime()
    assert.are.same({ n = 1, true }, pack(cache:lock(name, 10):block(short + slack + 1)))
    local waited = system.monotime() - t0
    -- the last sleep before it is at most 0.15 s; the rest is a loaded machine's
    assert.is_true(waited <= short + slack + 0.35, "waited " .. waited .. " s")
    t0 = system.monotime()
    assert.are.same({ n = 2, false, "lock '" .. name .. "' not acquired within 0.3 s" },
      pack(cache:lock(name, 10):block(0.3)))
    waited = system.monotime() - t0
    assert.is_true(waited >= 0.29 and waited < 0.7, "gave up after " .. waited .. " s")
    assert.are.same({ n = 2, false, "lock '" .. name .. "' not acquired within 0 s" },
      pack(cache:lock(name, 10):block(0)))
  end)

  it("block runs its function once acquired", function()
    local name = fresh("blockfn")
    assert.are.same({ n = 2, "x", "y" }, pack(cache:lock(name, 10):block(1, function() return "x", "y" end)))
    assert.are.equal(true, cache:lock(name, 10):get())
  end)

  waits("refresh extends the lease of its owner only", function()
    local name = fresh("refresh")
    local lock = cache:lock(name, short)
    assert.are.equal(true, lock:get())
    assert.are.equal(true, lock:refresh(short + slack + 2))
    system.sleep(short + slack)
    assert.are.equal(false, cache:lock(name, 10):get())     -- the lease was extended
    assert.are.equal(true, lock:refresh())                   -- back to its own lease
    system.sleep(short + slack)
    assert.are.equal(false, lock:refresh())                  -- gone: nothing to extend
    assert.are.equal(false, lock:release())
  end)

  it("is released from elsewhere by its owner's token, or by force", function()
    local name = fresh("restore")
    local lock = cache:lock(name, 10)
    assert.are.equal(true, lock:get())
    local again = cache:restore_lock(name, lock:owner())
    assert.are.equal(lock:owner(), again:owner())
    assert.are.equal(true, again:release())
    assert.are.equal(false, lock:release())
    local mine = cache:lock(name, 10, "owner-7")
    assert.are.equal("owner-7", mine:owner())
    assert.are.equal(true, mine:get())
    assert.are.equal(true, cache:lock(name, 10):force_release())
    assert.are.equal(false, cache:lock(name, 10):force_release())
    local restored = cache:restore_lock(name, "owner-8", 10)
    assert.are.equal(true, restored:get())
    assert.are.equal(false, mine:release())
    assert.are.equal(true, restored:release())
  end)

  it("is the same lock through the manager, the store and a tagged repository", function()
    local name = fresh("same")
    assert.are.equal(true, cache:lock(name, 10):get())
    assert.are.equal(false, cache:store():lock(name, 10):get())
    assert.are.equal(false, cache:tags("t1"):lock(name, 10):get())
    assert.are.equal(false, cache:store("main"):tags("t1", "t2"):lock(name, 10):get())
  end)

  it("lets coroutines wait for each other through a sleep that yields", function()
    local slept = 0
    local c = kind.make({ sleep = function() slept = slept + 1 coroutine.yield() end })
    local name = fresh("co")
    local inside, most, done = 0, 0, 0
    local cos = {}
    for i = 1, 5 do
      cos[i] = coroutine.create(function()
        local r = c:lock(name, 10):block(30, function()
          inside = inside + 1
          if inside > most then most = inside end
          coroutine.yield()
          coroutine.yield()
          inside = inside - 1
          return i
        end)
        assert.are.equal(i, r)
        done = done + 1
      end)
    end
    run_all(cos)
    assert.are.equal(5, done)
    assert.are.equal(1, most)
    assert.is_true(slept > 0)
  end)

  it("sleeps through the store's sleep before the manager's", function()
    local name = fresh("sleep")
    local by = {}
    local c = kind.make({ sleep = function(s) by[#by + 1] = "manager" system.sleep(s) end,
                          store_sleep = function(s) by[#by + 1] = "store" system.sleep(s) end })
    assert.are.equal(true, c:lock(name, 10):get())
    assert.are.equal(false, c:lock(name, 10):block(0.05))
    assert.is_true(#by > 0)
    for _, who in ipairs(by) do assert.are.equal("store", who) end
  end)

  if kind.shared and SLOW then
    it("8 processes racing for a lock: exactly one owner", function()
      local process = require("spec_process")
      for round = 1, 3 do
        local name = fresh("race" .. round)
        local sync = fresh_dir("race")
        local pids = {}
        for id = 1, 8 do
          local pid = process.fork()
          if pid == 0 then
            local code = 3
            pcall(function()
              local c = cachy.new({ prefix = "locks:", stores = { main = kind.config() } })
              c:get("warm")                  -- connected before the start
              util.writefile(sync .. "/ready." .. id, "")
              while not exists(sync .. "/go") do system.sleep(0.0005) end
              local got = c:lock(name, 10):get()
              code = got == true and 0 or got == false and 1 or 2
            end)
            process.exit(code)
          end
          pids[id] = pid
        end
        for id = 1, 8 do wait_for(sync .. "/ready." .. id, "racer " .. id) end
        util.writefile(sync .. "/go", "")
        local won, lost = 0, 0
        for id = 1, 8 do
          local status = process.wait(pids[id])
          if status == 0 then won = won + 1 elseif status == 1 then lost = lost + 1 end
        end
        os.execute("rm -rf " .. q(sync))
        assert.are.same({ 1, 7 }, { won, lost })
        assert.are.equal(false, cache:lock(name, 10):get())
      end
    end)

    it("is released from another process by restore_lock with the owner's token", function()
      local process = require("spec_process")
      local name = fresh("handoff")
      local lock = cache:lock(name, 10)
      assert.are.equal(true, lock:get())
      local pid = process.fork()
      if pid == 0 then
        local code = 3
        pcall(function()
          local c = cachy.new({ prefix = "locks:", stores = { main = kind.config() } })
          if c:restore_lock(name, "not the owner"):release() ~= false then code = 1 return end
          code = c:restore_lock(name, lock:owner()):release() == true and 0 or 2
        end)
        process.exit(code)
      end
      assert.are.equal(0, process.wait(pid))
      assert.are.equal(false, lock:release())
      assert.are.equal(true, cache:lock(name, 10):get())
    end)

    it("is freed by the lease when its holder is killed with SIGKILL", function()
      local process = require("spec_process")
      local name = fresh("killed")
      local sync = fresh_dir("kill")
      local lease = kind.short_process or 0.5
      local pid = process.fork()
      if pid == 0 then
        pcall(function()
          local c = cachy.new({ prefix = "locks:", stores = { main = kind.config() } })
          if c:lock(name, lease):get() then util.writefile(sync .. "/held", "") end
          while true do system.sleep(1) end
        end)
        process.exit(3)
      end
      wait_for(sync .. "/held", "the holder")
      local t0 = system.monotime()
      assert(os.execute("kill -KILL " .. pid))
      assert.are.equal(128 + 9, process.wait(pid))
      os.execute("rm -rf " .. q(sync))
      assert.are.equal(false, cache:lock(name, 10):get())
      assert.are.equal(true, cache:lock(name, 10):block(lease + slack + 2))
      local waited = system.monotime() - t0
      assert.is_true(waited <= lease + slack + 0.35, "freed after " .. waited .. " s")
    end)
  end
end

-- ---- the stores ---------------------------------------------------------------------

local function manager(config, opts)
  opts = opts or {}
  config.sleep = opts.store_sleep
  return cachy.new({ prefix = "locks:", stores = { main = config }, sleep = opts.sleep })
end

describe("locks", function()
  describe("on the memory store", function()
    lock_cases({ make = function(opts) return manager({ driver = "memory" }, opts) end, waits = true })
  end)

  describe("on the file store", function()
    local dir = fresh_dir("file")
    local function config() return { driver = "file", path = dir } end
    lazy_teardown(function() os.execute("rm -rf " .. q(dir)) end)
    lock_cases({ make = function(opts) return manager(config(), opts) end, shared = true, config = config })
  end)

  describe("on a redis cluster", function()
    local cluster
    local function config() return { driver = "redis", cluster = cluster.seeds } end
    lazy_setup(function() cluster = servers.cluster({ replicas = 0 }) end)
    lazy_teardown(function() cluster.stop() end)
    lock_cases({ make = function(opts) return manager(config(), opts) end, shared = true, config = config })
  end)

  describe("on redis", function()
    local srv
    local function config() return { driver = "redis", port = srv.port } end
    lazy_setup(function() srv = servers.start("redis") end)
    lazy_teardown(function() srv:stop() end)
    lock_cases({ make = function(opts) return manager(config(), opts) end, shared = true, config = config })

    it("holds the owner's token under the lock namespace, with a lease to the millisecond", function()
      local cache = manager(config())
      local lock = cache:lock("report", 0.25)
      assert.are.equal(true, lock:get())
      local cli = string.format("redis-cli -p %d ", srv.port)
      assert.are.equal(lock:owner() .. "\n", sh(cli .. "GET locks:cachy:lock:report"))
      local pttl = tonumber(sh(cli .. "PTTL locks:cachy:lock:report"))
      assert.is_true(pttl > 150 and pttl <= 250, "PTTL " .. pttl)
      assert.are.equal(true, lock:refresh(2.5))
      pttl = tonumber(sh(cli .. "PTTL locks:cachy:lock:report"))
      assert.is_true(pttl > 2400 and pttl <= 2500, "PTTL " .. pttl)
      assert.are.equal(true, lock:release())
      assert.are.equal("\n", sh(cli .. "GET locks:cachy:lock:report"))
    end)

    it("returns nil, err when the server is down", function()
      local cache = manager({ driver = "redis", port = srv.port + 1, retry_after = 0 })
      local lock = cache:lock("down", 10)
      local down = { n = 3, nil, "store 'main' (redis 127.0.0.1:" .. (srv.port + 1) .. "): connection refused",
                     "refused" }
      assert.are.same(down, pack(lock:get()))
      assert.are.same(down, pack(lock:get(function() error("not called") end)))
      assert.are.same(down, pack(lock:block(1)))
      assert.are.same(down, pack(lock:release()))
      assert.are.same(down, pack(lock:refresh(1)))
      assert.are.same(down, pack(lock:force_release()))
    end)
  end)

  describe("on memcached", function()
    local srv
    local function config() return { driver = "memcached", servers = { "127.0.0.1:" .. srv.port } } end
    lazy_setup(function() srv = servers.start("memcached") end)
    lazy_teardown(function() srv:stop() end)
    -- memcached's lifetimes are whole seconds, rounded up, and its clock
    -- ticks once a second
    lock_cases({ make = function(opts) return manager(config(), opts) end, shared = true, config = config,
                 short = 1, slack = 1.1, short_process = 1 })

    it("returns nil, err when the server is down", function()
      local cache = manager({ driver = "memcached", servers = { "127.0.0.1:" .. (srv.port + 1) } })
      local lock = cache:lock("down", 10)
      for _, r in ipairs({ pack(lock:get()), pack(lock:block(1)), pack(lock:release()), pack(lock:refresh(1)) }) do
        assert.are.equal(3, r.n)
        assert.is_nil(r[1])
        assert.matches("^store 'main' %(memcached 127%.0%.0%.1:%d+%): ", r[2])
        assert.are.equal("refused", r[3])
      end
    end)
  end)

  describe("on a tiered store { memory, redis }", function()
    local srv
    lazy_setup(function() srv = servers.start("redis") end)
    lazy_teardown(function() srv:stop() end)
    local function make(opts)
      opts = opts or {}
      return cachy.new({
        prefix = "locks:", default = "main", sleep = opts.sleep,
        stores = {
          main = { driver = "tiered", levels = { "memory", "redis" }, sleep = opts.store_sleep },
          memory = { driver = "memory" },
          redis = { driver = "redis", port = srv.port },
        },
      })
    end
    lock_cases({ make = make })

    it("keeps the lock at the last level, and no copy of it above after a release", function()
      local cache = make()
      local name = fresh("tiered")
      local lock = cache:lock(name, 10)
      assert.are.equal(true, lock:get())
      local key = "cachy:lock:" .. name
      assert.are.equal(lock:owner(), cache:store("redis"):_store():get(key))
      assert.are.equal(lock:owner(), cache:store("main"):_store():get(key))      -- copied up
      assert.are.equal(lock:owner(), cache:store("memory"):_store():get(key))
      assert.are.equal(true, lock:refresh(5))
      assert.is_nil(cache:store("memory"):_store():get(key))
      assert.are.equal(true, lock:release())
      assert.is_nil(cache:store("redis"):_store():get(key))
      assert.is_nil(cache:store("memory"):_store():get(key))
    end)
  end)

  for _, with in ipairs({ true, false }) do
    describe("on a store written in Lua " .. (with and "with" or "without") .. " forget_if", function()
      local backend = luastore.new({ locks = with })
      local function make(opts)
        local c = manager({ driver = "locktable" }, opts)
        c:extend("locktable", backend:factory())
        return c
      end
      lock_cases({ make = make })

      it("releases through " .. (with and "the store's forget_if and touch_if" or "get and forget"), function()
        local cache = make()
        local lock = cache:lock(fresh("path"), 10)
        assert.are.equal(true, lock:get())
        backend:reset_calls()
        assert.are.equal(true, lock:refresh(5))
        assert.are.equal(true, lock:release())
        if with then
          assert.are.same({ forget_if = 1, touch_if = 1 }, backend.calls)
        else
          assert.are.same({ get = 2, put = 1, forget = 1 }, backend.calls)
        end
      end)

      it("returns nil, err when the store fails", function()
        local cache = make()
        local lock = cache:lock("failing", 10)
        backend.fail = "return"
        local down = { n = 3, nil, "store 'main' (locktable): backend down", "backend" }
        assert.are.same(down, pack(lock:get()))
        assert.are.same(down, pack(lock:block(1)))
        assert.are.same(down, pack(lock:release()))
        assert.are.same(down, pack(lock:refresh(1)))
        assert.are.same(down, pack(lock:force_release()))
        backend.fail = nil
      end)
    end)
  end

  describe("on the null store", function()
    -- it keeps nothing: every lock is acquired at once by everyone, and
    -- there is never anything to release or extend
    local cache
    before_each(function() cache = manager({ driver = "null" }) end)

    it("is acquired by everyone, and releases and refreshes nothing", function()
      local a, b = cache:lock("n", 10), cache:lock("n", 10)
      assert.are.equal(true, a:get())
      assert.are.equal(true, b:get())
      assert.are.equal(true, b:block(1))
      assert.are.same({ n = 2, 1, 2 }, pack(a:get(function() return 1, 2 end)))
      assert.are.equal(false, a:release())
      assert.are.equal(false, a:refresh(10))
      assert.are.equal(false, a:force_release())
    end)
  end)

  describe("arguments", function()
    local cache = cachy.new()

    it("are checked, naming the argument", function()
      -- at the caller's line
      assert.matches("^spec/27%-locks_spec%.lua:%d+: bad argument #1 to 'lock' %(name must be a non%-empty "
        .. "string or a number, got nil%)$", select(2, pcall(function() cache:lock(nil, 1) end)))
      assert.matches("bad argument #1 to 'lock' %(name must be a non%-empty string or a number, got an "
        .. "empty string%)$", select(2, pcall(function() cache:lock("", 1) end)))
      local function seconds(v, what)
        local ok, err = pcall(function() cache:lock("x", v) end)
        assert.are.equal(false, ok)
        assert.matches("bad argument #2 to 'lock' %(seconds must be a number above 0, got " .. what .. "%)$", err)
      end
      seconds(nil, "nil")
      seconds("10", "string")
      seconds(0, "0")
      seconds(-1, "%-1")
      seconds(math.huge, "inf")
      seconds(0 / 0, "%-?nan")
      assert.matches("bad argument #3 to 'lock' %(owner must be a non%-empty string, got table%)$",
        select(2, pcall(function() cache:lock("x", 1, {}) end)))
      assert.matches("bad argument #2 to 'restore_lock' %(owner must be a non%-empty string, got nil%)$",
        select(2, pcall(function() cache:restore_lock("x") end)))
      local lock = cache:lock("x", 1)
      assert.matches("bad argument #1 to 'block' %(seconds must be a number from 0, got %-1%)$",
        select(2, pcall(function() lock:block(-1) end)))
      assert.matches("bad argument #1 to 'get' %(function expected, got string%)$",
        select(2, pcall(function() lock:get("f") end)))
      assert.matches("bad argument #2 to 'block' %(function expected, got number%)$",
        select(2, pcall(function() lock:block(1, 5) end)))
      assert.matches("bad argument #1 to 'refresh' %(seconds must be a number above 0, got 0%)$",
        select(2, pcall(function() lock:refresh(0) end)))
      assert.matches("bad argument #1 to 'release' %(cache lock expected %(use a colon: lock:release%(...%)%)%)$",
        select(2, pcall(function() lock.release() end)))
      assert.matches("lock 'x' was restored without a lease: give restore_lock its seconds to get it$",
        select(2, pcall(function() cache:restore_lock("x", "o"):get() end)))
      assert.matches("bad argument #1 to 'refresh' %(seconds must be a number above 0, got nil%)$",
        select(2, pcall(function() cache:restore_lock("x", "o"):refresh() end)))
      assert.are.equal("o", cache:restore_lock(7, "o"):owner())
      assert.matches("^cachy.new: config.sleep must be a function, got number$",
        select(2, pcall(cachy.new, { sleep = 1 })))
      assert.matches("^cachy.new: store 'm' field 'sleep' must be a function, got string$",
        select(2, pcall(cachy.new, { stores = { m = { driver = "memory", sleep = "x" } } })))
    end)

    it("choose the sleep: the store's, the manager's, else a blocking one outside nginx", function()
      local core, lock = require("cachy.core"), require("cachy.lock")
      local mine, theirs = function() end, function() end
      assert.are.equal(core.sleep, lock.sleeper(cache:store()))
      local c = cachy.new({ sleep = mine, stores = { a = { driver = "memory" }, b = { driver = "memory", sleep = theirs } },
                            default = "a" })
      assert.are.equal(mine, lock.sleeper(c:store("a")))
      assert.are.equal(theirs, lock.sleeper(c:store("b")))
      local t0 = system.monotime()
      core.sleep(0.05)
      local slept = system.monotime() - t0
      assert.is_true(slept >= 0.049 and slept < 0.5, "slept " .. slept .. " s")
    end)

    it("make owner tokens that differ", function()
      local seen = {}
      for _ = 1, 100 do
        local token = cache:lock("t", 1):owner()
        assert.matches("^%x+$", token)
        assert.are.equal(32, #token)
        assert.is_nil(seen[token])
        seen[token] = true
      end
    end)
  end)
end)
