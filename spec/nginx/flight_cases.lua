-- spec/nginx/flight_cases.lua: single flight and flexible inside an nginx
-- worker (SPEC section 12), added to the suite by spec/nginx/cases.lua:
-- light threads of one request missing one key wait through ngx.sleep (the
-- default sleep there) for the one that computes it, on the memory store,
-- Redis and Memcached over cosockets and a store written in Lua over
-- cosockets; flexible's stale answer comes at once and its refresh runs in
-- an ngx.timer (the default defer there).
local cachy = require("cachy")

-- t: the suite's helpers { case, eq, check, stores = { label = make() } }
return function(t)
  local case, eq, check = t.case, t.eq, t.check

  -- Runs fn(i) in n light threads at once; what each returned.
  local function threads(n, fn)
    local ths, out = {}, {}
    for i = 1, n do ths[i] = ngx.thread.spawn(fn, i) end
    for i = 1, n do
      local ok, v = ngx.thread.wait(ths[i])
      check(ok, "thread %d raised: %s", i, tostring(v))
      out[i] = v
    end
    return out
  end

  local function slow_fn(counter, seconds)
    return function()
      counter.calls = counter.calls + 1
      ngx.sleep(seconds)
      return { n = counter.calls }
    end
  end

  for _, label in ipairs(t.order) do
    local make = t.stores[label]
    case("single flight (" .. label .. "): 5 light threads missing one key run the function once", function()
      local cache = make()
      local key = "sf:" .. ngx.now() .. ":" .. math.random(1e6)
      local counter = { calls = 0 }
      local fn = slow_fn(counter, 0.1)
      local got = threads(5, function() return cache:remember(key, 1, fn) end)
      eq(counter.calls, 1, "remember's runs")
      for i = 1, 5 do eq(got[i], { n = 1 }, "thread " .. i .. "'s value") end
      local w = cache(fn, { key = key .. ":deco" })
      got = threads(5, function() return w() end)
      eq(counter.calls, 2, "the decorated function's runs")
      for i = 1, 5 do eq(got[i], { n = 2 }, "thread " .. i .. "'s decorated value") end
      got = threads(5, function() return cache:flexible(key .. ":flex", { 1, 2 }, fn) end)
      eq(counter.calls, 3, "flexible's runs")
      eq(cache:stats().lock_waits, 12, "lock waits")
      got = threads(3, function() return cache:remember(key .. ":nolock", 1, fn, { lock = false }) end)
      eq(counter.calls, 6, "runs with lock = false")
    end)
  end

  case("flexible: a stale value answers at once; the refresh runs in a timer, once", function()
    local cache = t.stores.redis()
    local key = "flex:" .. ngx.now() .. ":" .. math.random(1e6)
    local counter = { calls = 0 }
    local fn = slow_fn(counter, 0.2)
    eq(cache:flexible(key, { 0.3 / 60, 10 }, fn), { n = 1 }, "first value")
    ngx.sleep(0.35)
    ngx.update_time()
    local t0 = ngx.now()
    local got = threads(5, function() return cache:flexible(key, { 0.3 / 60, 10 }, fn) end)
    ngx.update_time()
    local elapsed = ngx.now() - t0
    for i = 1, 5 do eq(got[i], { n = 1 }, "stale value of thread " .. i) end
    check(elapsed < 0.1, "the stale answers took %.3f s", elapsed)
    ngx.sleep(0.25)
    eq(counter.calls, 2, "runs: the first and one refresh")
    eq(cache:flexible(key, { 0.3 / 60, 10 }, fn), { n = 2 }, "the refreshed value")
    local st = cache:stats()
    eq({ st.stale, st.refreshes }, { 5, 1 }, "stale answers and refreshes")
  end)
end
