-- spec/nginx/resty_store.lua: a store written in Lua (SPEC section 8) whose
-- every method talks to Redis through nginx cosockets (spec/nginx/resp.lua),
-- so every method yields. For `cache:extend("resty", factory)`:
--
--   cache:extend("resty", require("resty_store").factory)
--   stores = { main = { driver = "resty", host = "127.0.0.1", port = 6379 } }
--
-- Values are byte strings, lifetimes seconds (0 = forever, fractions kept
-- as milliseconds). Failures return `nil, err`. `calls` counts the calls to
-- each method, across every store the factory made.
local resp = require("resp")

local M = { calls = {} }

local Store = {}
Store.__index = Store

local function count(name)
  M.calls[name] = (M.calls[name] or 0) + 1
end

-- Runs fn(conn) on a pooled connection and gives the connection back.
local function with_conn(self, fn)
  local conn, err = resp.connect(self.host, self.port, self.timeout_ms)
  if not conn then return nil, err end
  local a, b = fn(conn)
  if conn.sock then conn:keepalive() end
  return a, b
end

local function lifetime(seconds)
  if seconds and seconds > 0 then
    return math.max(1, math.ceil(seconds * 1000))
  end
end

local function set_cmd(key, bytes, seconds, nx)
  local cmd = { "SET", key, bytes }
  local ms = lifetime(seconds)
  if ms then cmd[#cmd + 1] = "PX"; cmd[#cmd + 1] = ms end
  if nx then cmd[#cmd + 1] = "NX" end
  return cmd
end

function Store:get(key)
  count("get")
  return with_conn(self, function(c)
    local v, err = c:call("GET", key)
    if err then return nil, err end
    return v
  end)
end

function Store:put(key, bytes, seconds)
  count("put")
  return with_conn(self, function(c)
    local v, err = c:call(unpack(set_cmd(key, bytes, seconds)))
    if err then return nil, err end
    return v == "OK"
  end)
end

function Store:add(key, bytes, seconds)
  count("add")
  return with_conn(self, function(c)
    local v, err = c:call(unpack(set_cmd(key, bytes, seconds, true)))
    if err then return nil, err end
    return v == "OK"
  end)
end

function Store:forget(key)
  count("forget")
  return with_conn(self, function(c)
    local v, err = c:call("DEL", key)
    if err then return nil, err end
    return v > 0
  end)
end

function Store:increment(key, n)
  count("increment")
  return with_conn(self, function(c)
    local v, err = c:call("INCRBY", key, string.format("%d", n))
    if err then return nil, string.format("key '%s': %s", key, err) end
    return v
  end)
end

local function glob_escape(s)
  return (s:gsub("[%*%?%[%]\\]", "\\%0"))
end

-- prefix: the store's prefix ("" or nil: every key of the database).
function Store:flush(prefix)
  count("flush")
  return with_conn(self, function(c)
    local pattern = glob_escape(prefix or "") .. "*"
    local cursor = "0"
    repeat
      local r, err = c:call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
      if not r then return nil, err end
      cursor = r[1]
      local keys = r[2]
      if #keys > 0 then
        local _, derr = c:call("DEL", unpack(keys))
        if derr then return nil, derr end
      end
    until cursor == "0"
    return true
  end)
end

function Store:many(keys)
  count("many")
  if #keys == 0 then return {} end
  return with_conn(self, function(c)
    local r, err = c:call("MGET", unpack(keys))
    if not r then return nil, err end
    local out = {}
    for i, k in ipairs(keys) do
      if r[i] ~= nil then out[k] = r[i] end
    end
    return out
  end)
end

-- One pipelined round trip.
function Store:put_many(tbl, seconds)
  count("put_many")
  local cmds = {}
  for k, v in pairs(tbl) do cmds[#cmds + 1] = set_cmd(k, v, seconds) end
  if #cmds == 0 then return true end
  return with_conn(self, function(c)
    local r, err = c:pipeline(cmds)
    if not r then return nil, err end
    for i = 1, #r do
      if r[i] ~= "OK" then return nil, "redis: SET failed in put_many" end
    end
    return true
  end)
end

function Store:close()
  count("close")
end

function M.factory(config)
  return setmetatable({
    host = config.host or "127.0.0.1",
    port = assert(config.port, "resty store: port is required"),
    timeout_ms = (config.timeout or 1) * 1000,
  }, Store)
end

return M
