-- spec/helpers/tiered_worker.lua: the other process of
-- spec/29-tiered_spec.lua, with its own tiered store { memory, redis }
-- (max_stale = 1) on the same Redis:
--
--   CACHY_WORKER_PATH=... CACHY_WORKER_CPATH=... <lua> tiered_worker.lua MODE PORT PREFIX KEY ARGS...
--
--   put PORT PREFIX KEY VALUE            puts KEY; prints "ok TIME" (the
--                                        wall clock after the write)
--   watch PORT PREFIX KEY OLD NEW SYNC   reads KEY (it must be OLD: the
--                                        copy is made), touches SYNC/ready,
--                                        then reads until NEW; prints
--                                        "ok SECONDS" since the time the
--                                        file SYNC/written holds
--
-- Any failure prints "error: ..." and exits with status 1.
package.path = os.getenv("CACHY_WORKER_PATH") or package.path
package.cpath = os.getenv("CACHY_WORKER_CPATH") or package.cpath

local cachy = require("cachy")
local system = require("system")
local util = require("helpers.util")

local mode, port, prefix, key = arg[1], tonumber(arg[2]), arg[3], arg[4]
local cache = cachy.new({
  prefix = prefix,
  default = "tiered",
  stores = {
    tiered = { driver = "tiered", levels = { "memory", "redis" }, max_stale = 1 },
    memory = { driver = "memory" },
    redis = { driver = "redis", port = port },
  },
})

local fail = util.fail

if mode == "put" then
  local ok, err = cache:put(key, arg[5], 10)
  if not ok then fail(err) end
  io.write(string.format("ok %.6f\n", system.gettime()))
elseif mode == "watch" then
  local old, new, sync = arg[5], arg[6], arg[7]
  local v, err = cache:get(key)
  if v ~= old then fail("read " .. tostring(v) .. " " .. tostring(err) .. ", not " .. old) end
  util.writefile(sync .. "/ready", "")
  local limit = system.gettime() + 5
  while system.gettime() < limit do
    v, err = cache:get(key)
    if err then fail(err) end
    if v == new then
      local seen = system.gettime()
      -- (the writer notes its time just after its put returned)
      while not util.exists(sync .. "/written") and system.gettime() < limit do system.sleep(0.001) end
      local written = tonumber(util.readfile(sync .. "/written"))
      if not written then fail("no time in " .. sync .. "/written") end
      io.write(string.format("ok %.6f\n", seen - written))
      os.exit(0)
    end
    system.sleep(0.001)
  end
  fail("never read " .. new)
else
  fail("unknown mode " .. tostring(mode))
end
