-- spec/nginx/behaviour_cases.lua: the shared behaviour suite
-- (spec/behaviour.lua) inside the nginx worker on the built-in redis
-- driver, twice: transport "cosocket" in the content phase, and transport
-- "auto" in an ngx.timer (started by the request, which waits for it);
-- and on the built-in memcached driver over cosockets, with one server
-- and with three; and on a Redis Cluster (3 masters) and behind Redis
-- Sentinel, over cosockets.
-- Each of the suite's cases becomes one case of spec/nginx/cases.lua, so
-- one request runs one case. A pending case returns its reason, which the
-- runner reports as "# SKIP".
local shim = require("busted_shim").install()

local M = {}

-- The test Redis's port: spec/nginx/nginx.conf sets it in init_by_lua
-- (ngx.var is not readable in a timer).
function M.redis_port()
  return assert(M.port, "behaviour_cases.port is not set")
end

local function collect(label, transport)
  return shim.collect(function()
    require("behaviour")(label, {
      config = function()
        return { driver = "redis", port = M.redis_port(), transport = transport }
      end,
    })
  end)
end

-- The redis store's suite on the cluster spec/nginx/run formed.
local function collect_cluster(label)
  return shim.collect(function()
    require("behaviour")(label, {
      config = function()
        return { driver = "redis", cluster = assert(M.cluster, "behaviour_cases.cluster is not set"),
                 transport = "cosocket" }
      end,
    })
  end)
end

-- The redis store's suite behind the sentinels spec/nginx/run started.
local function collect_sentinel(label)
  return shim.collect(function()
    require("behaviour")(label, {
      config = function()
        return { driver = "redis", transport = "cosocket", sentinel = {
          master = "mymaster", nodes = assert(M.sentinels, "behaviour_cases.sentinels is not set") } }
      end,
    })
  end)
end

-- The test memcached servers (spec/nginx/run starts three): "127.0.0.1:port".
function M.mc_servers(count)
  local ports = assert(M.mc_ports, "behaviour_cases.mc_ports is not set")
  local out = {}
  for k = 1, count or #ports do out[k] = "127.0.0.1:" .. assert(ports[k], "too few memcached servers") end
  return out
end

-- The memcached store's suite, as spec/40-memcached_spec.lua runs it.
local function collect_mc(label, transport, count)
  return shim.collect(function()
    require("behaviour")(label, {
      config = function()
        return { driver = "memcached", servers = M.mc_servers(count), transport = transport }
      end,
      exceptions = {
        flush_scoped = "memcached can only empty whole servers (flush_all), whatever the prefix",
      },
      expiry_wait = 3.5,
    })
  end)
end

-- The shdict store's suite, and the tiered store's over memory, shdict
-- and redis (the manager's stores: the suite's "main" is the tiered one).
local function collect_shared()
  local shdict = shim.collect(function()
    require("behaviour")("shdict", {
      config = function() return { driver = "shdict", dict = "cachy_spec" } end,
    })
  end)
  local tiered = shim.collect(function()
    require("behaviour")("tiered", {
      config = function() return { driver = "tiered", levels = { "l1", "l2", "l3" }, max_stale = 60 } end,
      manager_config = {
        stores = {
          main = { driver = "tiered", levels = { "l1", "l2", "l3" }, max_stale = 60 },
          l1 = { driver = "memory" },
          l2 = { driver = "shdict", dict = "cachy_spec" },
          l3 = { driver = "redis", port = M.redis_port() },
        },
      },
    })
  end)
  return shdict, tiered
end

-- Runs fn in a timer (phase "timer") and waits for it: fn's result, or
-- raises with why it did not finish.
local function in_timer(fn, limit)
  local done, result, raised
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then
      done, raised = true, "the timer ran prematurely (nginx is exiting)"
      return
    end
    local pok, r = pcall(fn)
    done = true
    if pok then result = r else raised = tostring(r) end
  end)
  if not ok then error("ngx.timer.at: " .. tostring(err), 0) end
  local waited = 0
  while not done do
    if waited > (limit or 60) then error("the timer did not finish within " .. (limit or 60) .. " s", 0) end
    ngx.sleep(0.005)
    waited = waited + 0.005
  end
  if raised then error(raised, 0) end
  return result
end
M.in_timer = in_timer

-- Adds each collected case as case(label .. name), run in the request
-- (or by `runner`, e.g. in_timer).
local function add_all(case, label, list, runner)
  for _, c in ipairs(list) do
    case(label .. c.name, function()
      if c.pending then return c.pending end
      local why = (runner or function(run) return run() end)(c.run)
      if why then error(why, 0) end
    end)
  end
end

-- Adds the suite's cases through case(name, fn) (cases.lua's).
function M.add(case)
  add_all(case, "behaviour (cosocket, content phase): ", collect("redis over cosockets", "cosocket"))
  for _, count in ipairs({ 1, 3 }) do
    add_all(case, "behaviour (memcached, " .. count .. " server" .. (count > 1 and "s" or "") .. ", cosocket): ",
      collect_mc("memcached over cosockets (" .. count .. ")", "cosocket", count))
  end
  for _, suite in ipairs({ { "redis cluster", collect_cluster }, { "redis sentinel", collect_sentinel } }) do
    add_all(case, "behaviour (" .. suite[1] .. ", cosocket): ", suite[2](suite[1] .. " over cosockets"))
  end
  local shdict, tiered = collect_shared()
  add_all(case, "behaviour (shdict): ", shdict)
  add_all(case, "behaviour (tiered memory, shdict, redis): ", tiered)
  add_all(case, "behaviour (auto, timer phase): ", collect("redis through auto", "auto"), in_timer)
end

return M
