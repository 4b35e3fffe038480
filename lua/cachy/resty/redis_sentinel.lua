-- cachy.resty.redis_sentinel: a redis store with `sentinel` inside nginx, on
-- cosockets, with the rules of the blocking driver (csrc/redis_sentinel.c):
-- the master's address comes from the sentinels, asked in the order
-- configured (SENTINEL get-master-addr-by-name), checked with ROLE, and
-- asked again after a call fails on the connection (refused, closed,
-- timeout) or gets READONLY (a master turned replica). The calls go
-- through a cachy.resty.redis store for that address (its pooled
-- connections, AUTH and SELECT), one per address seen.
local core = require("cachy.core")
local redis = require("cachy.resty.redis")

local redis_command = core.redis_command
local setmetatable, tonumber, type = setmetatable, tonumber, type

local CONNECTION_CODES = redis.CONNECTION_CODES

local M = {}

local Sentinel = {}
Sentinel.__index = Sentinel

local address = core.redis_address        -- "host:port", "[v6]:port" -> host, port

-- config.sentinel is { master, "host:port", ... } (cachy.new made it so).
local function check(config)
  local why = redis.conflicting_field(config, { "host", "port", "socket", "cluster" }, "sentinel",
    "the sentinels say where the master is")
  if why then return why end
  local list = config.sentinel
  if #list < 2 then return "field 'sentinel' must name the master and list at least one node" end
  return redis.bad_address(list, 2, "field 'sentinel' node")
end

function M.new(name, prefix, config)
  local self = setmetatable({
    name = name, prefix = prefix or "", config = config,
    master = config.sentinel[1],
    desc = "store '" .. name .. "' (redis sentinel " .. tostring(config.sentinel[1]) .. ")",
    stores = {}, current = nil,
  }, Sentinel)
  self.checked = check(config)
  return self
end

-- A cosocket store for host:port with the store's fields; sentinel: one
-- for a sentinel (no AUTH, no SELECT, no prefix).
local function store_for(self, host, port, sentinel)
  local key = (sentinel and "s:" or "m:") .. host .. ":" .. port
  local st = self.stores[key]
  if st then return st end
  local config = redis.node_config(self.config, "sentinel", host, port)
  if sentinel then config.username, config.password, config.db = nil, nil, nil end
  st = redis.new(self.name, sentinel and "" or self.prefix, config)
  if sentinel then st.desc = "store '" .. self.name .. "' (redis sentinel " .. host .. ":" .. port .. ")" end
  self.stores[key] = st
  return st
end

-- Asks the sentinels for the master and checks it with ROLE: its store,
-- or nil, err, code (the last sentinel's failure).
local function resolve(self)
  local list, err, code = self.config.sentinel, nil, nil
  for i = 2, #list do
    local host, port = address(list[i])
    local st = store_for(self, host, port, true)
    local r
    r, err, code = redis.pipeline(st, redis_command("SENTINEL", "get-master-addr-by-name", self.master), 1, 1, 2)
    if r then
      r = r[1]
      port = type(r) == "table" and tonumber(r[2])
      if type(r) == "table" and type(r[1]) == "string" and port and port >= 1 and port <= 65535 then
        local master = store_for(self, r[1], port, false)
        local role
        role, err, code = redis.pipeline(master, redis_command("ROLE"), 1, 3, 16384)
        if not role then return nil, err, code end
        role = role[1]
        if type(role) == "table" and role[1] == "master" then return master end
        if type(role) == "table" and type(role[1]) == "string" then
          return nil, master.desc .. ": the sentinels name a " .. role[1] .. ", not a master", "closed"
        end
        return redis.bad_reply(master, "ROLE", role)
      elseif r == false then
        err, code = st.desc .. ": the sentinel knows no master named '" .. self.master .. "'", "backend"
      else
        err, code = select(2, redis.bad_reply(st, "SENTINEL get-master-addr-by-name", r))
      end
    end
  end
  return nil, err, code
end

local function run(self, method, ...)
  if self.checked then return nil, self.desc .. ": " .. self.checked, "misuse" end
  local st = self.current
  if not st then
    local err, code
    st, err, code = resolve(self)
    if not st then return nil, err, code end
    self.current = st
  end
  local a, b, c = st[method](st, ...)
  if a == nil and (CONNECTION_CODES[c] or (c == "backend" and type(b) == "string"
                   and b:find(": READONLY", 1, true))) then
    self.current = nil         -- asked again on the next call
  end
  return a, b, c
end

for _, method in ipairs({ "get", "put", "add", "forget", "incr", "flush", "many", "put_many",
                          "forget_if", "touch_if" }) do
  Sentinel[method] = function(self, ...) return run(self, method, ...) end
end

function Sentinel:prune() return nil, self.desc .. ": the redis driver has no prune", "misuse" end
function Sentinel:describe() return self.desc end
function Sentinel:close() end

return M
