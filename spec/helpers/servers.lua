-- spec/helpers/servers.lua: real redis-server and memcached processes for the
-- specs, on free 127.0.0.1 ports, stopped by PID. A missing server is an
-- error, never a skip: these specs must run wherever the suite runs.
local util = require("helpers.util")

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/helpers"
local tmp = os.getenv("CACHY_TMP") or "/tmp"

local Server = {}
Server.__index = Server

local succeeds, sh = util.succeeds, util.sh
M.succeeds = succeeds

-- kind: "redis" | "memcached"; args: extra command-line arguments (strings)
function M.start(kind, args, port)
  local quoted = {}
  for i, a in ipairs(args or {}) do quoted[i] = util.q(a) end
  local out = sh(string.format("%s/start_server.sh %s %s/%s %s", here, kind, tmp, kind,
    table.concat(quoted, " ")))
  local pid, p = out:match("^(%d+) (%d+)")
  if not pid then error("could not start " .. kind .. ": " .. out) end
  return setmetatable({ kind = kind, pid = tonumber(pid), port = tonumber(p), args = args }, Server)
end

function Server:signal(sig)
  if sig == "STOP" then
    return require("helpers.stopped").stop(self.pid, require("system").sleep)
  end
  os.execute(string.format("kill -%s %d 2>/dev/null", sig, self.pid))
end

