-- spec/nginx/phases.lua: the built-in redis driver from nginx phases that
-- allow no cosockets (SPEC section 11): init_worker_by_lua, and the
-- header_filter and log phases of /phases (spec/nginx/nginx.conf). There,
-- transport "auto" falls back to the blocking driver, and "cosocket"
-- refuses. Each check records "ok" or "fail: why" in the shared dict
-- "results"; spec/nginx/cases.lua reads them.
local cachy = require("cachy")
local core = require("cachy.core")

local M = {}

local function port()
  return assert(require("behaviour_cases").port, "no redis port")
end

local function record(key, fn)
  local ok, err = pcall(fn)
  ngx.shared.results:set(key, ok and "ok" or ("fail: " .. tostring(err)))
end

local same = require("compare").same

-- (values shown as the codec's bytes, in hex: enough to tell them apart)
local function eq(got, want, what)
  if not same(got, want) then
    local function hex(v)
      local b = core.encode(v) or tostring(v)
      return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    end
    error(string.format("%s: expected %s, got %s", what, hex(want), hex(got)), 2)
  end
end

-- One manager per worker and transport, made on first use in any phase.
local caches = {}
local function cache(transport)
  local c = caches[transport]
  if not c then
    c = cachy.new({ prefix = "phases:",
                    stores = { main = { driver = "redis", port = port(), transport = transport } } })
    caches[transport] = c
  end
  return c
end
M.cache = cache

-- The transport a call of the store made now would use.
local function transport(c)
  return c:store("main"):_store():transport()
end

-- A store with transport "cosocket" in a phase without cosockets: misuse.
local function forced_refuses(phase)
  local v, err, code = cache("cosocket"):get("x")
  eq(v, nil, "forced cosocket get")
  eq(err, "store 'main' (redis 127.0.0.1:" .. port() .. "): transport 'cosocket' cannot be used in nginx's '"
     .. phase .. "' phase, which allows no cosockets", "its message")
  eq(code, "misuse", "its code")
end

function M.init_worker()
  record("init_worker", function()
    local c = cachy.new({ prefix = "phases:iw:",
                          stores = { main = { driver = "redis", port = port() } } })  -- auto by default
    eq(transport(c), "blocking", "transport in init_worker")
    eq(c:flush(), true, "flush")
    eq(c:put("k", { a = 1 }, 1), true, "put")
    eq(c:get("k"), { a = 1 }, "get")
    eq(c:add("k", 2, 1), false, "add of a present key")
    eq(c:increment("n", 5), 5, "increment")
    eq(c:put_many({ x = 1, y = "two" }, 1), true, "put_many")
    eq(c:many({ "x", "y", "z" }), { x = 1, y = "two" }, "many")
    eq(c:tags("t"):put("tk", "tagged", 1), true, "tagged put")
    eq(c:tags("t"):get("tk"), "tagged", "tagged get")
    eq(c:remember("r", 1, function() return "computed" end), "computed", "remember")
    eq(c:forget("k"), true, "forget")
    forced_refuses("init_worker")
    c:close()
  end)
  record("init_worker:memcached", function()
    local servers = require("behaviour_cases").mc_servers(3)
    local c = cachy.new({ prefix = "phases:iw:", stores = { main = { driver = "memcached", servers = servers } } })
    eq(transport(c), "blocking", "transport in init_worker")
    eq(c:put("k", { a = 1 }, 60), true, "put")
    eq(c:get("k"), { a = 1 }, "get")
    eq(c:add("k", 2, 60), false, "add of a present key")
    eq(c:forget("n"), c:forget("n"), "forget")
    eq(c:increment("n", 5), 5, "increment")
    eq(c:decrement("n", 7), -2, "decrement")
    eq(c:put_many({ x = 1, y = "two" }, 60), true, "put_many")
    eq(c:many({ "x", "y", "z" }), { x = 1, y = "two" }, "many")
    local forced = cachy.new({ stores = { main = { driver = "memcached", servers = servers, transport = "cosocket" } } })
    local v, err, code = forced:get("x")
    eq({ v, code }, { nil, "misuse" }, "transport cosocket refuses")
    assert(tostring(err):find("transport 'cosocket' cannot be used in nginx's 'init_worker' phase", 1, true), err)
    c:close()
  end)
end

-- content: a value written through cosockets, for the later phases.
function M.content(id)
  local c = cache("auto")
  assert(transport(c) == "cosocket", "content phase does not use cosockets")
  assert(c:put("c:" .. id, { from = "content", id = id }, 1))
  ngx.say("ok")
end

function M.header_filter(id)
  record("header_filter:" .. id, function()
    local c = cache("auto")
    eq(transport(c), "blocking", "transport in header_filter")
    eq(c:get("c:" .. id), { from = "content", id = id }, "the content phase's value (written on a cosocket)")
    eq(c:put("h:" .. id, "header", 1), true, "put")
    forced_refuses("header_filter")
  end)
end

function M.log(id)
  record("log:" .. id, function()
    local c = cache("auto")
    eq(transport(c), "blocking", "transport in log")
    eq(c:get("h:" .. id), "header", "the header_filter phase's value")
    eq(c:increment("n:" .. id), 1, "increment")
    eq(c:decrement("n:" .. id, 3), -2, "decrement")
    eq(c:many({ "h:" .. id, "zz" }), { ["h:" .. id] = "header" }, "many")
    forced_refuses("log")
  end)
end

return M
