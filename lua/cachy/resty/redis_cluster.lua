-- cachy.resty.redis_cluster: a redis store with `cluster` inside nginx, on
-- cosockets: the routing layer over one cachy.resty.redis store per master,
-- with the rules of the blocking driver (csrc/redis_cluster.c). Slots,
-- MOVED/ASK texts and the slot map are csrc/redis_proto.c's, through
-- core.redis_slot_map and core.redis_redirect.
--
-- The map is read on first use from the first seed that answers. A key
-- goes to its slot's master; MOVED sets the slot's master, reads the map
-- again from it and sends the command there; ASK sends it once to the
-- node named, after ASKING (a view of that node's store marked `asking`),
-- keeping the map. A node that fails (refused, closed, timeout) fails the
-- call, and the next call reads the map again from the seeds: after a
-- failover it names the promoted replica. many and put_many send one
-- pipeline per master; flush runs on every master.
local core = require("cachy.core")
local redis = require("cachy.resty.redis")
local group = require("cachy.resty.socket").group

local redis_command, redis_redirect = core.redis_command, core.redis_redirect
local concat, format = table.concat, string.format
local setmetatable, type = setmetatable, type

local MAX_REDIRECTS = 5
local SLOTS_DEPTH, SLOTS_MAX_ELEMS = 4, 16384
-- failures after which the map is read again before the next call
local CONNECTION_CODES = redis.CONNECTION_CODES

local M = {}

local Cluster = {}
Cluster.__index = Cluster

local parse_seed = core.redis_address      -- "host:port", "[v6]:port" -> host, port

-- store_redis.c's and redis_cluster.c's checks of the fields: nil or the
-- misuse message.
local function check(config)
  local why = redis.conflicting_field(config, { "host", "port", "socket", "db" }, "cluster",
    "the nodes come from the cluster, and a cluster has only database 0")
  if why then return why end
  if #config.cluster == 0 then return "field 'cluster' must list at least one node" end
  return redis.bad_address(config.cluster, 1, "field 'cluster' item")
end

function M.new(name, prefix, config)
  local self = setmetatable({
    name = name, prefix = prefix or "", config = config,
    desc = "store '" .. name .. "' (redis cluster)",
    map = core.redis_slot_map(), stores = {}, nseeds = 0, stale = true,
  }, Cluster)
  self.checked = check(config)
  if not self.checked then
    for _, seed in ipairs(config.cluster) do self.map:add(parse_seed(seed)) end
    self.nseeds = #config.cluster
  end
  return self
end

local function fail(self, code, cause)
  return nil, self.desc .. ": " .. cause, code
end

-- The cosocket store of node i (made on first use): the store's own
-- fields but that node's address, and no breaker: the cluster decides
-- when a node is tried again (a failure has the map read again), as the
-- blocking driver's (redis_cluster.c) does.
local function store_of(self, i)
  local st = self.stores[i]
  if st then return st end
  local host, port = self.map:node(i)
  st = redis.new(self.name, self.prefix, redis.node_config(self.config, "cluster", host, port))
  st.retry_after = 0
  self.stores[i] = st
  return st
end

-- Reads the map from node i: true, or nil, err, code.
local function read_map(self, i)
  local st = store_of(self, i)
  local r, err, code = redis.pipeline(st, redis_command("CLUSTER", "SLOTS"), 1, SLOTS_DEPTH, SLOTS_MAX_ELEMS)
  if not r then return nil, err, code end
  r = r[1]
  if type(r) == "table" and r.err then return redis.bad_reply(st, "CLUSTER SLOTS", r) end
  local ok, why = self.map:read(r, st.host)
  if not ok then return nil, st.desc .. ": " .. why, "backend" end
  return true
end

-- Reads the map from node `first` (or none), then the masters known, then
-- the seeds: true, or the last failure.
local function refresh(self, first)
  local tried, ok, err, code = {}, nil, nil, nil
  -- reads the map from node i unless tried already: true once one answered
  local function try(i)
    if tried[i] then return false end
    tried[i] = true
    ok, err, code = read_map(self, i)
    return ok
  end
  if first and try(first) then return true end
  for _, i in ipairs(self.map:masters()) do
    if try(i) then return true end
  end
  for i = 1, self.nseeds do
    if try(i) then return true end
  end
  return nil, err, code
end

-- Ready to route: the fields are valid and the map read (again, after a
-- node failed).
local function ready(self)
  if self.checked then return fail(self, "misuse", self.checked) end
  if self.stale then
    local ok, err, code = refresh(self)
    if not ok then return nil, err, code end
    self.stale = false
  end
  return true
end

-- The index of the master of key (prefixed), the map read again when no
-- node serves its slot.
local function owner_of(self, key)
  local i = self.map:owner(key)
  if i then return i end
  local ok, err, code = refresh(self)
  if not ok then return nil, err, code end
  i = self.map:owner(key)
  if i then return i end
  return fail(self, "backend", "no node of the cluster serves slot " .. core.redis_slot(key))
end

-- Where the failure message of store st sends the command: kind, node index.
local function redirect_of(self, st, err)
  local kind, slot, host, port = redis_redirect(err:sub(#st.desc + 3))
  if not kind then return nil end
  local i = self.map:add(host ~= "" and host or st.host, port)
  if kind == "MOVED" then
    self.map:set(slot, i)
    refresh(self, i)            -- the rest of what moved with it
    if self.map:owner(slot) == nil then self.map:set(slot, i) end
  end
  return kind, i
end

-- store method `method` for key (as the caller gave it) on its slot's
-- master, following redirections.
local function run(self, key, method, ...)
  local ok, err, code = ready(self)
  if not ok then return nil, err, code end
  local i
  i, err, code = owner_of(self, self.prefix .. key)
  if not i then return nil, err, code end
  local st = store_of(self, i)
  for _ = 0, MAX_REDIRECTS do
    local a, b, c = st[method](st, ...)
    if a ~= nil or c ~= "backend" then
      if a == nil and CONNECTION_CODES[c] then self.stale = true end
      return a, b, c
    end
    local kind, to = redirect_of(self, st, b)
    if not kind then return a, b, c end
    st = store_of(self, to)
    if kind == "ASK" then st = setmetatable({ asking = true }, { __index = st }) end
  end
  return fail(self, "backend", format("more than %d redirections (MOVED, ASK) for key '%s'",
    MAX_REDIRECTS, core.quote_key(key)))
end

function Cluster:get(key) return run(self, key, "get", key) end
function Cluster:put(key, bytes, ms) return run(self, key, "put", key, bytes, ms) end
function Cluster:add(key, bytes, ms) return run(self, key, "add", key, bytes, ms) end
function Cluster:forget(key) return run(self, key, "forget", key) end
function Cluster:incr(key, by, shown_key, verb) return run(self, key, "incr", key, by, shown_key, verb) end
function Cluster:forget_if(key, bytes) return run(self, key, "forget_if", key, bytes) end
function Cluster:touch_if(key, bytes, ms) return run(self, key, "touch_if", key, bytes, ms) end

-- The keys' indexes grouped by master: { [node] = { index, ... } }, the
-- nodes in the order first seen.
local function by_node(self, keys)
  local groups, order = {}, {}
  for k = 1, #keys do
    local i, err, code = owner_of(self, self.prefix .. keys[k])
    if not i then return nil, err, code end
    group(groups, order, i, k)
  end
  return groups, order
end

-- The replies of each master in `order` to its commands cmds[n], as
-- replies[n]: every master's pipeline is sent before any reply is read,
-- so they work at once (a round trip in all, not one per master). A
-- connection failure marks the map to be read again; the round trips
-- still pending are dropped.
local function node_pipelines(self, order, cmds)
  local pending, replies = {}, {}
  local err, code
  for n, i in ipairs(order) do
    pending[n], err, code = redis.send(store_of(self, i), concat(cmds[n]))
    if not pending[n] then break end
  end
  if not err then
    for n, i in ipairs(order) do
      replies[n], err, code = redis.receive(store_of(self, i), pending[n], #cmds[n])
      if not replies[n] then break end
    end
  end
  if not err then return replies end
  for n = 1, #order do
    if pending[n] then redis.drop(pending[n]) end
  end
  if CONNECTION_CODES[code] then self.stale = true end
  return nil, err, code
end

local function is_redirect(v)
  return type(v) == "table" and v.err and redis_redirect(v.err) ~= nil
end

-- The replies to one command per key (command(k): the k-th key's), one
-- pipeline per master: groups, order (as by_node's) and the replies by
-- master; nil, err, code.
local function per_key(self, keys, command)
  local ok, err, code = ready(self)
  if not ok then return nil, err, code end
  local groups, order
  groups, order, code = by_node(self, keys)
  if not groups then return nil, order, code end
  local cmds = {}
  for n, i in ipairs(order) do
    local g, c = groups[i], {}
    for j = 1, #g do c[j] = command(g[j]) end
    cmds[n] = c
  end
  local replies
  replies, err, code = node_pipelines(self, order, cmds)
  if not replies then return nil, err, code end
  return groups, order, replies
end

-- many({ key, ... }) -> { [k] = bytes } for the keys found: one pipeline
-- of GETs per master; a reply that redirects is done again alone.
function Cluster:many(keys)
  local prefix = self.prefix
  local groups, order, replies = per_key(self, keys, function(k)
    return redis_command("GET", prefix .. keys[k])
  end)
  if not groups then return nil, order, replies end     -- nil, err, code
  local out, err, code = {}, nil, nil
  for n, i in ipairs(order) do
    local g = groups[i]
    for j = 1, #g do
      local v, k = replies[n][j], g[j]
      if type(v) == "string" then
        out[k] = v
      elseif is_redirect(v) then
        v, err, code = self:get(keys[k])
        if v == nil and err then return nil, err, code end
        out[k] = v
      elseif v ~= false then
        return redis.bad_reply(store_of(self, i), "GET", v)
      end
    end
  end
  return out
end

-- Every SET in one pipeline per master; every reply is read. A reply
-- that redirects is done again alone.
function Cluster:put_many(keys, vals, ms)
  for k = 1, #keys do
    if #vals[k] > 512 * 1024 * 1024 then return self:put(keys[k], vals[k], ms) end   -- its too_big message
  end
  local prefix = self.prefix
  local groups, order, replies = per_key(self, keys, function(k)
    return redis.set_command(prefix .. keys[k], vals[k], ms, false)
  end)
  if not groups then return nil, order, replies end     -- nil, err, code
  local failed, err, code
  for n, i in ipairs(order) do
    local g = groups[i]
    for j = 1, #g do
      local v = replies[n][j]
      if is_redirect(v) then
        local _
        _, err, code = self:put(keys[g[j]], vals[g[j]], ms)
        if err and not failed then failed = { err, code } end
      elseif not (type(v) == "table" and v.ok == "OK") and not failed then
        local _, e, c = redis.bad_reply(store_of(self, i), "SET", v)
        failed = { e, c }
      end
    end
  end
  if failed then return nil, failed[1], failed[2] end
  return true
end

-- One master's keys under the prefix: SCAN MATCH, then one UNLINK per key
-- (keys of different slots cannot share one), pipelined.
local function flush_node(self, i)
  local st, prefix = store_of(self, i), self.prefix
  local pattern, cursor, plen = redis.match_pattern(prefix), "0", #prefix
  repeat
    local r, err, code = redis.pipeline(st, redis_command("SCAN", cursor, "MATCH", pattern, "COUNT",
      redis.SCAN_COUNT), 1, 2, redis.SCAN_MAX_KEYS)
    if not r then return nil, err, code end
    r = r[1]
    if not (type(r) == "table" and not r.err and not r.ok and #r == 2 and type(r[1]) == "string"
            and #r[1] < 24 and type(r[2]) == "table") then
      return redis.bad_reply(st, "SCAN", r)
    end
    cursor = r[1]
    local cmds, mine = {}, {}
    for _, k in ipairs(r[2]) do
      if type(k) ~= "string" then return redis.bad_reply(st, "SCAN", k) end
      if k:sub(1, plen) == prefix then
        cmds[#cmds + 1] = redis_command("UNLINK", k)
        mine[#mine + 1] = k:sub(plen + 1)
      end
    end
    if #cmds > 0 then
      local replies
      replies, err, code = redis.pipeline(st, concat(cmds), #cmds, 0, 0)
      if not replies then return nil, err, code end
      for j = 1, #cmds do
        local v = replies[j]
        if is_redirect(v) then
          local _
          _, err, code = self:forget(mine[j])
          if err then return nil, err, code end
        elseif type(v) ~= "number" then
          return redis.bad_reply(st, "UNLINK", v)
        end
      end
    end
  until cursor == "0"
  return true
end

-- Every master: FLUSHDB without a prefix, else flush_node. A failure on
-- one does not keep the others from being flushed; the last is reported.
function Cluster:flush()
  local ok, err, code = ready(self)
  if not ok then return nil, err, code end
  local last
  for _, i in ipairs(self.map:masters()) do
    local st, e, c = store_of(self, i), nil, nil
    if self.prefix == "" then
      ok, e, c = st:flush()
    else
      ok, e, c = flush_node(self, i)
    end
    if not ok then
      if CONNECTION_CODES[c] then self.stale = true end
      last = { e, c }
    end
  end
  if last then return nil, last[1], last[2] end
  return true
end

function Cluster:prune() return fail(self, "misuse", "the redis driver has no prune") end
function Cluster:describe() return self.desc end
function Cluster:close() end

return M
