-- bench/stampede/caller.lua: one of the processes bench/stampede/run starts
-- at once on a cold key:
--   lua5.4 caller.lua STORE PORT DIR ID
-- It opens the store (STORE: redis | memcached | file; PORT: the server's;
-- DIR: the run's directory), waits for DIR/go, then remembers KEY with a
-- function that takes 100 ms and notes its run in DIR/runs; it writes the
-- milliseconds from go to its value in DIR/ms.ID.
local store, port, dir, id = arg[1], tonumber(arg[2]), arg[3], arg[4]
local cachy = require("cachy")
local core = require("cachy.core")

local configs = {
  redis = { driver = "redis", port = port },
  memcached = { driver = "memcached", servers = { "127.0.0.1:" .. tostring(port) } },
  file = { driver = "file", path = dir .. "/files" },
}
local cache = cachy.new({ prefix = "stampede:", stores = { main = configs[store] } })
assert(cache:get("warm-up") == nil)          -- the connection is open before go

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
while not exists(dir .. "/go") do core.sleep(0.0005) end
local t0 = core.now_ms()
local v = cache:remember("cold", 10, function()
  local f = assert(io.open(dir .. "/runs", "a"))
  f:write(id, "\n")
  f:close()
  core.sleep(0.1)
  return "value of " .. id
end)
local ms = core.now_ms() - t0
assert(type(v) == "string" and v:match("^value of %d+$"), "got " .. tostring(v))
local f = assert(io.open(dir .. "/ms." .. id, "w"))
f:write(ms, "\n")
f:close()
