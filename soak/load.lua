-- soak/load.lua: the load test. Several client processes
-- (soak/load_worker.lua) per store run against redis-server and memcached
-- at once, while each server is killed (SIGKILL) and restarted on its port
-- twice. Passes when no process crashed or raised, no wrong value was
-- returned, every error was a `nil, err` naming the store, and every
-- process worked again after the last restart.
--
--   lua5.4 soak/load.lua [STORE...]     (default: redis memcached)
--   LOAD_WORKERS  processes per store (default 3)
--   LOAD_SECONDS  length of the run (default 16)
-- Run through `make load` (soak/run load), which stops left-over servers
-- by PID.
local common = require("soak.common")
local servers = require("helpers.servers")
local system = require("system")

local stores = #arg > 0 and { ... } or { "redis", "memcached" }
local NWORKERS = tonumber(os.getenv("LOAD_WORKERS") or 3)
local SECONDS = tonumber(os.getenv("LOAD_SECONDS") or 16)
local tmp = os.getenv("CACHY_TMP") or "/tmp"
local work = common.sh("mktemp -d " .. tmp .. "/cachy-load.XXXXXX")
local stopfile = work .. "/stop"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local failures = 0
local function fail(fmt, ...)
  failures = failures + 1
  print("FAIL " .. string.format(fmt, ...))
end

-- ---- servers and workers ------------------------------------------------------

local running, workers = {}, {}
for _, name in ipairs(stores) do
  if not common.has_driver(name) then
    fail("the module has no %s driver", name)
  else
    local server = servers.start(name)
    running[#running + 1] = { name = name, server = server }
    for w = 1, NWORKERS do
      local id = name .. w
      local out = work .. "/" .. id
      os.execute(string.format(
        "(nice -n 19 lua5.4 soak/load_worker.lua %s %d %s %s %d %d >%s.out 2>%s.err; echo $? >%s.rc) &",
        name, server.port, id, q(stopfile), 1000 + #workers, SECONDS + 60, q(out), q(out), q(out)))
      workers[#workers + 1] = { id = id, store = name, out = out }
    end
  end
end

-- ---- kills and restarts: each server twice, staggered ---------------------------

local t0 = common.now()
local function at(seconds)
  local left = seconds - (common.now() - t0)
  if left > 0 then system.sleep(left) end
end

local schedule = {}
for round = 1, 2 do
  for j, r in ipairs(running) do
    local kill_at = SECONDS * (round == 1 and 0.2 or 0.5) + (j - 1) * 0.7
    schedule[#schedule + 1] = { t = kill_at, what = "kill", r = r }
    schedule[#schedule + 1] = { t = kill_at + 1.0, what = "restart", r = r }
  end
end
table.sort(schedule, function(a, b) return a.t < b.t end)
local restarts = {}
for _, ev in ipairs(schedule) do
  at(ev.t)
  if ev.what == "kill" then
    ev.r.server:stop("KILL")
    print(string.format("%5.1f s: killed %s (pid %d)", common.now() - t0, ev.r.name, ev.r.server.pid))
  else
    ev.r.server:restart()
    restarts[ev.r.name] = (restarts[ev.r.name] or 0) + 1
    print(string.format("%5.1f s: restarted %s on port %d (pid %d)", common.now() - t0, ev.r.name,
      ev.r.server.port, ev.r.server.pid))
  end
end
at(SECONDS)
assert(io.open(stopfile, "w")):close()

-- ---- results ---------------------------------------------------------------------

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local deadline = common.now() + 30
local totals = {}
for _, w in ipairs(workers) do
  local rc = readfile(w.out .. ".rc")
  while rc == nil and common.now() < deadline do
    system.sleep(0.1)
    rc = readfile(w.out .. ".rc")
  end
  local out, err = readfile(w.out .. ".out") or "", readfile(w.out .. ".err") or ""
  local t = totals[w.store] or { ops = 0, errors = 0, wrong = 0, raised = 0, misses = 0, workers = 0 }
  totals[w.store] = t
  local line = out:match("result [^\n]*")
  if rc == nil then
    fail("%s: did not finish", w.id)
  elseif tonumber(rc) ~= 0 or not line then
    fail("%s: exited with status %s (a crash if above 128)\n%s", w.id, (rc:gsub("%s", "")), err)
  else
    local c = {}
    for k, v in line:gmatch("([%w_]+)=(%d+)") do c[k] = tonumber(v) end
    print(string.format("%-12s %s", w.id, line:sub(8)))
    t.workers = t.workers + 1
    for _, k in ipairs({ "ops", "errors", "wrong", "raised", "misses" }) do t[k] = t[k] + c[k] end
    if c.wrong > 0 or c.raised > 0 then fail("%s: %d wrong, %d raised\n%s", w.id, c.wrong, c.raised, err) end
    if c.recovered ~= 1 then fail("%s: did not work again after the last restart", w.id) end
  end
end

for _, r in ipairs(running) do r.server:stop() end
os.execute("rm -rf " .. q(work))

for _, name in ipairs(stores) do
  local t = totals[name]
  if t then
    print(string.format("%s: %d processes, %d restarts, %d operations, %d errors (nil, err), "
      .. "%d misses, %d raised, %d wrong values", name, t.workers, restarts[name] or 0, t.ops,
      t.errors, t.misses, t.raised, t.wrong))
    if (restarts[name] or 0) ~= 2 then fail("%s was restarted %d times", name, restarts[name] or 0) end
    if t.errors == 0 then fail("%s: no errors while the server was down: the kills did not land", name) end
  end
end
print(failures == 0 and "load test passed" or ("load test FAILED: " .. failures .. " failures"))
os.exit(failures == 0 and 0 or 1)
