-- spec/nginx/cases.lua: the nginx suite's cases (SPEC sections 10 and 11),
-- run inside an nginx worker by spec/nginx/runner.lua, one request per case.
-- Every user callback here yields: ngx.sleep and cosocket round trips to
-- the test redis-server. A case raises (through check/eq) to fail.
local cachy = require("cachy")
local core = require("cachy.core")
local resp = require("resp")
local resty_store = require("resty_store")

local M = { list = {} }
local unpack = table.unpack or unpack

local function case(name, fn)
  M.list[#M.list + 1] = { name = name, fn = fn }
end

local function port()
  return assert(tonumber(ngx.var.redis_port), "$redis_port is not set")
end

-- One command to the test Redis on a pooled cosocket; raises on failure.
local function redis(...)
  local v, err = resp.command("127.0.0.1", port(), ...)
  if err then error(err, 2) end
  return v
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. show(v[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local same = require("compare").same
local failover = require("helpers.failover")

local function eq(got, want, what)
  if not same(got, want) then
    error(string.format("%s: expected %s, got %s", what, show(want), show(got)), 2)
  end
end

local function check(cond, what, ...)
  if not cond then error(string.format(what, ...), 2) end
end

-- A yielding callback: sleeps, then counts its run on the server (INCR) and
-- pings it; returns { tag, n (server-side run count), pong }.
local function yielding(tag, counter)
  return function(...)
    counter.calls = counter.calls + 1
    ngx.sleep(0.01)
    local n = redis("INCR", "nginx-spec:runs:" .. tag)
    local pong = redis("PING")
    return { tag = tag, n = n, pong = pong, args = { ... } }
  end
end

local function fresh_counter(tag)
  redis("DEL", "nginx-spec:runs:" .. tag)
  return { calls = 0 }
end

local function memory_cache()
  return cachy.new({ prefix = "mem:", stores = { memory = { driver = "memory" } } })
end

-- A manager whose only store is the Lua store over cosockets, flushed.
local function resty_cache()
  local cache = cachy.new({
    prefix = "rs:",
    stores = { main = { driver = "resty", host = "127.0.0.1", port = port(), timeout = 2 } },
  })
  cache:extend("resty", resty_store.factory)
  local ok, err = cache:flush()
  check(ok == true, "flush of the resty store failed: %s", tostring(err))
  return cache
end

-- The host: no callback yields here ---------------------------------------

case("the LuaJIT module loads in the worker; the memory store answers", function()
  local cache = memory_cache()
  eq(cache:put("k", { 1, "x" }, 1), true, "put")
  eq(cache:get("k"), { 1, "x" }, "get")
  eq(cache:increment("n", 2), 2, "increment")
  local f = cache(function(id) return id * 2 end, { key = "plain", minutes = 1 })
  eq(f(21), 42, "a decorator whose body does not yield")
  eq(cache:remember("r", 1, function() return "plain" end), "plain", "remember, no yield")
end)

-- On nginx's LuaJIT the memory store's get, put and decorated reads go
-- through the FFI (cachy.jit), and a loop of them compiles whole.
case("memory store: get, put and decorated reads take the FFI path; their loops compile", function()
  local cache = memory_cache()
  eq(cache:put("jit", "v", 1), true, "put")
  eq(debug.getinfo(cache.put, "S").source:match("cachy/jit%.lua$") ~= nil, true, "put from cachy.jit")
  local f = cache(function(a, b) return "r", b end, { key = "jitloop", minutes = 1 })
  for i = 1, 100 do f(i, "u") end
  -- Each round starts from no trace (jit.flush) and watches the three
  -- loops. This worker has run the cases before this one, and once in a
  -- few runs the recorder began inside this case's own loop and gave up
  -- unrolling it ("loop unroll limit reached" at the loop's line, no
  -- abort in cachy): a round without any abort is asked for, in up to
  -- three.
  local aborts, traces
  local function watch(what, _, func, pc, otr)
    if what == "stop" then traces = traces + 1 end
    if what == "abort" then
      aborts[#aborts + 1] = tostring(otr) .. " at " .. tostring(require("jit.util").funcinfo(func, pc).loc)
    end
  end
  for _ = 1, 3 do
    aborts, traces = {}, 0
    jit.flush()
    jit.attach(watch, "trace")
    for _ = 1, 3 do
      for i = 1, 20000 do cache:get("jit") end
      for i = 1, 20000 do cache:put("jit" .. i % 100, "v", 1) end
      for i = 1, 20000 do f(i % 100 + 1, "u") end
    end
    jit.attach(watch)
    if #aborts == 0 then break end
  end
  eq(aborts, {}, "trace aborts")
  check(traces >= 3, "only %d traces", traces)
  eq(cache:get("jit"), "v", "get")
  eq({ f(7, "u") }, { "r", "u" }, "decorated hit")
end)

-- A hit on an item with a lifetime is checked against nginx's clock
-- (ngx_current_msec, cachy.jit) instead of a call into the store: the item
-- still expires, at the next turn of the event loop or ngx.update_time().
case("memory store: a hit without a call goes by nginx's clock, and the item expires", function()
  eq(require("cachy.jit").ngx_clock, true, "nginx's clock in use")
  local cache = memory_cache()
  eq(cache:put("brief", "v", 0.15 / 60), true, "put")
  for _ = 1, 3 do eq(cache:get("brief"), "v", "hit") end
  ngx.sleep(0.25)
  eq(cache:get("brief"), nil, "expired after a sleep")
  eq(cache:put("brief", "w", 0.1 / 60), true, "put again")
  for _ = 1, 3 do eq(cache:get("brief"), "w", "hit") end
  local t0 = ngx.now()
  repeat ngx.update_time() until ngx.now() - t0 > 0.15     -- no yield
  eq(cache:get("brief"), nil, "expired by the updated clock")
end)

case("the default on_error writes to nginx's error log at the warn level", function()
  local cache = cachy.new({ stores = { main = { driver = "failing" } } })
  cache:extend("failing", function()
    return { get = function() return nil, "backend down " .. ngx.worker.pid() end }
  end)
  local f = cache(function(x) return x + 1 end, { key = "onerr" })
  eq(f(1), 2, "the decorator fails open")
  local prefix = ngx.config.prefix()
  if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  local log = assert(io.open(prefix .. "error.log")):read("*a")
  local line = log:match("[^\n]*cachy: store 'main' %(failing%): backend down " .. ngx.worker.pid() .. "[^\n]*")
  check(line ~= nil, "no cachy line in error.log")
  check(line:find("[warn]", 1, true) ~= nil, "not at the warn level: %s", line)
end)

case("the test's RESP client talks to the test Redis through cosockets", function()
  eq(redis("PING"), "PONG", "PING")
  redis("DEL", "nginx-spec:resp")
  eq(redis("INCR", "nginx-spec:resp"), 1, "INCR")
  eq(redis("SET", "nginx-spec:resp", "a\r\nb"), "OK", "SET")
  eq(redis("GET", "nginx-spec:resp"), "a\r\nb", "GET of bytes with CR LF")
  eq(redis("GET", "nginx-spec:absent"), nil, "GET of an absent key")
  local v, err = resp.command("127.0.0.1", port(), "NOSUCHCOMMAND")
  check(v == nil and type(err) == "string" and err:find("ERR", 1, true), "error reply: %s", tostring(err))
end)

case("the Lua store's methods called directly, outside the cache, work", function()
  local s = resty_store.factory({ host = "127.0.0.1", port = port() })
  eq(s:flush("direct:"), true, "flush")
  eq(s:put("direct:a", "bytes", 1), true, "put")
  eq(s:get("direct:a"), "bytes", "get")
  eq(s:add("direct:a", "x", 0), false, "add present")
  eq(s:add("direct:b", "x", 0), true, "add absent")
  eq(s:increment("direct:n", 3), 3, "increment")
  eq(s:many({ "direct:a", "direct:zz" }), { ["direct:a"] = "bytes" }, "many")
  eq(s:put_many({ ["direct:c"] = "c", ["direct:d"] = "d" }, 0.5), true, "put_many")
  eq(s:get("direct:d"), "d", "get after put_many")
  eq(s:forget("direct:a"), true, "forget")
  eq(s:forget("direct:a"), false, "forget absent")
  eq(s:flush("direct:"), true, "flush again")
  eq(redis("EXISTS", "direct:b", "direct:c", "direct:n"), 0, "keys left")
end)

-- (a) the decorator ------------------------------------------------------

local function decorator_cases(label, make_cache, opts)
  case(label .. "decorator: a body that sleeps and does a cosocket round trip gives its result",
    function()
      local counter = fresh_counter("deco-a")
      local f = make_cache()(yielding("deco-a", counter), opts("ka"))
      local v = f(7)
      eq(v, { tag = "deco-a", n = 1, pong = "PONG", args = { 7 } }, "f(7)")
      eq(counter.calls, 1, "body runs")
    end)

  case(label .. "decorator: the second call is a hit, other arguments run the body", function()
    local counter = fresh_counter("deco-b")
    local f = make_cache()(yielding("deco-b", counter), opts("kb"))
    local v1 = f(7)
    local v2 = f(7)
    eq(counter.calls, 1, "body runs after two calls with 7")
    eq(v2, v1, "second f(7)")
    eq(redis("GET", "nginx-spec:runs:deco-b"), "1", "server-side run count")
    local v3 = f(8)
    eq(counter.calls, 2, "body runs after f(8)")
    eq(v3.args, { 8 }, "f(8) args")
    eq(v3.n, 2, "f(8) server-side count")
  end)

  case(label .. "decorator: nil, err after a yield is returned and not cached", function()
    local calls = 0
    local f = make_cache()(function(id)
      calls = calls + 1
      ngx.sleep(0.005)
      redis("PING")
      return nil, "not found " .. id
    end, opts("kc"))
    local a, b = f(1)
    eq({ a, b }, { nil, "not found 1" }, "f(1)")
    a, b = f(1)
    eq({ a, b }, { nil, "not found 1" }, "f(1) again")
    eq(calls, 2, "body runs")
  end)
end

decorator_cases("memory store: ", memory_cache, function(k) return { key = k, minutes = 1 } end)

-- (b) remember and get's function default ---------------------------------

local function remember_cases(label, make_cache)
  case(label .. "remember: a yielding fn gives its result, stored, run once", function()
    local cache = make_cache()
    local counter = fresh_counter("rem")
    local fn = yielding("rem", counter)
    local v = cache:remember("r1", 1, fn)
    eq(v, { tag = "rem", n = 1, pong = "PONG", args = {} }, "remember")
    eq(cache:get("r1"), v, "get after remember")
    local v2 = cache:remember("r1", 1, fn)
    eq(v2, v, "second remember")
    eq(counter.calls, 1, "fn runs")
  end)

  case(label .. "remember_forever: a yielding fn gives its result, run once", function()
    local cache = make_cache()
    local counter = fresh_counter("remf")
    local fn = yielding("remf", counter)
    local v = cache:remember_forever("rf", fn)
    eq(v and v.n, 1, "remember_forever n")
    eq(cache:remember_forever("rf", fn), v, "second remember_forever")
    eq(counter.calls, 1, "fn runs")
  end)

  case(label .. "remember: a yielding fn returning nil, err stores nothing", function()
    local cache = make_cache()
    local a, b = cache:remember("r2", 1, function()
      ngx.sleep(0.005)
      redis("PING")
      return nil, "nope"
    end)
    eq({ a, b }, { nil, "nope" }, "remember")
    eq(cache:has("r2"), false, "has after")
  end)

  case(label .. "get: a yielding function default is called on a miss, not stored", function()
    local cache = make_cache()
    local counter = fresh_counter("getdef")
    local fn = yielding("getdef", counter)
    local v = cache:get("missing", fn)
    eq(v and v.pong, "PONG", "get's default result")
    eq(counter.calls, 1, "default runs")
    eq(cache:has("missing"), false, "has after")
    assert(cache:put("present", "here", 1))
    eq(cache:get("present", fn), "here", "get of a present key")
    eq(counter.calls, 1, "default runs on a hit")
  end)
end

remember_cases("memory store: ", memory_cache)

-- (c) a Lua store over cosockets ------------------------------------------

case("resty store: put/get round trip of a table value, with its lifetime", function()
  local cache = resty_cache()
  local value = { name = "Ann", list = { 1, 2.5, "x" }, nested = { ok = true, no = false } }
  eq(cache:put("t", value, 1), true, "put")
  eq(cache:get("t"), value, "get")
  eq(redis("EXISTS", "rs:t"), 1, "key rs:t in Redis")
  local pttl = redis("PTTL", "rs:t")
  check(pttl > 0 and pttl <= 60000, "PTTL of rs:t is %s, wanted 1..60000", tostring(pttl))
  eq(cache:forever("f", "v"), true, "forever")
  eq(redis("PTTL", "rs:f"), -1, "PTTL of a forever key")
  eq(cache:get("absent"), nil, "get of an absent key")
  eq(cache:get("absent", "dflt"), "dflt", "get's plain default")
end)

case("resty store: add true then false", function()
  local cache = resty_cache()
  eq(cache:add("a", "first", 1), true, "first add")
  eq(cache:add("a", "second", 1), false, "second add")
  eq(cache:get("a"), "first", "value")
end)

case("resty store: forget, has, pull", function()
  local cache = resty_cache()
  assert(cache:put("k", { 1 }, 1))
  eq(cache:has("k"), true, "has before")
  eq(cache:forget("k"), true, "forget")
  eq(cache:get("k"), nil, "get after forget")
  eq(cache:forget("k"), false, "second forget")
  eq(cache:has("k"), false, "has after")
  assert(cache:put("p", "pulled", 1))
  eq(cache:pull("p"), "pulled", "pull")
  eq(redis("EXISTS", "rs:p"), 0, "rs:p after pull")
end)

case("resty store: increment and decrement", function()
  local cache = resty_cache()
  eq(cache:increment("n"), 1, "increment")
  eq(cache:increment("n", 5), 6, "increment by 5")
  eq(cache:decrement("n", 2), 4, "decrement by 2")
  eq(cache:decrement("n", 10), -6, "decrement below zero")
  eq(cache:get("n"), -6, "get")
  eq(redis("GET", "rs:n"), "-6", "bytes in Redis")
  redis("SET", "rs:ext", "10")
  eq(cache:increment("ext"), 11, "increment of a value another client wrote")
  assert(cache:put("s", "text", 1))
  local v, err = cache:increment("s")
  eq(v, nil, "increment of a string")
  check(type(err) == "string" and err ~= "", "no error message: %s", tostring(err))
end)

case("resty store: many", function()
  local cache = resty_cache()
  assert(cache:put("a", 1, 1))
  assert(cache:put("b", { x = "y" }, 1))
  local before = resty_store.calls.many or 0
  eq(cache:many({ "a", "b", "zz" }), { a = 1, b = { x = "y" } }, "many")
  eq((resty_store.calls.many or 0) - before, 1, "calls to the store's many")
end)

case("resty store: put_many", function()
  local cache = resty_cache()
  local before = resty_store.calls.put_many or 0
  eq(cache:put_many({ x = 1, y = { 2 }, z = "three" }, 1), true, "put_many")
  eq((resty_store.calls.put_many or 0) - before, 1, "calls to the store's put_many")
  eq(cache:get("x"), 1, "x")
  eq(cache:get("y"), { 2 }, "y")
  eq(cache:get("z"), "three", "z")
  local pttl = redis("PTTL", "rs:z")
  check(pttl > 0 and pttl <= 60000, "PTTL of rs:z is %s", tostring(pttl))
end)

case("resty store: flush removes only the keys under the prefix", function()
  local cache = resty_cache()
  assert(cache:put("k1", "v", 1))
  assert(cache:put("k2", "v", 1))
  redis("SET", "other:k", "stays")
  eq(cache:flush(), true, "flush")
  eq(cache:get("k1"), nil, "k1 after flush")
  eq(redis("EXISTS", "rs:k1", "rs:k2"), 0, "rs: keys in Redis after flush")
  eq(redis("GET", "other:k"), "stays", "a key outside the prefix")
  redis("DEL", "other:k")
end)

case("resty store: tags put, get, flush", function()
  local cache = resty_cache()
  eq(cache:tags("a", "b"):put("tk", { v = 1 }, 1), true, "tagged put")
  eq(cache:tags("b"):put("other", "w", 1), true, "put tagged b")
  eq(cache:tags("a", "b"):get("tk"), { v = 1 }, "tagged get")
  eq(cache:tags("a"):flush(), true, "flush tag a")
  eq(cache:tags("a", "b"):get("tk"), nil, "tagged get after flush of a")
  eq(cache:tags("b"):get("other"), "w", "the item tagged b only")
end)

case("resty store: tags remember with a yielding fn", function()
  local cache = resty_cache()
  local counter = fresh_counter("tagrem")
  local fn = yielding("tagrem", counter)
  local v = cache:tags("t1"):remember("tr", 1, fn)
  eq(v and v.n, 1, "tagged remember")
  eq(cache:tags("t1"):remember("tr", 1, fn), v, "second tagged remember")
  eq(counter.calls, 1, "fn runs")
end)

remember_cases("resty store: ", resty_cache)
decorator_cases("resty store: ", resty_cache, function(k) return { key = k, minutes = 1 } end)

case("resty store: the decorator through cache:store(name) and { store = name }", function()
  local cache = resty_cache()
  local counter = fresh_counter("deco-store")
  local body = yielding("deco-store", counter)
  local f = cache:store("main")(body, { key = "ks", minutes = 1 })
  local g = cache(body, { key = "ks", minutes = 1, store = "main" })
  local v = f(1)
  eq(g(1), v, "g(1) reads what f(1) stored (same key and arguments)")
  eq(counter.calls, 1, "body runs")
end)

-- (d) several coroutines of one worker inside cache calls at once ---------

-- Three light threads, each in a remember with its own key whose fn waits
-- (yielding) until all three are inside, then finishes in reverse order.
local function three_threads(make_cache, tag)
  local cache = make_cache()
  local inside, most = 0, 0
  local function run(i)
    return cache:remember(tag .. i, 1, function()
      inside = inside + 1
      if inside > most then most = inside end
      for _ = 1, 400 do
        if most >= 3 then break end
        ngx.sleep(0.005)
      end
      local n = redis("INCR", "nginx-spec:runs:" .. tag .. i)
      ngx.sleep(0.01 * (4 - i))
      inside = inside - 1
      return { i = i, n = n }
    end)
  end
  for i = 1, 3 do redis("DEL", "nginx-spec:runs:" .. tag .. i) end
  local threads = {}
  for i = 1, 3 do threads[i] = assert(ngx.thread.spawn(run, i)) end
  for i = 1, 3 do
    local ok, v, err = ngx.thread.wait(threads[i])
    check(ok, "thread %d raised: %s", i, tostring(v))
    eq(v, { i = i, n = 1 }, "thread " .. i .. "'s value (err: " .. tostring(err) .. ")")
  end
  eq(most, 3, "callbacks inside remember at once")
  for i = 1, 3 do eq(cache:get(tag .. i), { i = i, n = 1 }, "stored value " .. i) end
end

case("memory store: three light threads in yielding remembers get their own values", function()
  three_threads(memory_cache, "thr-mem")
end)

case("resty store: three light threads in yielding remembers get their own values", function()
  three_threads(resty_cache, "thr-rs")
end)

-- Loading ---------------------------------------------------------------

-- The modules of cachy loaded anew inside a request (a coroutine of
-- nginx's, where coroutine.resume yields to nginx), then put back as they
-- were. cachy.core stays: a C module is opened once.
case("cachy can be required inside a request, not only in init_by_lua", function()
  local saved = {}
  for name, mod in pairs(package.loaded) do
    if (name == "cachy" or name:find("^cachy%.")) and name ~= "cachy.core" then
      saved[name] = mod
    end
  end
  for name in pairs(saved) do package.loaded[name] = nil end
  local ok, mod = pcall(require, "cachy")
  for name in pairs(package.loaded) do
    if (name == "cachy" or name:find("^cachy%.")) and name ~= "cachy.core" then
      package.loaded[name] = nil
    end
  end
  for name, m in pairs(saved) do package.loaded[name] = m end
  check(ok, "require('cachy') raised: %s", tostring(mod))
  check(type(mod) == "table" and type(mod.new) == "function", "require('cachy') gave %s", tostring(mod))
  eq(mod.new():put("k", "v", 1), true, "put through the freshly loaded module")
end)

-- (e) the built-in redis driver in nginx (SPEC section 11) ----------------

local behaviour_cases = require("behaviour_cases")
local in_timer = behaviour_cases.in_timer

local function redis_cache(fields, prefix)
  local store = { driver = "redis", port = port() }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ prefix = prefix or "drv:", stores = { main = store } })
end

local function transport_of(cache)
  return cache:store("main"):_store():transport()
end

case("redis driver: transport auto uses cosockets in the content and timer phases", function()
  local cache = redis_cache()
  eq(transport_of(cache), "cosocket", "content phase")
  eq(in_timer(function() return transport_of(cache) end), "cosocket", "timer phase")
  eq(redis_cache({ transport = "blocking" }):store("main")._fast ~= nil, false,
    "a blocking store has no fast path before its first use")
  local blocking = redis_cache({ transport = "blocking" })
  eq(blocking:put("b", 1, 1), true, "put through transport blocking")
  eq(blocking._fast ~= nil, true, "transport blocking binds the C fast path")
  eq(cache:put("a", 1, 1), true, "put through transport auto")
  eq(cache._fast, nil, "transport auto binds no fast path in nginx")
end)

-- Runs fn in a light thread while this one ticks every 10 ms: fn's
-- result, the seconds it took, and the ticks counted meanwhile.
local function ticks_while(fn)
  local done, got, elapsed = false, nil, nil
  local thread = ngx.thread.spawn(function()
    ngx.update_time()
    local t0 = ngx.now()
    got = fn()
    ngx.update_time()
    elapsed = ngx.now() - t0
    done = true
  end)
  local ticks = 0
  while not done do
    ngx.sleep(0.01)
    ticks = ticks + 1
  end
  ngx.thread.wait(thread)
  return got, elapsed, ticks
end

-- A call that waits for Redis (CLIENT PAUSE) while the worker keeps
-- running light threads: the ticks counted during the wait.
local function ticks_during_slow_call(cache)
  assert(cache:put("slow", "v", 1))          -- connected (and pooled) before the pause
  eq(redis("CLIENT", "PAUSE", "300"), "OK", "CLIENT PAUSE")
  local got, elapsed, ticks = ticks_while(function() return cache:get("slow") end)
  eq(got, "v", "the value read during the pause")
  check(elapsed >= 0.2, "the call took %.3f s, wanted the pause (0.3 s)", elapsed)
  return ticks
end

case("redis driver: a cosocket call lets the worker run while Redis is slow; a blocking one does not", function()
  local ticks = ticks_during_slow_call(redis_cache({ transport = "cosocket" }))
  check(ticks >= 10, "only %d ticks of 10 ms during a 0.3 s call on cosockets", ticks)
  ngx.sleep(0.35)
  ticks = ticks_during_slow_call(redis_cache({ transport = "blocking" }))
  check(ticks <= 1, "%d ticks during a blocking call (wanted none)", ticks)
end)

local function failure(cache, method, ...)
  local r = { cache[method](cache, ...) }
  return { r[1], r[2], r[3] }
end

case("redis driver: a refused connection gives the blocking driver's message and code", function()
  local want = { nil, "store 'main' (redis 127.0.0.1:1): connection refused", "refused" }
  eq(failure(redis_cache({ port = 1, transport = "cosocket" }), "get", "k"), want, "cosocket")
  eq(failure(redis_cache({ port = 1, transport = "blocking" }), "get", "k"), want, "blocking")
  eq(failure(redis_cache({ port = 1, transport = "cosocket" }), "put", "k", 1), want, "cosocket put")
end)

-- spec/30-redis_spec.lua's breaker on cosockets: the store's socket path
-- is a link made only after the first, failed connect; calls keep the
-- failure for retry_after (1 s), then connect through the link.
case("redis driver: a failed connect is not retried for retry_after seconds; then the next call connects", function()
  local tmp = os.tmpname()
  os.remove(tmp)
  local link = tmp .. ".redis.sock.missing"      -- the nginx log's failed connect is expected (run)
  local cache = redis_cache({ socket = link, transport = "cosocket", retry_after = 1 }, "held:")
  local want = failure(cache, "get", "k")
  eq(want[3], "refused", "no such socket: " .. tostring(want[2]))
  ngx.update_time()
  local t_failed = ngx.now()
  local rc = os.execute("ln -s '" .. behaviour_cases.socket .. "' '" .. link .. "'")
  check(rc == 0 or rc == true, "cannot link %s", link)
  local ok, why = pcall(function()
    local calls, t_ok = 0, nil
    repeat
      local r = failure(cache, "get", "k")
      ngx.update_time()
      if r[2] == nil then t_ok = ngx.now() break end
      eq(r, want, "call " .. calls .. ", held back")
      calls = calls + 1
      ngx.sleep(0.02)
    until ngx.now() > t_failed + 3
    check(t_ok, "never connected again")
    check(t_ok - t_failed >= 0.95 and t_ok - t_failed < 1.5, "connected %.3f s after the failure", t_ok - t_failed)
    check(calls > 10, "%d calls held back", calls)
    eq(cache:put("k", "v", 1), true, "put once connected")
  end)
  os.remove(link)
  assert(ok, why)
end)

case("redis driver: a timeout gives the blocking driver's message; the late reply is never read", function()
  local want = { nil, "store 'main' (redis 127.0.0.1:" .. port() .. "): timed out after 0.1 s", "timeout" }
  for _, transport in ipairs({ "cosocket", "blocking" }) do
    local cache = redis_cache({ transport = transport, timeout = 0.1 })
    assert(cache:put("late", "old", 1))
    eq(redis("CLIENT", "PAUSE", "250"), "OK", "CLIENT PAUSE")
    eq(failure(cache, "get", "late"), want, transport .. ": get during the pause")
    ngx.sleep(0.3)
    eq(cache:put("late", "new", 1), true, transport .. ": put after the pause")
    eq(cache:get("late"), "new", transport .. ": get after the pause")
  end
end)

case("redis driver: SELECT on new connections; pools kept apart by database", function()
  local db3 = redis_cache({ db = 3, transport = "cosocket" }, "db:")
  local db0 = redis_cache({ transport = "cosocket" }, "db:")
  for _ = 1, 3 do                                        -- pooled connections reused
    eq(db3:put("k", "three", 1), true, "put in db 3")
    eq(db0:put("k", "zero", 1), true, "put in db 0")
  end
  eq(db3:get("k"), "three", "get in db 3")
  eq(db0:get("k"), "zero", "get in db 0")
  local conn = assert(resp.connect("127.0.0.1", port()))
  eq(conn:call("SELECT", "3"), "OK", "SELECT 3")
  local bytes = conn:call("GET", "db:k")
  conn:close()
  eq(redis_cache({ db = 3, transport = "blocking" }, "db:"):get("k"), "three", "db 3 through the blocking driver")
  check(type(bytes) == "string", "db:k in db 3 holds %s", tostring(bytes))
  eq(failure(redis_cache({ db = 100000, transport = "cosocket" }), "get", "k"),
     failure(redis_cache({ db = 100000, transport = "blocking" }), "get", "k"), "SELECT of a bad db: same failure")
end)

case("redis driver: AUTH with a user and password, on new connections only; wrong passwords fail alike", function()
  eq(redis("ACL", "SETUSER", "cachy-spec", "reset", "on", ">secret", "~*", "&*", "+@all"), "OK", "ACL SETUSER")
  local ok, err = pcall(function()
    local good = redis_cache({ username = "cachy-spec", password = "secret", transport = "cosocket" })
    for i = 1, 3 do eq(good:put("auth", i, 1), true, "put as cachy-spec") end
    eq(good:get("auth"), 3, "get as cachy-spec")
    local bad_c = failure(redis_cache({ username = "cachy-spec", password = "wrong", transport = "cosocket" }), "get", "auth")
    local bad_b = failure(redis_cache({ username = "cachy-spec", password = "wrong", transport = "blocking" }), "get", "auth")
    eq(bad_c, bad_b, "a wrong password: cosocket and blocking")
    check(tostring(bad_c[2]):find("authentication failed: WRONGPASS", 1, true) and bad_c[3] == "backend",
      "wrong password gave %s, %s", tostring(bad_c[2]), tostring(bad_c[3]))
  end)
  redis("ACL", "DELUSER", "cachy-spec")
  if not ok then error(err, 0) end
end)

case("redis driver: bytes written on a cosocket read back through the blocking driver, and back", function()
  local cos = redis_cache({ transport = "cosocket" }, "x:")
  local blk = redis_cache({ transport = "blocking" }, "x:")
  local value = { s = "a\0b\r\n", n = 1.5, list = { 1, 2, 3 }, t = true }
  eq(cos:put("v", value, 1), true, "put on a cosocket")
  eq(blk:get("v"), value, "get through the blocking driver")
  eq(blk:put("w", { back = "again" }, 1), true, "put through the blocking driver")
  eq(cos:get("w"), { back = "again" }, "get on a cosocket")
  eq(cos:increment("n", 2), 2, "increment on a cosocket")
  eq(blk:increment("n", 3), 5, "increment through the blocking driver")
  eq(cos:tags("t"):put("tk", "tagged", 1), true, "tagged put on a cosocket")
  eq(blk:tags("t"):get("tk"), "tagged", "tagged get through the blocking driver")
  eq(cos:flush(), true, "flush on a cosocket")
  eq(blk:get("v"), nil, "gone for the blocking driver")
end)

case("redis driver: a Unix socket, on both transports", function()
  local path = behaviour_cases.socket
  local cos = redis_cache({ socket = path, transport = "cosocket" }, "unix:")
  local blk = redis_cache({ socket = path, transport = "blocking" }, "unix:")
  for i = 1, 3 do eq(cos:put("k", { i = i }, 1), true, "put on a cosocket") end
  eq(blk:get("k"), { i = 3 }, "get through the blocking driver")
  eq(redis("EXISTS", "unix:k"), 1, "the key over TCP")
  local missing = path .. ".missing"
  local c = failure(redis_cache({ socket = missing, transport = "cosocket" }), "get", "k")
  eq({ c[1], c[3] }, { nil, "refused" }, "a missing socket: code")
  check(tostring(c[2]):find("^store 'main' %(redis " .. missing:gsub("%p", "%%%0") .. "%): cannot connect: "),
    "a missing socket: %s", tostring(c[2]))
end)

case("redis driver: init_worker_by_lua falls back to the blocking driver; transport cosocket refuses there", function()
  local r = ngx.shared.results:get("init_worker")
  eq(r, "ok", "init_worker's checks")
end)

-- A request to this server's /phases on a cosocket (content writes on a
-- cosocket, header_filter and log read and write through the blocking
-- fallback), then the results those phases recorded.
case("redis driver: header_filter and log phases fall back to the blocking driver", function()
  local id = tostring(ngx.now()):gsub("%.", "") .. math.random(1000000)
  local sock = ngx.socket.tcp()
  sock:settimeout(5000)
  assert(sock:connect("127.0.0.1", behaviour_cases.nginx_port))
  assert(sock:send("GET /phases?id=" .. id .. " HTTP/1.0\r\nHost: localhost\r\n\r\n"))
  local answer = sock:receive("*a")
  sock:close()
  check(answer and answer:find("\r\n\r\nok\n", 1, true), "/phases answered %s", tostring(answer))
  local results = ngx.shared.results
  for _ = 1, 200 do
    if results:get("log:" .. id) then break end
    ngx.sleep(0.01)
  end
  eq(results:get("header_filter:" .. id), "ok", "header_filter's checks")
  eq(results:get("log:" .. id), "ok", "log's checks")
  eq(require("phases").cache("auto"):get("h:" .. id), "header", "header_filter's value, read on a cosocket")
end)

-- (f) the built-in memcached driver in nginx (SPEC section 11) -------------

local function mc_cache(fields, prefix, count)
  local store = { driver = "memcached", servers = behaviour_cases.mc_servers(count or 1) }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ prefix = prefix or "mcdrv:", stores = { main = store } })