-- Gone, or a zombie waiting for init to reap it (kill -0 still succeeds on
-- those). The main thread of a killed multi-threaded server (memcached) turns
-- zombie before its other threads have exited, and their shared descriptors,
-- the listening socket among them, close only with the last one: until then a
-- new connection is accepted and then reset. So a zombie counts as gone only
-- once it is the last thread left.
local function gone(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return true end
  local status = f:read("*a")
  f:close()
  return status:match("\nState:%s*Z") ~= nil and (tonumber(status:match("\nThreads:%s*(%d+)")) or 1) <= 1
end
M.gone = gone

-- Stops the process and waits until it is gone.
function Server:stop(sig)
  self:signal(sig or "TERM")
  for _ = 1, 200 do
    if gone(self.pid) then return end
    os.execute("sleep 0.02")
  end
  self:signal("KILL")
end

-- Starts the same server again on the same port (after stop/kill).
function Server:restart()
  local again
  for _ = 1, 50 do
    local ok, s = pcall(M.start_on, self.kind, self.args, self.port)
    if ok then again = s break end
    os.execute("sleep 0.1")
  end
  assert(again, "could not restart " .. self.kind .. " on port " .. self.port)
  self.pid = again.pid
  return self
end

-- Starts a server on a given port (used by restart).
function M.start_on(kind, args, port)
  local extra = {}
  for i, a in ipairs(args or {}) do extra[i] = a end
  local cmd
  local dir = tmp .. "/" .. kind
  os.execute("mkdir -p " .. dir)
  local q = {}
  for i, a in ipairs(extra) do q[i] = util.q(a) end
  if kind == "redis" then
    cmd = string.format("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s --daemonize no %s >>%s/redis-%d.log 2>&1 & echo $!",
      port, dir, table.concat(q, " "), dir, port)
  else
    cmd = string.format("memcached -l 127.0.0.1 -p %d -U 0 -u root -m 64 %s >>%s/memcached-%d.log 2>&1 & echo $!",
      port, table.concat(q, " "), dir, port)
  end
  local pid = tonumber(sh(cmd):match("%d+"))
  local pidfile = os.getenv("CACHY_PIDFILE")
  if pidfile then
    local f = io.open(pidfile, "a")
    if f then f:write(pid, "\n") f:close() end
  end
  for _ = 1, 100 do
    if succeeds(string.format(
      "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\",%d),0.2).close()' 2>/dev/null", port)) then
      return setmetatable({ kind = kind, pid = pid, port = port, args = args }, Server)
    end
    if not succeeds(string.format("kill -0 %d 2>/dev/null", pid)) then break end
    os.execute("sleep 0.05")
  end
  os.execute(string.format("kill %d 2>/dev/null", pid))
  error("could not start " .. kind .. " on port " .. port)
end

-- A Redis Cluster of `masters` masters with `replicas` replicas each (3 and
-- 1 by default), formed by redis-cli --cluster create, every slot served:
-- { nodes = { Server... }, seeds = { "127.0.0.1:PORT", ... }, stop = fn }.
-- node_timeout: cluster-node-timeout in ms (how soon a dead master's
-- replica takes over).
function M.cluster(opts)
  opts = opts or {}
  local masters, replicas = opts.masters or 3, opts.replicas or 1
  -- validity factor 0: a replica takes over however long since it heard
  -- from its master (an idle test cluster's replicas may not have for a while)
  local args = { "--cluster-node-timeout", tostring(opts.node_timeout or 2000),
                 "--cluster-replica-validity-factor", "0" }
  local c = { nodes = {}, seeds = {} }
  function c.stop()
    for _, node in ipairs(c.nodes) do node:stop("KILL") end
  end
  local ok, err = pcall(function()
    for i = 1, masters * (1 + replicas) do
      c.nodes[i] = M.start("redis-cluster", args)
      c.seeds[i] = "127.0.0.1:" .. c.nodes[i].port
    end
    local out = sh(string.format("redis-cli --cluster create %s --cluster-replicas %d --cluster-yes 2>&1",
      table.concat(c.seeds, " "), replicas))
    if not out:find("All 16384 slots covered", 1, true) then
      error("redis-cli --cluster create failed: " .. out)
    end
    M.wait_cluster(c)
  end)
  if not ok then
    c.stop()
    error(err, 0)
  end
  return c
end

-- A master and its replica watched by two Redis Sentinels, the master
-- named "mymaster": { master = Server, replica = Server, sentinels =
-- { Server, Server }, nodes = { "127.0.0.1:PORT", ... } (the sentinels),
-- stop = fn }. Ready once both sentinels know the replica.
function M.sentinel_group()
  local g = { sentinels = {}, nodes = {} }
  local all = {}
  function g.stop()
    for _, s in ipairs(all) do s:stop("KILL") end
  end
  local ok, err = pcall(function()
    -- their own data files: a replica's sync writes one, which must not
    -- reach another spec's server
    local tag = os.time() .. "-" .. math.random(1e9)
    g.master = M.start("redis", { "--dbfilename", "sentinel-master-" .. tag .. ".rdb",
                                  "--repl-diskless-sync-delay", "0" })
    all[#all + 1] = g.master
    g.replica = M.start("redis", { "--dbfilename", "sentinel-replica-" .. tag .. ".rdb",
                                   "--replicaof", "127.0.0.1", tostring(g.master.port) })
    all[#all + 1] = g.replica
    for i = 1, 2 do
      g.sentinels[i] = M.start("sentinel", { "mymaster", tostring(g.master.port), "1" })
      all[#all + 1] = g.sentinels[i]
      g.nodes[i] = "127.0.0.1:" .. g.sentinels[i].port
    end
    M.wait_sentinels(g, 30)
  end)
  if not ok then
    g.stop()
    error(err, 0)
  end
  return g
end

-- Waits until every live sentinel names the master (want_port, by
-- default the group's) and knows its replica, and the replica's link to
-- the master is up.
function M.wait_sentinels(g, seconds, want_port)
  local deadline = os.time() + (seconds or 30)
  want_port = want_port or g.master.port
  repeat
    local all = sh(string.format("redis-cli -p %d info replication 2>&1", g.replica.port))
      :find("master_link_status:up", 1, true) ~= nil
    for _, s in ipairs(g.sentinels) do
      local addr = sh(string.format("redis-cli -p %d sentinel get-master-addr-by-name mymaster 2>&1", s.port))
      local replicas = sh(string.format("redis-cli -p %d sentinel replicas mymaster 2>&1", s.port))
      if tonumber(addr:match("\n(%d+)")) ~= want_port or not replicas:find(tostring(g.replica.port), 1, true) then
        all = false
        break
      end
    end
    if all then return end
    os.execute("sleep 0.1")
  until os.time() > deadline
  error("the sentinels did not settle")
end

-- Waits until every live node of the cluster says cluster_state:ok and
-- knows a master for every slot. fn (optional) must hold as well.
function M.wait_cluster(c, seconds, fn)
  local deadline = os.time() + (seconds or 30)
  repeat
    local all = true
    for _, node in ipairs(c.nodes) do
      if not gone(node.pid) then
        local info = sh(string.format("redis-cli -p %d cluster info 2>&1", node.port))
        if not info:find("cluster_state:ok", 1, true) then all = false break end
      end
    end
    if all and (fn == nil or fn()) then return end
    os.execute("sleep 0.1")
  until os.time() > deadline
  error("the cluster did not settle")
end

return M
