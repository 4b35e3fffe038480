-- spec/helpers/memcached_worker.lua: one process of the memcached store's
-- multi-process specs:
--
--   CACHY_WORKER_PATH=... CACHY_WORKER_CPATH=... <lua> memcached_worker.lua PORT KEY N BY SYNC ID
--
-- Touches SYNC/ready.ID, waits for SYNC/go (so that every process starts at
-- once), then makes N calls increment(KEY, BY) on the memcached server at
-- 127.0.0.1:PORT and prints "ok". Any failure prints "error: ..." and exits
-- with status 1.
package.path = os.getenv("CACHY_WORKER_PATH") or package.path
package.cpath = os.getenv("CACHY_WORKER_CPATH") or package.cpath

local cachy = require("cachy")
local system = require("system")
local util = require("helpers.util")

local port, key, n, by, sync, id = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5], arg[6]

local fail, exists = util.fail, util.exists

local cache = cachy.new({
  stores = { main = { driver = "memcached", servers = { "127.0.0.1:" .. port }, timeout = 2 } },
})

local f = assert(io.open(sync .. "/ready." .. id, "wb"))
f:close()
local deadline = system.monotime() + 20
while not exists(sync .. "/go") do
  if system.monotime() > deadline then fail("no go after 20 s") end
  system.sleep(0.002)
end

for _ = 1, n do
  local v, err = cache:increment(key, by)
  if v == nil then fail(err) end
end
cache:close()
io.write("ok\n")
