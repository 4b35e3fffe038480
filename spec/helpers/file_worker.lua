-- spec/helpers/file_worker.lua: one process of the file store's
-- multi-process specs:
--
--   CACHY_WORKER_PATH=... CACHY_WORKER_CPATH=... <lua> file_worker.lua MODE DIR ARGS...
--
--   incr DIR KEY N              N increments of KEY; prints "ok"
--   add DIR KEY SYNC ID         touches SYNC/ready.ID, waits for SYNC/go, then
--                               add(KEY); prints "true" or "false"
--   write DIR KEY ID STOP READY writes KEY with values.make(ID, 1, 2, ...)
--                               until the file STOP exists ("-": never);
--                               touches READY after the first write ("-": none);
--                               prints "ok SEQ"
--   read DIR KEY N              N reads of KEY; prints "GOOD MISS BAD"
--
-- Any failure prints "error: ..." and exits with status 1.
package.path = os.getenv("CACHY_WORKER_PATH") or package.path
package.cpath = os.getenv("CACHY_WORKER_CPATH") or package.cpath

local cachy = require("cachy")
local system = require("system")
local values = require("helpers.file_values")
local util = require("helpers.util")

local mode, dir, key = arg[1], arg[2], arg[3]
local cache = cachy.new({ stores = { main = { driver = "file", path = dir } } })

local fail, exists = util.fail, util.exists

local function touch(path)
  local f = assert(io.open(path, "wb"))
  f:close()
end

if mode == "incr" then
  for _ = 1, tonumber(arg[4]) do
    local n, err = cache:increment(key)
    if not n then fail(err) end
  end
  print("ok")
elseif mode == "add" then
  local sync, id = arg[4], arg[5]
  touch(sync .. "/ready." .. id)
  local deadline = os.time() + 30
  while not exists(sync .. "/go") do
    if os.time() > deadline then fail("no go signal") end
    system.sleep(0.001)
  end
  local stored, err = cache:add(key, "winner " .. id)
  if stored == nil then fail(err) end
  print(tostring(stored))
elseif mode == "write" then
  local id, stop, ready = tonumber(arg[4]), arg[5], arg[6]
  local seq = 0
  repeat
    seq = seq + 1
    local ok, err = cache:put(key, values.make(id, seq))
    if not ok then fail(err) end
    if seq == 1 and ready ~= "-" then touch(ready) end
  until stop ~= "-" and exists(stop)
  print("ok " .. seq)
elseif mode == "read" then
  local good, miss, bad = 0, 0, 0
  for _ = 1, tonumber(arg[4]) do
    local v, err = cache:get(key)
    if err then fail(err) end
    if v == nil then
      miss = miss + 1
    elseif values.parse(v) then
      good = good + 1
    else
      bad = bad + 1
    end
  end
  print(good .. " " .. miss .. " " .. bad)
else
  fail("unknown mode " .. tostring(mode))
end
cache:close()
