-- spec/30-redis_spec.lua: the Redis store against a real redis-server on a
-- free 127.0.0.1 port: the shared behaviour suite, then what only Redis has
-- (data other clients see, prefix-scoped flush, AUTH, Unix socket, db,
-- round trips), then faults: refused, hung, killed, paused and resetting
-- servers, late replies, and replies too large for the command.
local cachy = require("cachy")
local behaviour = require("behaviour")
local servers = require("helpers.servers")
local fake = require("helpers.fake_server")
local forked = require("helpers.forked")
local system = require("system")
local util = require("helpers.util")

local math_type = math.type          -- nil on Lua 5.1, 5.2 and LuaJIT
local tmp = os.getenv("CACHY_TMP") or "/tmp"

local sh, quote, pack = util.sh, util.q, util.pack

local function pause(server)
  server:signal("STOP")                -- returns once every thread is stopped
end

local function resume(server)
  server:signal("CONT")
end

-- True once the process is gone or a zombie whose threads have all exited
-- (the leader turns Z first; the sockets close with the last thread).
local function dead(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return true end
  local status = f:read("*a")
  f:close()
  return status:match("\nState:%s*Z") ~= nil and status:match("\nThreads:%s*1\n") ~= nil
end

-- SIGKILL, then wait until the process and all its sockets are gone.
local function kill(server)
  server:signal("KILL")
  for _ = 1, 500 do
    if dead(server.pid) then return end
    system.sleep(0.001)
  end
  error("redis-server " .. server.pid .. " did not die")
end

-- A listener whose accept queue is full, so that connecting to it hangs
-- until connect_timeout (spec/helpers/memcached_tool.py listen full):
-- { port, stop } (stop kills it by its PID).
local function full_listener()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
  local portfile = string.format("%s/redis-spec-%d-%d-port", tmp, os.time(), math.random(1e9))
  local pid = tonumber(sh(string.format("python3 %s listen full %s >/dev/null 2>&1 & echo $!",
    quote(here .. "/helpers/memcached_tool.py"), quote(portfile))):match("%d+"))
  local pidfile = os.getenv("CACHY_PIDFILE")
  if pidfile then
    local f = io.open(pidfile, "a")
    if f then f:write(pid, "\n") f:close() end
  end
  local port
  for _ = 1, 500 do
    local f = io.open(portfile)
    if f then
      port = tonumber(f:read("*a"))
      f:close()
      break
    end
    system.sleep(0.01)
  end
  os.remove(portfile)
  if not port then
    os.execute("kill " .. pid .. " 2>/dev/null")
    error("the full listener did not start")
  end
  return {
    port = port,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      for _ = 1, 500 do
        if servers.gone(pid) then return end
        system.sleep(0.01)
      end
    end,
  }
end

-- Seconds fn() takes, then its results.
local function timed(fn)
  local t0 = system.monotime()
  local r = pack(fn())
  return system.monotime() - t0, r
end

describe("redis", function()
  local server
  local managers = {}

  lazy_setup(function()
    server = servers.start("redis")
  end)

  lazy_teardown(function()
    if server then kill(server) end
  end)

  after_each(function()
    util.close_managers(managers)
  end)

  -- redis-cli against the suite's server (or port), output without the last newline.
  local function cli(first, ...)
    if type(first) == "table" then return util.redis_cli(first.port, ...) end
    return util.redis_cli(server.port, first, ...)
  end

  -- A manager with one Redis store "main"; fields override the defaults.
  local function store(fields)
    local config = { driver = "redis", port = server.port }
    for k, v in pairs(fields or {}) do config[k] = v end
    local m = cachy.new({ stores = { main = config } })
    managers[#managers + 1] = m
    return m
  end

  local function address(port) return "127.0.0.1:" .. port end

  behaviour("redis", {
    config = function() return { driver = "redis", port = server.port } end,
  })

  describe("store", function()
    before_each(function()
      assert.are.equal("OK", cli("FLUSHALL"))
    end)

    it("in a forked child, opens its own connection and leaves the parent's open", function()
      forked(store, function()
        return tonumber(cli("INFO", "stats"):match("total_connections_received:(%d+)"))
      end)
    end)

    it("reads a value written by redis-cli SET k 10 as the integer 10 and increments it to 11", function()
      assert.are.equal("OK", cli("SET", "k", "10"))
      local c = store()
      local v = c:get("k")
      assert.are.equal(10, v)
      if math_type then assert.are.equal("integer", math_type(v)) end
      assert.are.equal(11, c:increment("k"))
      assert.are.equal("11", cli("GET", "k"))
    end)

    it("stores a put integer as its decimal text", function()
      local c = store()
      assert.are.equal(true, c:put("n", 42))
      assert.are.equal(true, c:put("neg", -7))
      assert.are.equal("42", cli("GET", "n"))
      assert.are.equal("-7", cli("GET", "neg"))
      if math_type then
        assert.are.equal(true, c:put("max", math.maxinteger))
        assert.are.equal("9223372036854775807", cli("GET", "max"))
      end
      assert.are.equal("43", cli("INCR", "n"))
      assert.are.equal(43, c:get("n"))
    end)

    it("sets lifetimes in milliseconds (PX) for put, add and put_many", function()
      local c = store()
      local t0 = system.monotime()
      assert.are.equal(true, c:put("p", "v", 0.01))            -- 600 ms
      assert.are.equal(true, c:add("a", "v", 0.005))           -- 300 ms
      assert.are.equal(true, c:put_many({ m = "v" }, 0.02))    -- 1200 ms
      local p, a, m = tonumber(cli("PTTL", "p")), tonumber(cli("PTTL", "a")), tonumber(cli("PTTL", "m"))
      -- what has passed since the writes (much more under valgrind), but
      -- never a whole second: seconds would give 1000 and 2000
      local spent = math.min(math.ceil((system.monotime() - t0) * 1000) + 5, 190)
      assert.is_true(p > 600 - spent and p <= 600, "PTTL p = " .. p)
      assert.is_true(a > 300 - spent and a <= 300, "PTTL a = " .. a)
      assert.is_true(m > 1200 - spent and m <= 1200, "PTTL m = " .. m)
      assert.are.equal(true, c:forever("f", "v"))
      assert.are.equal("-1", cli("PTTL", "f"))
    end)

    it("increments keep the expiry; a missing key starts at 0 with none", function()
      local c = store()
      assert.are.equal(true, c:put("t", 5, 1))
      assert.are.equal(7, c:increment("t", 2))
      assert.are.equal(4, c:decrement("t", 3))
      local pttl = tonumber(cli("PTTL", "t"))
      assert.is_true(pttl > 55000 and pttl <= 60000, "PTTL t = " .. pttl)
      assert.are.equal(-2, c:decrement("fresh", 2))
      assert.are.equal("-1", cli("TTL", "fresh"))
      assert.are.equal("-2", cli("GET", "fresh"))
    end)

    it("flush with prefix a*b: leaves axb:1 and zzz alone", function()
      local c = store({ prefix = "a*b:" })
      assert.are.equal(true, c:put_many({ ["1"] = "x", ["2"] = "y" }))
      for _, k in ipairs({ "axb:1", "zzz", "aXYb:1", "a*b" }) do
        assert.are.equal("OK", cli("SET", k, "foreign"))
      end
      assert.are.equal("1", cli("EXISTS", "a*b:1"))
      assert.are.equal(true, c:flush())
      assert.are.equal("0", cli("EXISTS", "a*b:1"))
      assert.are.equal("0", cli("EXISTS", "a*b:2"))
      for _, k in ipairs({ "axb:1", "zzz", "aXYb:1", "a*b" }) do
        assert.are.equal("foreign", cli("GET", k))
      end
    end)

    it("flush escapes ?, [, ] and \\ in the prefix", function()
      local prefix = "q?[ab]\\:"
      local c = store({ prefix = prefix })
      assert.are.equal(true, c:put("1", "mine"))
      assert.are.equal("mine", c:get("1"))
      local foreign = { "qz[ab]\\:1", "q?a\\:1", "q?[ab]:1", "q?[ab]\\" }
      for _, k in ipairs(foreign) do assert.are.equal("OK", cli("SET", k, "foreign")) end
      assert.are.equal(true, c:flush())
      assert.are.equal("0", cli("EXISTS", prefix .. "1"))
      for _, k in ipairs(foreign) do assert.are.equal("foreign", cli("GET", k)) end
    end)

    it("flush with a prefix removes more keys than one SCAN batch returns", function()
      local c = store({ prefix = "bulk:" })
      local t = {}
      for i = 1, 5000 do t["k" .. i] = i end
      assert.are.equal(true, c:put_many(t))
      assert.are.equal("OK", cli("SET", "bulk", "foreign"))
      assert.are.equal("5001", cli("DBSIZE"))
      assert.are.equal(true, c:flush())
      assert.are.equal("1", cli("DBSIZE"))
      assert.are.equal("foreign", cli("GET", "bulk"))
    end)

    it("flush without a prefix empties only its own database (FLUSHDB)", function()
      local c = store({ db = 5 })
      assert.are.equal(true, c:put("k", "v"))
      assert.are.equal("OK", cli("SET", "k0", "db0"))
      assert.are.equal("1", cli("-n", "5", "DBSIZE"))
      assert.are.equal(true, c:flush())
      assert.are.equal("0", cli("-n", "5", "DBSIZE"))
      assert.are.equal("db0", cli("GET", "k0"))
    end)

    -- commandstats counts, without redis-cli's own CONFIG and INFO.
    local function command_calls()
      local calls = {}
      for name, n in cli("INFO", "commandstats"):gmatch("cmdstat_([%w|]+):calls=(%d+)") do
        local command = name:match("^[^|]+")
        if command ~= "config" and command ~= "info" then calls[name] = tonumber(n) end
      end
      return calls
    end

    it("many of 100 keys is one MGET", function()
      local c = store({ prefix = "m:" })
      local t, keys = {}, {}
      for i = 1, 100 do
        keys[i] = "k" .. i
        if i % 2 == 0 then t[keys[i]] = i end
      end
      assert.are.equal(true, c:put_many(t))
      assert.are.equal("OK", cli("CONFIG", "RESETSTAT"))
      local got = c:many(keys)
      assert.are.same({ mget = 1 }, command_calls())
      assert.are.same(t, got)
    end)

    it("put_many writes every SET before it waits for the first reply (one round trip)", function()
      local s = servers.start("redis")
      finally(function() kill(s) end)
      local c = store({ port = s.port, timeout = 0.3 })
      assert.are.equal(true, c:put("warm", 1))     -- connected before the pause
      local t = {}
      for i = 1, 100 do t["k" .. i] = i end
      pause(s)
      local ok, err = c:put_many(t)
      resume(s)
      assert.is_nil(ok)
      assert.are.equal("store 'main' (redis " .. address(s.port) .. "): timed out after 0.3 s", err)
      -- the paused server still had all 100 commands to read, and runs them
      local n
      for _ = 1, 100 do
        n = cli(s, "DBSIZE")
        if n == "101" then break end
        system.sleep(0.01)
      end
      assert.are.equal("101", n)
    end)

    it("db = 3 is isolated from db 0", function()
      local c0, c3 = store(), store({ db = 3 })
      assert.are.equal(true, c0:put("iso", 100))
      assert.are.equal(true, c3:put("iso", 300))
      assert.are.equal(100, c0:get("iso"))
      assert.are.equal(300, c3:get("iso"))
      assert.are.equal("100", cli("GET", "iso"))
      assert.are.equal("300", cli("-n", "3", "GET", "iso"))
      assert.are.equal(true, c3:flush())
      assert.are.equal(100, c0:get("iso"))
      assert.are.equal(false, c3:has("iso"))
    end)

    it("a db the server does not have gives nil, err", function()
      local c = store({ db = 99 })
      local v, err = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(server.port) ..
        "): cannot select database 99: ERR DB index is out of range", err)
    end)

    it("a key of another type gives nil, err with Redis's message, and the connection stays", function()
      assert.are.equal("1", cli("RPUSH", "list", "a"))
      local c = store()
      local prefix = "store 'main' (redis " .. address(server.port) .. "): "
      local v, err = c:get("list")
      assert.is_nil(v)
      assert.are.equal(prefix .. "WRONGTYPE Operation against a key holding the wrong kind of value", err)
      v, err = c:increment("list")
      assert.is_nil(v)
      assert.are.equal(prefix .. "WRONGTYPE Operation against a key holding the wrong kind of value", err)
      assert.are.equal(true, c:put("after", "ok"))
      assert.are.equal("ok", c:get("after"))
    end)

    it("increment of text or past 64 bits gives nil, err naming the key, value unchanged", function()
      assert.are.equal("OK", cli("SET", "txt", "1.5"))
      assert.are.equal("OK", cli("SET", "big", "9223372036854775807"))
      local c = store()
      local prefix = "store 'main' (redis " .. address(server.port) .. "): "
      local v, err = c:increment("txt")
      assert.is_nil(v)
      assert.are.equal(prefix .. "value of key 'txt' is not an integer", err)
      v, err = c:increment("big")
      assert.is_nil(v)
      assert.are.equal(prefix .. "increment of key 'big' overflows 64 bits", err)
      assert.are.equal("1.5", cli("GET", "txt"))
      assert.are.equal("9223372036854775807", cli("GET", "big"))
    end)
  end)

  describe("AUTH", function()
    local secured

    lazy_setup(function()
      secured = servers.start("redis", { "--requirepass", "s3cret",
        "--user", "alice", "on", ">wonderland", "~*", "+@all" })
    end)

    lazy_teardown(function()
      if secured then kill(secured) end
    end)

    it("works with requirepass", function()
      local c = store({ port = secured.port, password = "s3cret" })
      assert.are.equal(true, c:put("k", "v"))
      assert.are.equal("v", c:get("k"))
    end)

    it("works with a username (ACL user)", function()
      local c = store({ port = secured.port, username = "alice", password = "wonderland" })
      assert.are.equal(true, c:put("k", "alice's"))
      assert.are.equal("alice's", c:get("k"))
    end)

    it("a wrong password gives a clear error, every time", function()
      local c = store({ port = secured.port, password = "wrong" })
      for _ = 1, 2 do
        local v, err = c:get("k")
        assert.is_nil(v)
        assert.are.equal("store 'main' (redis " .. address(secured.port) .. "): authentication failed: " ..
          "WRONGPASS invalid username-password pair or user is disabled.", err)
      end
    end)

    it("no password on a server that needs one gives NOAUTH", function()
      local c = store({ port = secured.port })
      local v, err = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(secured.port) .. "): NOAUTH Authentication required.", err)
    end)
  end)

  it("connects through a Unix socket", function()
    local path = string.format("%s/redis-%d.sock", tmp, os.time() % 100000)
    local s = servers.start("redis", { "--unixsocket", path, "--unixsocketperm", "700" })
    finally(function() kill(s) end)
    -- the port is not used; retry_after = 0: the second failure is a connect of its own
    local c = store({ socket = path, port = 1, retry_after = 0 })
    assert.are.equal(true, c:put("k", 12345))
    assert.are.equal(12345, c:get("k"))
    assert.are.equal("12345", cli(s, "GET", "k"))
    kill(s)
    local v, err = c:get("k")
    assert.is_nil(v)
    assert.are.equal("store 'main' (redis " .. path .. "): connection refused", err)
    os.remove(path)
    v, err = c:get("k")
    assert.is_nil(v)
    assert.are.equal("store 'main' (redis " .. path .. "): cannot connect: No such file or directory", err)
  end)

  describe("faults", function()
    it("connection refused returns an error naming the address within 1 s", function()
      local port = fake.closed_port()
      local c = store({ port = port })
      local secs, r = timed(function() return c:get("k") end)
      assert.is_nil(r[1])
      assert.are.equal("store 'main' (redis " .. address(port) .. "): connection refused", r[2])
      assert.is_true(secs < 1, "took " .. secs .. " s")
    end)

    it("a server that accepts and never answers gives a timeout within timeout + 0.5 s", function()
      local f = fake.start("silent")
      finally(function() f:stop() end)
      local c = store({ port = f.port, timeout = 0.3 })
      for _, call in ipairs({
        function() return c:get("k") end,
        function() return c:put("k", "v") end,
        function() return c:many({ "a", "b" }) end,
      }) do
        local secs, r = timed(call)
        assert.is_nil(r[1])
        assert.are.equal("store 'main' (redis " .. address(f.port) .. "): timed out after 0.3 s", r[2])
        assert.is_true(secs >= 0.3 and secs < 0.8, "took " .. secs .. " s")
      end
    end)

    it("after SIGKILL and a restart on the same port, the same store works on the next call (retry_after = 0)", function()
      local s = servers.start("redis")
      finally(function() kill(s) end)
      local c = store({ port = s.port, retry_after = 0 })   -- no breaker: every call connects
      assert.are.equal(true, c:put("k", "before"))
      kill(s)
      s:restart()
      assert.are.equal(true, c:put("k", "after"))
      assert.are.equal("after", c:get("k"))
      -- while the server is down: refused; once it is back: working
      kill(s)
      local v, err = c:get("k")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(s.port) .. "): connection refused", err)
      s:restart()
      assert.are.equal(false, c:has("k"))
      assert.are.equal(true, c:put("k", "again"))
      assert.are.equal("again", c:get("k"))
    end)

    it("a server paused with SIGSTOP gives a timeout; after SIGCONT the store recovers", function()
      local s = servers.start("redis")
      finally(function() resume(s) kill(s) end)
      local c = store({ port = s.port, timeout = 0.3 })
      assert.are.equal(true, c:put("k", "v"))
      pause(s)
      local secs, r = timed(function() return c:get("k") end)
      resume(s)
      assert.is_nil(r[1])
      assert.are.equal("store 'main' (redis " .. address(s.port) .. "): timed out after 0.3 s", r[2])
      assert.is_true(secs >= 0.3 and secs < 0.8, "took " .. secs .. " s")
      assert.are.equal("v", c:get("k"))
    end)

    it("a put that timed out may have been applied: a later get sees the old or the new value", function()
      local s = servers.start("redis")
      finally(function() resume(s) kill(s) end)
      local c = store({ port = s.port, timeout = 0.3 })
      assert.are.equal(true, c:put("k", "old"))
      pause(s)
      local r = pack(c:put("k", "new"))
      resume(s)
      assert.are.same({ n = 3, nil, "store 'main' (redis " .. address(s.port) .. "): timed out after 0.3 s",
        "timeout" }, r)
      -- the connection was dropped; the next calls connect again and work
      for _ = 1, 20 do
        local v, err = c:get("k")
        assert.is_nil(err)
        assert.is_true(v == "old" or v == "new", "got " .. tostring(v))
        system.sleep(0.01)
      end
      assert.are.equal(true, c:put("other", 1))
      assert.are.equal(1, c:get("other"))
      assert.are.equal(true, c:put("k", "last"))
      assert.are.equal("last", c:get("k"))
    end)

    it("200 cycles of a get that times out, then a get of another key: 0 wrong values", function()
      local s = servers.start("redis")
      finally(function() resume(s) kill(s) end)
      local c = store({ port = s.port, timeout = 0.05 })
      local t = { slow = "the late reply" }
      for i = 1, 200 do t["k" .. i] = "value " .. i end
      assert.are.equal(true, c:put_many(t))
      local timeouts, wrong, errors = 0, 0, {}
      for i = 1, 200 do
        pause(s)
        local v, err = c:get("slow")
        resume(s)
        if v == nil and err == "store 'main' (redis " .. address(s.port) .. "): timed out after 0.05 s" then
          timeouts = timeouts + 1
        end
        v, err = c:get("k" .. i)
        if v == nil then
          errors[#errors + 1] = err
        elseif v ~= "value " .. i then
          wrong = wrong + 1
        end
      end
      assert.are.equal(0, wrong)
      -- A reconnect may itself outlast 0.05 s on a loaded machine (under
      -- valgrind, or beside the other suites): an error, never a wrong
      -- value, and rare unless slowed down.
      for _, e in ipairs(errors) do
        assert.is_truthy(e:match("^store 'main' %(redis "), e)
      end
      if not os.getenv("CACHY_SLOW") then
        assert.is_true(#errors <= 10, #errors .. " of 200 reads after a timeout failed: " .. tostring(errors[1]))
      end
      assert.are.equal(200, timeouts)
    end)

    it("a server resetting the connection mid-write gives nil, err, not SIGPIPE", function()
      -- A child interpreter with SIGPIPE at its default action (termination),
      -- as most applications have it: it must survive and report the error.
      local f = fake.start("hangup")
      local script = os.tmpname()
      finally(function()    -- one finally per test: a second would replace the first
        f:stop()
        os.remove(script)
      end)
      local out = assert(io.open(script, "w"))
      out:write(string.format([[
local cachy = require("cachy")
local c = cachy.new({ stores = { main = { driver = "redis", port = %d, timeout = 5 } } })
for _ = 1, 2 do
  local ok, err = c:put("big", string.rep("x", 32 * 1024 * 1024))
  io.write(tostring(ok), " ", tostring(err), "\n")
end
]], f.port))
      out:close()
      local interp = arg and arg[-1] or "lua5.4"
      local env = string.format("LUA_PATH=%s LUA_PATH_5_4=%s LUA_CPATH=%s LUA_CPATH_5_4=%s",
        quote(package.path), quote(package.path), quote(package.cpath), quote(package.cpath))
      local result = sh(string.format("%s python3 -c %s %s %s 2>&1; echo \"exit $?\"", env,
        quote("import os, signal, sys; signal.signal(signal.SIGPIPE, signal.SIG_DFL); " ..
              "os.execvp(sys.argv[1], sys.argv[1:])"),
        quote(interp), quote(script)))
      local expected = "nil store 'main' (redis " .. address(f.port) .. "): connection lost: Broken pipe\n"
      assert.are.equal(expected .. expected .. "exit 0\n", result)
    end)

    it("an array larger than the command can return is refused before it is allocated", function()
      local f = fake.start("reply", "*1000000000\\r\\n")
      finally(function() f:stop() end)
      local c = store({ port = f.port, timeout = 0.3 })
      local v, err = c:many({ "a", "b" })
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(f.port) ..
        "): reply refused: an array of 1000000000 elements (at most 2)", err)
      v, err = c:get("a")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(f.port) ..
        "): reply refused: an array at depth 1 (at most 0)", err)
    end)

    it("a reply that is not Redis protocol closes the connection with a protocol error", function()
      local f = fake.start("reply", "?what\\r\\n")
      finally(function() f:stop() end)
      local c = store({ port = f.port, timeout = 0.3 })
      local v, err = c:get("a")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(f.port) ..
        "): protocol error: Protocol error, got \"?\" as reply type byte", err)
    end)

    it("a reply nobody asked for is never taken as the answer to the next command", function()
      -- Every request gets two replies, "a" and then "b": the second must not
      -- answer the next GET (msgpack reads the byte "a" as 97, "b" as 98).
      local f = fake.start("reply", "$1\\r\\na\\r\\n$1\\r\\nb\\r\\n")
      finally(function() f:stop() end)
      local c = store({ port = f.port, timeout = 0.3 })
      for i = 1, 20 do
        assert.are.equal(97, c:get("k" .. i))
      end
    end)

    describe("breaker", function()
      -- Calls c:get("k") every 10 ms until one succeeds (at most `limit` s):
      -- the time of that success, and the errors before it.
      local function until_works(c, limit)
        local deadline, errors = system.monotime() + limit, {}
        while system.monotime() < deadline do
          local v, err, code = c:get("k")
          if err == nil then return system.monotime(), errors end
          errors[#errors + 1] = code .. " " .. err
          system.sleep(0.01)
        end
        return nil, errors
      end

      -- 100 gets, all nil, want, code; their total time.
      local function hundred_calls(c, want, code)
        local t0 = system.monotime()
        for i = 1, 100 do
          local r = pack(c:get("k"))
          assert.are.same({ n = 3, nil, want, code }, r, "call " .. i)
        end
        return system.monotime() - t0
      end

      it("a refused connect: 100 calls under 1.5 s; after a restart on the same port, works within retry_after (2 s)", function()
        local s = servers.start("redis")
        finally(function() kill(s) end)
        local c = store({ port = s.port, connect_timeout = 1.0 })
        assert.are.equal(true, c:put("k", "v"))
        kill(s)
        local want = "store 'main' (redis " .. address(s.port) .. "): connection refused"
        local t_first = system.monotime()
        local secs = hundred_calls(c, want, "refused")
        assert.is_true(secs < 1.5, "100 calls took " .. secs .. " s")
        s:restart()
        local t_back = system.monotime()
        local t_ok, errors = until_works(c, 5)
        assert.is_not_nil(t_ok, "never worked again: " .. tostring(errors[#errors]))
        -- held back until retry_after had passed since the failed connect ...
        assert.is_true(t_ok >= t_first + 2.0, "worked " .. (t_ok - t_first) .. " s after the failure")
        -- ... and working at once after that, or as soon as the server was back
        local due = math.max(t_back, t_first + secs + 2.0)
        assert.is_true(t_ok - due < 0.3, "worked " .. (t_ok - due) .. " s late")
        for _, e in ipairs(errors) do assert.are.equal("refused " .. want, e) end
      end)

      it("a connect that times out: 100 calls under 1.5 s; a server on that port works within retry_after", function()
        local l = full_listener()
        local s
        finally(function()
          l.stop()
          if s then kill(s) end
        end)
        local c = store({ port = l.port, connect_timeout = 1.0, retry_after = 1 })
        local want = "store 'main' (redis " .. address(l.port) .. "): connect timed out after 1.0 s"
        local took, r = timed(function() return c:get("k") end)
        assert.are.same({ n = 3, nil, want, "timeout" }, r)
        assert.is_true(took >= 0.95 and took < 1.4, "the first call took " .. took .. " s")
        local t_failed = system.monotime()
        local secs = hundred_calls(c, want, "timeout")
        assert.is_true(took + secs < 1.5, "101 calls took " .. (took + secs) .. " s")
        l.stop()
        s = servers.start_on("redis", nil, l.port)
        local t_back = system.monotime()
        local t_ok, errors = until_works(c, 5)
        assert.is_not_nil(t_ok, "never worked again: " .. tostring(errors[#errors]))
        assert.is_true(t_ok - math.max(t_back, t_failed + 1.0) < 0.3, "worked " .. (t_ok - t_back) ..
          " s after the server was back, " .. (t_ok - t_failed) .. " s after the failure")
        for _, e in ipairs(errors) do assert.are.equal("timeout " .. want, e) end
      end)

      it("a timeout on an established connection does not trip it: the next call connects", function()
        local s = servers.start("redis")
        finally(function() resume(s) kill(s) end)
        local c = store({ port = s.port, timeout = 0.2, retry_after = 60 })
        assert.are.equal(true, c:put("k", "v"))
        pause(s)
        local v, err, code = c:get("k")
        resume(s)
        assert.is_nil(v)
        assert.are.equal("timeout", code, err)
        assert.are.equal("v", c:get("k"))
      end)

      it("belongs to its process: a forked child connects at once while the parent is held back", function()
        local process = require("spec_process")
        local s = servers.start("redis")
        finally(function() kill(s) end)
        local c = store({ port = s.port, retry_after = 60 })
        assert.are.equal(true, c:put("k", "v"))
        kill(s)
        local want = "store 'main' (redis " .. address(s.port) .. "): connection refused"
        assert.are.same({ n = 3, nil, want, "refused" }, pack(c:get("k")))
        s:restart()
        local pid = process.fork()
        if pid == 0 then
          local ok = pcall(function()
            local v, err = c:get("k")
            assert(v == nil and err == nil, tostring(err))     -- a miss: the data went with the server
            assert(c:put("k", "child") == true)
          end)
          process.exit(ok and 0 or 1)
        end
        assert.are.equal(0, process.wait(pid), "the child could not use the store")
        assert.are.same({ n = 3, nil, want, "refused" }, pack(c:get("k")))
        assert.are.equal("child", cli(s, "GET", "k"):match("child"))
      end)

      it("retry_after must be a number of seconds from 0", function()
        local c = store({ retry_after = -1 })
        local v, err = c:get("k")
        assert.is_nil(v)
        assert.are.equal("store 'main' (redis " .. address(server.port) ..
          "): field 'retry_after' must be a number of seconds from 0, at most 86400", err)
        local ok, e = pcall(cachy.new, { stores = { main = { driver = "redis", retry_after = "1" } } })
        assert.is_false(ok)
        assert.is_truthy(tostring(e):find("store 'main' field 'retry_after' must be a number, got string", 1, true), e)
      end)
    end)

    it("an error reply is the server's message", function()
      local f = fake.start("reply", "-ERR out of \\x01 luck\\r\\n")
      finally(function() f:stop() end)
      local c = store({ port = f.port, timeout = 0.3 })
      local v, err = c:get("a")
      assert.is_nil(v)
      assert.are.equal("store 'main' (redis " .. address(f.port) .. "): ERR out of \\x01 luck", err)
    end)
  end)
end)