end

case("memcached driver: transport auto uses cosockets in the content and timer phases, binds nothing", function()
  local cache = mc_cache()
  eq(transport_of(cache), "cosocket", "content phase")
  eq(in_timer(function() return transport_of(cache) end), "cosocket", "timer phase")
  eq(cache:put("a", 1, 1), true, "put through transport auto")
  eq(cache._fast, nil, "transport auto binds no fast path in nginx")
  local blocking = mc_cache({ transport = "blocking" })
  eq(blocking:put("b", 1, 1), true, "put through transport blocking")
  eq(blocking._fast ~= nil, true, "transport blocking binds the C fast path")
end)

case("memcached driver: a refused connection gives the blocking driver's message and code", function()
  for _, servers in ipairs({ { "127.0.0.1:1" }, { "127.0.0.1:1", "127.0.0.1:2" } }) do
    for _, method in ipairs({ "get", "put", "increment", "many", "put_many", "flush" }) do
      local args = ({ get = { "k" }, put = { "k", 1, 1 }, increment = { "k" }, many = { { "a", "b" } },
                      put_many = { { a = 1, b = 2 }, 1 }, flush = {} })[method]
      local got = {}
      for _, transport in ipairs({ "cosocket", "blocking" }) do
        got[transport] = failure(mc_cache({ servers = servers, transport = transport }), method, unpack(args))
      end
      eq(got.cosocket, got.blocking, #servers .. " server(s), " .. method .. ": cosocket and blocking")
      check(got.cosocket[1] == nil and got.cosocket[3] == "refused", "%s gave %s", method, show(got.cosocket))
    end
  end
end)

case("memcached driver: a bad servers entry fails alike on both transports", function()
  local servers = { "127.0.0.1:99999" }
  eq(failure(mc_cache({ servers = servers, transport = "cosocket" }), "get", "k"),
     failure(mc_cache({ servers = servers, transport = "blocking" }), "get", "k"), "port out of range")
end)

case("memcached driver: bytes written on a cosocket read back through the blocking driver, and back", function()
  for _, count in ipairs({ 1, 3 }) do
    local cos = mc_cache({ transport = "cosocket" }, "mcx:", count)
    local blk = mc_cache({ transport = "blocking" }, "mcx:", count)
    local long = "long key " .. string.rep("\1x", 200)
    local value = { s = "a\0b\r\n", n = 1.5, list = { 1, 2, 3 }, t = true }
    eq(cos:put("v", value, 60), true, "put on a cosocket")
    eq(blk:get("v"), value, "get through the blocking driver")
    eq(cos:put(long, "long", 60), true, "a hashed key on a cosocket")
    eq(blk:get(long), "long", "the hashed key through the blocking driver")
    eq(blk:put("w", { back = "again" }, 60), true, "put through the blocking driver")
    eq(cos:get("w"), { back = "again" }, "get on a cosocket")
    eq(cos:add("w", 1, 60), false, "add of a key the blocking driver wrote")
    eq(cos:increment("n", 2), 2, "increment on a cosocket")
    eq(blk:increment("n", 3), 5, "increment through the blocking driver")
    eq(cos:decrement("n", 9), -4, "decrement below zero on a cosocket")
    eq(blk:increment("n", 1), -3, "increment through the blocking driver")
    eq(cos:increment("n", 10), 7, "back above zero on a cosocket")
    eq(blk:get("n"), 7, "the counter through the blocking driver")
    eq(cos:put_many({ a = "A", b = { 2 }, [long] = "L" }, 60), true, "put_many on a cosocket")
    eq(blk:many({ "a", "b", long, "zz" }), { a = "A", b = { 2 }, [long] = "L" }, "many through the blocking driver")
    eq(blk:put_many({ c = "C", d = 4 }, 60), true, "put_many through the blocking driver")
    eq(cos:many({ "c", "d", "a", "zz" }), { c = "C", d = 4, a = "A" }, "many on a cosocket")
    eq(cos:forget("c"), true, "forget on a cosocket")
    eq(blk:get("c"), nil, "gone for the blocking driver")
    eq(cos:tags("t"):put("tk", "tagged", 60), true, "tagged put on a cosocket")
    eq(blk:tags("t"):get("tk"), "tagged", "tagged get through the blocking driver")
    eq(cos:flush(), true, "flush on a cosocket")
    eq(blk:get("v"), nil, "flushed for the blocking driver")
  end
end)

case("memcached driver: a value too large gives the blocking driver's message and code", function()
  local big = string.rep("x", 3 * 1024 * 1024)
  local c = failure(mc_cache({ transport = "cosocket" }), "put", "big", big, 60)
  local b = failure(mc_cache({ transport = "blocking" }), "put", "big", big, 60)
  eq(c, b, "too big: cosocket and blocking")
  eq(c[3], "too_big", "its code")
  eq(mc_cache({ transport = "cosocket" }):put("small", "ok", 60), true, "the store still works")
end)

case("memcached driver: a server left out: its keys go to the next server, as the blocking driver's", function()
  local servers = behaviour_cases.mc_servers(3)
  servers[4] = "127.0.0.1:1"
  local cos = mc_cache({ servers = servers, transport = "cosocket" }, "mcfo:")
  local blk = mc_cache({ servers = servers, transport = "blocking" }, "mcfo:")
  for i = 1, 60 do eq(cos:put("k" .. i, i, 60), true, "put " .. i .. " on a cosocket with a dead server") end
  for i = 1, 60 do eq(blk:get("k" .. i), i, "get " .. i .. " through the blocking driver") end
  eq(cos:many({ "k1", "k2", "k3" }), { k1 = 1, k2 = 2, k3 = 3 }, "many with a dead server")
end)

-- spec/40-memcached_spec.lua's failover case on cosockets: while a server
-- is stopped, writes and deletes of its keys go elsewhere; once it
-- resumes, this worker cleans it before it serves again, so no replaced
-- or forgotten value comes back (polled for 5 s: the server is out 2 s).
case("memcached driver: never serves a value replaced or forgotten while its server was stopped", function()
  local servers = behaviour_cases.mc_servers(3)
  local pid = assert(behaviour_cases.mc_pids and behaviour_cases.mc_pids[2], "behaviour_cases.mc_pids is not set")
  local cache = mc_cache({ servers = servers, transport = "cosocket", timeout = 0.5, connect_timeout = 0.5 },
                         "mcstale:")
  local ring = assert(core.mc_ring(servers))
  -- server 2 alone: a put made while this worker still left that server
  -- out (after an earlier case's failure on a loaded machine) went to
  -- another one, and such a key is neither the stopped server's nor safe
  -- to count as another server's
  local on2 = mc_cache({ servers = { servers[2] }, transport = "blocking" }, "mcstale:")
  local mine, others = {}, {}
  for i = 1, 300 do
    eq(cache:put("key" .. i, "v" .. i, 10), true, "put key" .. i)
    if ring:home(core.mc_key("mcstale:key" .. i)) ~= 2 then
      others[#others + 1] = i
    elseif on2:get("key" .. i) == "v" .. i then
      mine[#mine + 1] = i
    end
  end
  check(#mine >= 20, "server 2 owns %d keys", #mine)
  local replaced, forgotten = {}, {}
  for j = 1, 10 do replaced[j] = mine[j] end
  for j = 11, 20 do forgotten[#forgotten + 1] = mine[j] end

  require("helpers.stopped").stop(pid, ngx.sleep)
  local ok, why = pcall(function()
    local v, err = cache:get("key" .. replaced[1])
    eq({ v, err }, {}, "a key of the stopped server: a plain miss once it is left out")
    for _, i in ipairs(replaced) do eq(cache:put("key" .. i, "NEW" .. i, 10), true, "replace key" .. i) end
    for _, i in ipairs(forgotten) do check(cache:forget("key" .. i) ~= nil, "forget key%d", i) end
    for _, i in ipairs(replaced) do eq(cache:get("key" .. i), "NEW" .. i, "key" .. i .. " meanwhile") end
  end)
  os.execute("kill -CONT " .. pid)
  assert(ok, why)

  local deadline, polls = ngx.now() + 5, 0
  while ngx.now() < deadline do
    for _, i in ipairs(replaced) do
      local v, err = cache:get("key" .. i)
      check(err == nil and (v == nil or v == "NEW" .. i), "key%d read back %s (%s)", i, tostring(v), tostring(err))
    end
    for _, i in ipairs(forgotten) do
      local v, err = cache:get("key" .. i)
      check(err == nil and v == nil, "forgotten key%d read back %s (%s)", i, tostring(v), tostring(err))
    end
    polls = polls + 1
    ngx.sleep(0.05)
    ngx.update_time()
  end
  check(polls > 20, "%d polls", polls)
  -- only the keys written meanwhile were deleted: no server was emptied
  for _, i in ipairs(others) do eq(cache:get("key" .. i), "v" .. i, "key" .. i .. " of another server") end
  -- the resumed server is back: a write of its key lands there, where the
  -- blocking driver (all servers in) reads it
  eq(cache:put("key" .. replaced[1], "NEWER", 10), true, "put after the outage")
  local blk = mc_cache({ servers = servers, transport = "blocking" }, "mcstale:")
  eq(blk:get("key" .. replaced[1]), "NEWER", "the key on its own server")
end)

case("memcached driver: init_worker_by_lua falls back to the blocking driver; transport cosocket refuses there", function()
  eq(ngx.shared.results:get("init_worker:memcached"), "ok", "init_worker's checks")
end)

-- The placement check (spec/nginx/run): /?mcplace=1 writes 300 keys on a
-- cosocket over three servers (one of weight 2); lua5.4 then finds each on
-- the server the blocking driver uses for it.
function M.mc_place_servers()
  local s = behaviour_cases.mc_servers(3)
  s[2] = s[2] .. " 2"
  return s
end

function M.mc_place_key(i)
  if i % 10 == 0 then return "long " .. string.rep("x", 260) .. i end
  if i % 7 == 0 then return "sp ace " .. i end
  return "k" .. i
end

function M.mc_place()
  local cache = cachy.new({ prefix = "place:", stores = { main = {
    driver = "memcached", servers = M.mc_place_servers(), transport = "cosocket" } } })
  for i = 1, 300 do
    local ok, err = cache:put(M.mc_place_key(i), "nginx:" .. i, 120)
    check(ok == true, "put %d: %s", i, tostring(err))
  end
  return "ok"
end

behaviour_cases.add(case)
require("shdict_cases").add(case)

-- ---- Redis Cluster over cosockets (cachy.resty.redis_cluster) ---------------

local core = require("cachy.core")

local function cluster_ports()
  local out = {}
  for i, seed in ipairs(behaviour_cases.cluster) do out[i] = tonumber(seed:match(":(%d+)$")) end
  return out
end

-- One command to cluster node port: the reply, or nil, err (a failure,
-- or MOVED from a node that does not serve the key).
local function node(p, ...)
  return resp.command("127.0.0.1", p, ...)
end

-- The node (port) that holds key: the one that answers EXISTS with 1.
local function holder(key)
  local found
  for _, p in ipairs(cluster_ports()) do
    if node(p, "EXISTS", key) == 1 then
      check(found == nil, "key %s on two nodes", key)
      found = p
    end
  end
  return found
end

local function cluster_cache(fields)
  local store = { driver = "redis", cluster = behaviour_cases.cluster, transport = "cosocket" }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ stores = { main = store } })
end

case("redis cluster (cosocket): each key on one master, every master used; the blocking driver reads them", function()
  local cache, blocking = cluster_cache(), cluster_cache({ transport = "blocking" })
  eq(transport_of(cache), "cosocket", "transport")
  local per = {}
  for i = 1, 60 do
    check(cache:put("ck" .. i, "v" .. i, 60) == true, "put %d", i)
    local p = holder("ck" .. i)
    check(p ~= nil, "key ck%d on no node", i)
    per[p] = (per[p] or 0) + 1
    eq(blocking:get("ck" .. i), "v" .. i, "the blocking driver's read of ck" .. i)
  end
  for _, p in ipairs(cluster_ports()) do check((per[p] or 0) > 0, "node %d holds no key", p) end
  local got = cache:many({ "ck1", "ck2", "ck3", "nope" })
  eq(got, { ck1 = "v1", ck2 = "v2", ck3 = "v3" }, "many")
  check(cache:flush() == true, "flush")
  for _, p in ipairs(cluster_ports()) do eq(node(p, "DBSIZE"), 0, "keys left on " .. p) end
end)

-- many and put_many send every master's pipeline before reading any
-- reply. A master that does not answer fails the call with its timeout;
-- the other masters' connections, whose replies were not read, are
-- closed, not pooled, so the calls after read their own replies.
case("redis cluster (cosocket): many with a master stopped fails; the calls after read their own replies", function()
  local cache = cluster_cache({ timeout = 0.3 })
  local keys, vals = {}, {}
  for i = 1, 60 do
    keys[i] = "pk" .. i
    vals[keys[i]] = "v" .. i
  end
  eq(cache:put_many(vals, 1), true, "put_many")
  eq(cache:many(keys), vals, "many")
  local stopped = holder("pk1")
  local pid = assert(behaviour_cases.cluster_pids[stopped], "no pid for node " .. tostring(stopped))
  require("helpers.stopped").stop(pid, ngx.sleep)
  local ok, err = pcall(function()
    local got, merr, code = cache:many(keys)
    eq({ got, code }, { nil, "timeout" }, "many with node " .. stopped .. " stopped")
    check(type(merr) == "string" and merr:find(":" .. stopped, 1, true), "the error names the node: %s", tostring(merr))
    local pok, perr = cache:put_many({ pk1 = "w1", pk2 = "w2" }, 1)
    eq(pok, nil, "put_many with a node stopped")
    check(type(perr) == "string", "put_many's error: %s", tostring(perr))
  end)
  os.execute("kill -CONT " .. pid)
  if not ok then error(err, 0) end
  -- A reply read by the wrong call would give a key another key's value.
  -- pk1 and pk2 may hold what the failed put_many sent (the stopped node
  -- reads its SET once resumed, even from a closed connection).
  local function own(i, v, what)
    check(v == "v" .. i or (i <= 2 and v == "w" .. i), "%s: %s read %s", what, keys[i], tostring(v))
  end
  for i = 1, 60 do own(i, cache:get(keys[i]), "get") end
  local got = cache:many(keys)
  for i = 1, 60 do own(i, got[keys[i]], "many") end
  eq(cache:put_many(vals, 1), true, "put_many after")
  got = cache:many(keys)
  for i = 1, 60 do own(i, got[keys[i]], "many after put_many") end
end)

-- retry_after does not hold a cluster node back, on either transport (the
-- cluster decides when a node is tried again): a seed that refused is
-- connected to again on the next read of the map, not failed at once.
case("redis cluster (cosocket): retry_after does not hold back a node that refused", function()
  local dead = tonumber(io.popen("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'"):read("*l"))
  local seeds = { "127.0.0.1:" .. dead }
  for i, seed in ipairs(behaviour_cases.cluster) do seeds[i + 1] = seed end
  local cache = cachy.new({ stores = { main = { driver = "redis", transport = "cosocket",
    cluster = seeds, retry_after = 30 } } })
  eq(cache:put("ra", "v", 1), true, "put (the map read from the second seed)")
  local cluster = cache:store()._st.cosocket
  local first = cluster.stores[1]
  check(first ~= nil and first.port == dead, "the refused seed's store")
  local again, err, code = require("cachy.resty.redis").pipeline(first, "*1\r\n$4\r\nPING\r\n", 1)
  eq({ again, code }, { nil, "refused" }, "a second connect to the seed")
  check(not tostring(err):find("30", 1, true) and first.held == nil, "held back: %s", tostring(err))
  eq(cache:get("ra"), "v", "get")
end)

case("redis cluster and sentinel (cosocket): locks, one owner at a time, released by its owner only", function()
  local sentinel = { driver = "redis", transport = "cosocket",
                     sentinel = { master = "mymaster", nodes = behaviour_cases.sentinels } }
  for _, make in ipairs({ cluster_cache, function() return cachy.new({ stores = { main = sentinel } }) end }) do
    local a, b = make(), make()
    eq(transport_of(a), "cosocket", "transport")
    local la, lb = a:lock("nginx-lock", 5), b:lock("nginx-lock", 5)
    eq(la:get(), true, "a gets it")
    eq(lb:get(), false, "b does not")
    eq(lb:release(), false, "b cannot release it")
    eq(la:refresh(5), true, "a refreshes it")
    eq(la:release(), true, "a releases it")
    eq(lb:get(), true, "then b gets it")
    eq(lb:release(), true, "b releases it")
  end
end)

case("redis cluster (cosocket): ASK while a slot migrates, then MOVED once it has", function()
  local cache = cluster_cache()
  local ports, ids = cluster_ports(), {}
  for _, p in ipairs(ports) do ids[p] = node(p, "CLUSTER", "MYID") end
  check(cache:put("{nmv}a", "old a") == true and cache:put("{nmv}b", "b") == true, "puts")
  local slot = core.redis_slot("{nmv}a")
  local from = holder("{nmv}a")
  local to = ports[1] == from and ports[2] or ports[1]
  eq(node(to, "CLUSTER", "SETSLOT", tostring(slot), "IMPORTING", ids[from]), "OK", "IMPORTING")
  eq(node(from, "CLUSTER", "SETSLOT", tostring(slot), "MIGRATING", ids[to]), "OK", "MIGRATING")
  eq(node(from, "MIGRATE", "127.0.0.1", tostring(to), "", "0", "5000", "KEYS", "{nmv}a"), "OK", "MIGRATE a")
  eq(cache:get("{nmv}a"), "old a", "get a (ASK)")
  check(cache:put("{nmv}a", "new a") == true, "put a (ASK)")
  eq(cache:get("{nmv}b"), "b", "get b (still on the old node)")
  eq(cache:many({ "{nmv}a", "{nmv}b" }), { ["{nmv}a"] = "new a", ["{nmv}b"] = "b" }, "many")
  eq(node(from, "MIGRATE", "127.0.0.1", tostring(to), "", "0", "5000", "KEYS", "{nmv}b"), "OK", "MIGRATE b")
  for _, p in ipairs(ports) do
    eq(node(p, "CLUSTER", "SETSLOT", tostring(slot), "NODE", ids[to]), "OK", "SETSLOT NODE on " .. p)
  end
  eq(cache:get("{nmv}b"), "b", "get b (MOVED)")
  check(cache:put("{nmv}c", "c") == true, "put c")
  eq(holder("{nmv}c"), to, "where c went")
  eq(cache:increment("{nmv}n", 4), 4, "increment")
end)

-- Interop with plain Lua (spec/nginx/run): /?interop=put writes a value on
-- a cosocket for lua5.4 to read through the blocking driver; /?interop=get
-- reads the one lua5.4 wrote. Both under the prefix "interop:".
M.INTEROP_VALUE = { who = "nginx", bytes = "a\0b\r\n\255", n = 1.5, list = { 1, 2, 3 }, yes = true }
function M.interop(step)
  local cache
  if step:sub(1, 2) == "mc" then
    cache = mc_cache({ transport = "cosocket", servers = behaviour_cases.mc_servers(3) }, "interop:")
    step = step:sub(3)
  else
    cache = redis_cache({ transport = "cosocket" }, "interop:")
  end
  if step == "put" then
    local gone, err = cache:forget("from-lua")
    check(gone ~= nil, "forget: %s", tostring(err))
    assert(cache:put("from-nginx", M.INTEROP_VALUE, 1))
    return "ok"
  end
  local v, err = cache:get("from-lua")
  eq(v, { who = "lua5.4", bytes = "\1\2\0", n = -7 }, "the value lua5.4 wrote (err: " .. tostring(err) .. ")")
  return "ok"
end

-- (g) locks over cosockets (SPEC section 12) ----------------------------------

-- A lock taken on one transport is the same lock on the other: the same
-- bytes, the same scripts (Redis) and compare-and-swap (Memcached).
case("locks: redis and memcached locks over cosockets are the blocking driver's locks", function()
  local pairs_of = {
    redis = { redis_cache({ transport = "cosocket" }, "lock:"), redis_cache({ transport = "blocking" }, "lock:") },
    memcached = { mc_cache({ transport = "cosocket" }, "lock:", 3), mc_cache({ transport = "blocking" }, "lock:", 3) },
  }
  for driver, two in pairs(pairs_of) do
    local cos, blk = two[1], two[2]
    eq(transport_of(cos), "cosocket", driver .. ": transport")
    local name = "shared:" .. ngx.now()
    local lock = cos:lock(name, 10)
    eq(lock:get(), true, driver .. ": acquired on a cosocket")
    eq(blk:lock(name, 10):get(), false, driver .. ": held, seen by the blocking driver")
    eq(blk:restore_lock(name, "someone else"):release(), false, driver .. ": a non-owner's release")
    eq(lock:refresh(5), true, driver .. ": refresh on a cosocket")
    eq(blk:restore_lock(name, lock:owner()):release(), true, driver .. ": released by the blocking driver")
    eq(lock:release(), false, driver .. ": released already")
    local other = blk:lock(name, 10)
    eq(other:get(), true, driver .. ": acquired by the blocking driver")
    eq(cos:restore_lock(name, other:owner()):refresh(5), true, driver .. ": refreshed on a cosocket")
    eq(cos:restore_lock(name, other:owner()):release(), true, driver .. ": released on a cosocket")
    eq(other:release(), false, driver .. ": gone for the blocking driver too")
    local ok, err = pcall(function() return cos:lock(name, 10):get(function() error("raised", 0) end) end)
    eq({ ok, err }, { false, "raised" }, driver .. ": a function's error propagates")
    eq(blk:lock(name, 10):get(), true, driver .. ": released after the error")
  end
end)

case("locks: block waits through ngx.sleep, and the worker runs meanwhile", function()
  local cache = redis_cache({ transport = "cosocket" }, "lock:")
  local name = "block:" .. ngx.now()
  eq(cache:lock(name, 0.3):get(), true, "held for 0.3 s")
  local got, elapsed, ticks = ticks_while(function()
    return { cache:lock(name, 5):block(3, function() return "ran" end) }
  end)
  eq(got, { "ran" }, "block's function ran once acquired")
  check(elapsed >= 0.2 and elapsed < 0.6, "block took %.3f s, wanted the rest of the 0.3 s lease", elapsed)
  check(ticks >= 10, "only %d ticks of 10 ms while block waited", ticks)
  eq(cache:lock(name, 5):get(), true, "released after the function")
  eq({ cache:lock(name, 5):block(0.05) }, { false, "lock '" .. name .. "' not acquired within 0.05 s" },
    "block giving up")
end)

-- (h) single flight and flexible (spec/nginx/flight_cases.lua) ----------------

require("flight_cases")({
  case = case, eq = eq, check = check,
  order = { "memory", "redis", "memcached", "resty" },
  stores = {
    memory = memory_cache,
    redis = function() return redis_cache(nil, "flight:") end,
    memcached = function() return mc_cache(nil, "flight:") end,
    resty = resty_cache,
  },
})

-- Three requests at once (spec/nginx/run sends them in parallel): one
-- manager for the worker, a remember per request with its own key; each
-- fn waits until all three of its run are inside. Returns the line the
-- run script checks: "<i> <value's i> <callbacks inside at once>".
local shared_cache
local runs = {}
function M.concurrent(i, run)
  if not shared_cache then
    shared_cache = cachy.new({
      prefix = "conc:",
      stores = { main = { driver = "resty", host = "127.0.0.1", port = port(), timeout = 2 } },
    })
    shared_cache:extend("resty", resty_store.factory)
  end
  local state = runs[run] or { inside = 0, most = 0 }
  runs[run] = state
  local v, err = shared_cache:remember(run .. ":" .. i, 1, function()
    state.inside = state.inside + 1
    if state.inside > state.most then state.most = state.inside end
    for _ = 1, 400 do
      if state.most >= 3 then break end
      ngx.sleep(0.005)
    end
    redis("PING")
    ngx.sleep(0.01 * (4 - i))
    state.inside = state.inside - 1
    return { i = i }
  end)
  if type(v) ~= "table" then
    return string.format("%d error %s", i, tostring(err or v))
  end
  return string.format("%d %s %d", i, tostring(v.i), state.most)
end

-- helpers.failover's loop over cosockets: n keys under prefix, kill() the
-- master, rounds of puts and gets for at most 20 s on nginx's clock.
local function failover_loop(cache, prefix, n, kill)
  return failover.run({
    cache = cache, prefix = prefix, n = n, limit = 20, kill = kill,
    first_put = function(i, ok) check(ok == true, "put %d before the kill", i) end,
    error = function(err) check(type(err) == "string", "an error as nil, err") end,
    now = function() ngx.update_time() return ngx.now() end,
    sleep = ngx.sleep,
  })
end

-- A master of the second cluster (3 masters, 3 replicas, node timeout 1 s)
-- killed with SIGKILL under a loop of puts and gets over cosockets: calls
-- succeed again within cluster-node-timeout + 3 s, no wrong value.
case("redis cluster (cosocket): a master SIGKILLed, calls succeed again within node timeout + 3 s, no wrong value", function()
  local nodes, seeds, victim = behaviour_cases.fcluster, {}, nil
  for i, nd in ipairs(nodes) do
    seeds[i] = "127.0.0.1:" .. nd.port
    local role = node(nd.port, "ROLE")
    if not victim and type(role) == "table" and role[1] == "master" then victim = nd end
  end
  check(victim, "no master among the nodes")
  local cache = cachy.new({ stores = { main = { driver = "redis", transport = "cosocket", cluster = seeds } } })
  local r = failover_loop(cache, "cf", 300, function() os.execute("kill -9 " .. victim.pid) end)
  check(r.clean, "no clean pass within 20 s")
  eq(r.wrong, 0, "wrong values")
  check(r.back < 1 + 3, "errors until %.2f s after the kill", r.back)
end)

-- Last, as it ends the sentinels' master: killed with SIGKILL under a loop
-- of puts and gets over cosockets; calls succeed again on the promoted
-- replica within 10 s, and no read returns a value never written.
case("redis sentinel (cosocket): the master SIGKILLed, calls reach the promoted replica within 10 s, no wrong value", function()
  local cache = cachy.new({ stores = { main = { driver = "redis", transport = "cosocket",
    sentinel = { master = "mymaster", nodes = behaviour_cases.sentinels } } } })
  local r = failover_loop(cache, "sf", 100,
    function() os.execute("kill -9 " .. assert(behaviour_cases.sentinel_master_pid)) end)
  check(r.clean, "no clean pass within 20 s")
  eq(r.wrong, 0, "wrong values")
  check(r.back < 10, "errors until %.2f s after the kill", r.back)
end)

return M
