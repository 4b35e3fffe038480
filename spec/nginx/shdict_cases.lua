-- spec/nginx/shdict_cases.lua: what the shdict store does besides the
-- shared behaviour suite (SPEC section 11), inside the nginx suite's
-- worker: how values sit in the zone, a full zone, a missing zone, the
-- counters' range, long keys, and a prefixed flush that leaves other
-- prefixes and a tiered store's events alone.
local cachy = require("cachy")
local same = require("compare").same

local M = {}

local function check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 2) end
end

local function new(prefix, zone)
  local cache = cachy.new({ prefix = prefix, stores = { main = { driver = "shdict", dict = zone or "cachy_spec" } } })
  assert(cache:flush())
  return cache
end

function M.add(case)
  case("shdict: values are the serializer's bytes in the zone, integers zone numbers", function()
    local cache, zone = new("sd1:"), ngx.shared.cachy_spec
    assert(cache:put("t", { 1, "x" }))
    check(zone:get("sd1:t") == "\146\1\161x",
      "a table is %q in the zone", tostring(zone:get("sd1:t")))
    assert(cache:put("n", 42))
    check(zone:get("sd1:n") == 42, "an integer is %s in the zone", tostring(zone:get("sd1:n")))
    assert(cache:put("f", 1.5))
    check(type(zone:get("sd1:f")) == "string", "a float is kept as bytes")
    assert(cache:put("s", "42"))
    check(cache:get("s") == "42" and cache:get("n") == 42, "a string and an integer read back apart")
    -- a number another module set reads as that number, and counts on
    zone:set("sd1:other", 7)
    check(cache:get("other") == 7, "read %s", tostring(cache:get("other")))
    check(cache:increment("other", 3) == 10, "counted on")
  end)

  case("shdict: a value that cannot fit gives nil, err, \"no_memory\"; the store stays usable", function()
    local cache = new("sd2:", "cachy_tiny")
    local ok, err, code = cache:put("big", string.rep("x", 64 * 1024))
    check(ok == nil and code == "no_memory", "put gave %s, %s, %s", tostring(ok), tostring(err), tostring(code))
    check(err == "store 'main' (shdict cachy_tiny): no memory (the zone is full or the value larger than it)",
      "message: %s", tostring(err))
    ok, err, code = cache:add("big", string.rep("x", 64 * 1024))
    check(ok == nil and code == "no_memory", "add gave %s, %s", tostring(ok), tostring(code))
    check(cache:put("small", "fits") == true and cache:get("small") == "fits", "a small value after")
  end)

  case("shdict: a zone nginx does not have raises on first use, naming it", function()
    local cache = cachy.new({ stores = { main = { driver = "shdict", dict = "no_such_zone" } } })
    local ok, err = pcall(cache.get, cache, "k")
    check(not ok and tostring(err):find("store 'main' (shdict no_such_zone): nginx has no lua_shared_dict zone 'no_such_zone'", 1, true),
      "raised %s", tostring(err))
  end)

  case("shdict: counters are exact within +-(2^53 - 1); a step past gives overflow and keeps the value", function()
    local cache = new("sd3:")
    local max = 2 ^ 53 - 1
    assert(cache:put("c", max - 1))
    check(cache:increment("c") == max, "to the limit")
    local v, err, code = cache:increment("c")
    check(v == nil and code == "overflow", "past it: %s %s", tostring(v), tostring(code))
    check(err == "store 'main' (shdict cachy_spec): increment of key 'c' leaves the integers a shared dict holds exactly (+-(2^53 - 1))",
      "message: %s", tostring(err))
    check(cache:get("c") == max, "kept")
    v, err, code = cache:decrement("d", max + 1)
    check(v == nil and code == "overflow" and not cache:has("d"), "a first step past the range")
    check(cache:decrement("e", max) == -max, "down to the limit")
  end)

  case("shdict: a key longer than a zone takes (70,000 bytes) works, apart from one that differs at its end", function()
    local cache = new("sd4:")
    local long = string.rep("k", 70000)
    assert(cache:put(long .. "a", 1))
    assert(cache:put(long .. "b", 2))
    check(cache:get(long .. "a") == 1 and cache:get(long .. "b") == 2, "read back apart")
    check(cache:increment(long .. "a") == 2 and cache:forget(long .. "b") == true, "counted and forgotten")
    assert(cache:flush())
    check(cache:get(long .. "a") == nil, "flushed")
  end)

  case("shdict: flush removes this prefix's keys only, not another's nor a tiered store's events", function()
    local a, b = new("sd5a:"), new("sd5b:")
    assert(a:put("k", 1))
    assert(b:put("k", 2))
    local zone = ngx.shared.cachy_spec
    zone:set("\0cachy:ev:probe:n", 5)
    assert(a:flush())
    check(a:get("k") == nil and b:get("k") == 2, "a flushed, b kept")
    local bare = cachy.new({ stores = { main = { driver = "shdict", dict = "cachy_spec" } } })
    assert(bare:flush())
    check(b:get("k") == nil, "a flush without a prefix removes every key")
    check(zone:get("\0cachy:ev:probe:n") == 5, "but not cachy's own")
    zone:delete("\0cachy:ev:probe:n")
  end)

  case("shdict: ttl gives the lifetime left; tiered copies it into the level above", function()
    local cache = cachy.new({
      prefix = "sd6:",
      stores = {
        t = { driver = "tiered", levels = { "m", "s" }, max_stale = 60 },
        m = { driver = "memory" },
        s = { driver = "shdict", dict = "cachy_spec" },
      },
      default = "t",
    })
    assert(cache:store("s"):put("k", "v", 0.5))          -- 30 s
    assert(cache:store("s"):forever("f", "v"))
    check(cache:get("k") == "v" and cache:get("f") == "v", "read through the tiered store")
    local st = cache:store("m"):_store()
    local left = st:ttl("k")
    check(left > 29000 and left <= 30000, "the copy has %s ms left", tostring(left))
    left = st:ttl("f")
    check(left > 59000 and left <= 59995, "a copy of a value without expiry lives max_stale: %s ms", tostring(left))
    check(same(cache:store("m"):many({ "k", "f" }), { k = "v", f = "v" }), "both copied under the same keys")
  end)

  case("tiered: inside nginx, a per-worker level needs an events zone: raises naming the field", function()
    local cache = cachy.new({
      default = "t",
      stores = {
        t = { driver = "tiered", levels = { "m", "r" } },
        m = { driver = "memory" },
        r = { driver = "redis", port = require("behaviour_cases").redis_port() },
      },
    })
    local ok, err = pcall(cache.get, cache, "k")
    check(not ok and err == "store 't' (tiered m, r): inside nginx, level 'm' is per worker, so changes reach"
      .. " the other workers through events in a lua_shared_dict zone: give field 'events' (a zone's name)"
      .. " or a shdict level", "raised %s", tostring(err))
    cache = cachy.new({
      default = "t",
      stores = {
        t = { driver = "tiered", levels = { "m", "r" }, events = "cachy_spec" },
        m = { driver = "memory" },
        r = { driver = "redis", port = require("behaviour_cases").redis_port() },
      },
    })
    check(cache:put("k", "v") == true and cache:get("k") == "v", "with events = 'cachy_spec'")
  end)

  case("shdict: locks: one owner at a time, only the owner releases and refreshes, a lease ends by itself", function()
    local cache = new("sd7:")
    local zone = ngx.shared.cachy_spec
    local a, b = cache:lock("job", 10), cache:lock("job", 10)
    check(a:get() == true and b:get() == false, "one owner")
    check(zone:get("sd7:cachy:lock:job") == a:owner(), "the token in the zone")
    check(b:release() == false and b:refresh(5) == false and a:get() == false, "a non-owner changes nothing")
    check(a:refresh(0.5) == true, "refresh")
    local left = zone:ttl("sd7:cachy:lock:job")
    check(left > 0.4 and left <= 0.5, "the lease is %s s", tostring(left))
    check(a:release() == true and zone:get("sd7:cachy:lock:job") == nil, "released")
    check(b:get() == true, "then b gets it")
    check(cache:restore_lock("job", b:owner()):release() == true, "released from elsewhere")
    local short = cache:lock("short", 0.15)
    check(short:get() == true, "short lease")
    ngx.sleep(0.2)
    check(cache:lock("short", 10):get() == true, "the lease ended by itself")
    -- within 0.1 s of its end a lease is left to expire: released, and gone soon after
    local ending = cache:lock("ending", 10)
    check(ending:get() == true, "ending lease")
    zone:expire("sd7:cachy:lock:ending", 0.09)
    check(ending:release() == true and ending:refresh(10) == false, "release near the end of the lease")
    check(zone:get("sd7:cachy:lock:ending") == ending:owner(), "left to expire")
    ngx.sleep(0.1)
    check(cache:lock("ending", 10):get() == true, "gone by its end")
  end)

  case("tiered events: read in order; one that cannot be read, a flush or too many at once drop everything", function()
    local events = require("cachy.resty.events")
    local ch = events.new(ngx.shared.cachy_spec, "cachy_spec", "probe-" .. ngx.now())
    local from = ch:seq()
    assert(ch:post("a"))
    assert(ch:post("b"))
    local keys, all = {}, 0
    local function on_key(k) keys[#keys + 1] = k end
    local function on_all() all = all + 1 end
    local next_from = ch:read(from, on_key, on_all)
    check(next_from == from + 2 and same(keys, { "a", "b" }) and all == 0, "two keys read")
    check(ch:touches(from, next_from, "b") and not ch:touches(from, next_from, "c"), "touches")
    assert(ch:post("c"))
    ngx.shared.cachy_spec:delete(ch.base .. (next_from + 1))      -- evicted
    keys = {}
    next_from = ch:read(next_from, on_key, on_all)
    check(all == 1 and #keys == 0, "a missing event drops everything")
    check(ch:touches(next_from - 1, next_from, "zzz"), "and touches every key")
    assert(ch:post(""))
    next_from = ch:read(next_from, on_key, on_all)
    check(all == 2, "a flush drops everything")
    for i = 1, events.MAX_BATCH + 1 do assert(ch:post("k" .. i)) end
    keys = {}
    next_from = ch:read(next_from, on_key, on_all)
    check(all == 3 and #keys == 0 and next_from == ch:seq(), "too many at once")
  end)
end

return M
