-- spec/nginx/resp.lua: a minimal Redis client over nginx cosockets, for the
-- nginx suite only (spec/nginx/run). Every call yields while it waits.
--
--   local resp = require("resp")
--   local conn = assert(resp.connect("127.0.0.1", port))
--   conn:call("SET", "k", "v")           --> "OK"
--   conn:pipeline({ { "INCR", "n" }, { "GET", "k" } })   --> { 1, "v" }
--   conn:keepalive()                      -- back to the worker's pool
--
-- Replies: status and bulk strings as strings, integers as numbers, arrays
-- as tables, a nil bulk or array as nil. A server error ("-ERR ...") and a
-- transport failure both give `nil, err`; after a transport failure the
-- connection is closed, never reused.
local M = {}

local Conn = {}
Conn.__index = Conn

local function encode(args)
  local out = { "*", #args, "\r\n" }
  for i = 1, #args do
    local s = tostring(args[i])
    out[#out + 1] = "$" .. #s .. "\r\n"
    out[#out + 1] = s
    out[#out + 1] = "\r\n"
  end
  return table.concat(out)
end

-- One reply; a second value "server" marks a Redis error reply (the
-- connection is still good), "transport" a socket failure.
local function read_reply(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, "redis: " .. err, "transport" end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then
    return rest
  elseif kind == "-" then
    return nil, "redis: " .. rest, "server"
  elseif kind == ":" then
    return tonumber(rest)
  elseif kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local data, rerr = sock:receive(n + 2)
    if not data then return nil, "redis: " .. rerr, "transport" end
    return data:sub(1, n)
  elseif kind == "*" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local arr = {}
    for i = 1, n do
      local v, verr, vkind = read_reply(sock)
      if verr then
        if vkind == "transport" then return nil, verr, vkind end
        v = false          -- an error inside an array: keep the slot
      end
      arr[i] = v
    end
    arr.n = n
    return arr
  end
  return nil, "redis: unexpected reply " .. line, "transport"
end

function M.connect(host, port, timeout_ms)
  local sock = ngx.socket.tcp()
  sock:settimeout(timeout_ms or 1000)
  local ok, err = sock:connect(host, port)
  if not ok then
    return nil, string.format("redis %s:%s: %s", host, tostring(port), err)
  end
  return setmetatable({ sock = sock }, Conn)
end

function Conn:call(...)
  local _, err = self.sock:send(encode({ ... }))
  if err then
    self:close()
    return nil, "redis: " .. err
  end
  local v, rerr, kind = read_reply(self.sock)
  if kind == "transport" then self:close() end
  return v, rerr
end

-- Several commands in one write; their replies in order (a failed one as
-- false), or nil, err on a transport failure.
function Conn:pipeline(cmds)
  local parts = {}
  for i, cmd in ipairs(cmds) do parts[i] = encode(cmd) end
  local _, err = self.sock:send(table.concat(parts))
  if err then
    self:close()
    return nil, "redis: " .. err
  end
  local out = {}
  for i = 1, #cmds do
    local v, rerr, kind = read_reply(self.sock)
    if kind == "transport" then
      self:close()
      return nil, rerr
    end
    if rerr then v = false end
    out[i] = v
  end
  return out
end

function Conn:keepalive()
  if self.sock then
    self.sock:setkeepalive(10000, 16)
    self.sock = nil
  end
end

function Conn:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
end

-- One command on a pooled connection: connect, call, back to the pool.
function M.command(host, port, ...)
  local conn, err = M.connect(host, port)
  if not conn then return nil, err end
  local v, cerr = conn:call(...)
  if conn.sock then conn:keepalive() end
  return v, cerr
end

return M
