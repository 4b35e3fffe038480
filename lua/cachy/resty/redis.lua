-- cachy.resty.redis: the redis driver inside nginx (SPEC section 11). Two
-- parts:
--
--  * a store behind the bytes interface (cachy.luastore has it: get, put,
--    add, forget, incr, flush, many, put_many, prune, close,
--    describe) that talks to Redis through ngx.socket.tcp: the bytes come
--    from csrc/redis_proto.c (core.redis_command, core.redis_reader), the
--    same commands, stored bytes, messages and codes as the blocking
--    driver (csrc/store_redis.c), so either reads what the other wrote;
--  * the dispatcher the repository uses for a redis store inside nginx:
--    per call, ngx.get_phase() picks the cosocket store where nginx allows
--    cosockets and the blocking C handle where it does not.
--
-- Connections live in the worker's pool, one pool per address, database,
-- user and password (so differently-authenticated connections never
-- share). A connection goes back to the pool only after a call that fully
-- succeeded; after any failure or timeout it is closed, so a late reply is
-- never read as the answer to another command. AUTH and SELECT are sent on
-- new connections only (getreusedtimes() == 0).
--
-- Loaded only inside nginx (cachy.repository requires it there).
local core = require("cachy.core")
local socket = require("cachy.resty.socket")
local seconds_text, timeout_ms, release = socket.seconds_text, socket.timeout_ms, socket.release

local ngx = ngx
local tcp, get_phase, now, update_time = ngx.socket.tcp, ngx.get_phase, ngx.now, ngx.update_time
local redis_command, redis_reader, quote_key = core.redis_command, core.redis_reader, core.quote_key
local reply_of = core.redis_reply_of
local format, byte, floor, concat = string.format, string.byte, math.floor, table.concat
local setmetatable, type = setmetatable, type

local M = {}

-- store_redis.c's limits: Redis's proto-max-bulk-len (redis_proto.h's
-- CACHY_RESP_MAX_BULK), SCAN's batches.
local MAX_BULK = 512 * 1024 * 1024
local SCAN_COUNT = "1000"
local SCAN_MAX_KEYS = 100000
local TEXT_SHOWN = 200
local READ_CHUNK = 16384

-- Phases whose Lua code may use cosockets (the others: init, init_worker,
-- set, header_filter, body_filter, log, balancer, exit_worker,
-- ssl_session_store).
M.COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}
local COSOCKET_PHASES = M.COSOCKET_PHASES

-- ---- text for messages (as store_redis.c writes it) ------------------------

-- A server's text: at most TEXT_SHOWN bytes, then "..."; bytes outside
-- printable ASCII as \xNN.
local function shown(s)
  local cut = #s > TEXT_SHOWN
  if cut then s = s:sub(1, TEXT_SHOWN) end
  s = s:gsub("[^\32-\126]", function(c) return format("\\x%02x", byte(c)) end)
  if cut then s = s .. "..." end
  return s
end

-- hiredis's reply type numbers, for "unexpected reply type N to CMD".
local function reply_type(v)
  local t = type(v)
  if t == "string" then return 1 end
  if t == "number" then return 3 end
  if v == false then return 4 end
  if t == "table" then
    if v.ok then return 5 end
    if v.err then return 6 end
    return 2
  end
  return 0
end

local function is_ok(v)
  return type(v) == "table" and v.ok == "OK"
end

-- ---- the cosocket store -------------------------------------------------------

local Store = {}
Store.__index = Store

-- A store on nginx cosockets for the redis store `name` (config validated
-- by cachy.new; ranges are checked on first use, as the C driver does).
function M.new(name, prefix, config)
  local host, port, socket = config.host or "127.0.0.1", config.port or 6379, config.socket
  local address
  if socket then
    address = socket
  elseif host:find(":", 1, true) then
    address = format("[%s]:%.0f", host, port)
  else
    address = format("%s:%.0f", host, port)
  end
  local self = setmetatable({
    name = name, prefix = prefix or "", config = config,
    host = host, port = port, socket = socket,
    db = config.db or 0, username = config.username, password = config.password,
    connect_timeout = config.connect_timeout or 1.0, timeout = config.timeout or 1.0,
    retry_after = config.retry_after or 2.0,
    keepalive_ms = floor((config.keepalive or 60) * 1000),
    pool_size = config.pool_size or 64,
    desc = "store '" .. name .. "' (redis " .. address .. ")",
  }, Store)
  self.checked = self:check()
  self.cto_ms, self.to_ms = timeout_ms(self.connect_timeout), timeout_ms(self.timeout)
  -- one pool per server, database, user and password (hashed: pool names
  -- show up in nginx's debug logs)
  self.pool = concat({ "cachy:redis", socket and ("unix:" .. socket) or (host .. ":" .. port),
                       tostring(self.db), self.username or "",
                       self.password and core.hash(self.password):sub(1, 16) or "" }, ":")
  self.connect_opts = { pool = self.pool, pool_size = self.pool_size, backlog = config.pool_backlog }
  if socket then self.target = "unix:" .. socket end
  return self
end

function Store:describe()
  return self.desc
end

local function fail(self, code, cause)
  return nil, self.desc .. ": " .. cause, code
end

-- store_redis.c's read_options: nil when the fields are in range, else
-- the misuse message (reported by every call).
function Store:check()
  local port, db = self.port, self.db
  local function bad(field, must) return "field '" .. field .. "' must be " .. must end
  if not (port >= 1 and port <= 65535 and port == floor(port)) then
    return bad("port", "an integer from 1 to 65535")
  end
  if not (db >= 0 and db <= 2147483647 and db == floor(db)) then
    return bad("db", "an integer from 0")
  end
  if not (self.connect_timeout > 0 and self.connect_timeout <= 86400) then
    return bad("connect_timeout", "a number of seconds above 0, at most 86400")
  end
  if not (self.timeout > 0 and self.timeout <= 86400) then
    return bad("timeout", "a number of seconds above 0, at most 86400")
  end
  if self.username and not self.password then
    return bad("password", "set when 'username' is")
  end
  if not (self.retry_after >= 0 and self.retry_after <= 86400) then
    return bad("retry_after", "a number of seconds from 0, at most 86400")
  end
  return nil
end

-- A socket error of a call in progress, as store_redis.c words it; the
-- connection is closed (never pooled) before this is returned.
local function io_fail(self, sock, err)
  sock:close()
  if err == "timeout" then
    return fail(self, "timeout", "timed out after " .. seconds_text(self.timeout) .. " s")
  end
  if err == "closed" then return fail(self, "closed", "connection closed by the server") end
  return fail(self, "closed", "connection lost: " .. tostring(err))
end

-- Reads `count` replies (1: the reply itself, else a list) through
-- reader, within one deadline of `timeout` (reads: how many reads of this
-- round trip were made already, their bytes fed to reader).
local function read_replies(self, sock, reader, count, deadline, reads)
  local out, got = nil, 0
  if count > 1 then out = {} end
  while true do
    local v, rerr, code = reader:reply()
    if v ~= nil then
      if count == 1 then
        if reader:buffered() > 0 then sock:close() end  -- more replies than commands
        return v
      end
      got = got + 1
      out[got] = v
      if got == count then
        if reader:buffered() > 0 then sock:close() end
        return out
      end
    elseif rerr then
      sock:close()
      return fail(self, code, rerr)
    else
      -- the round trip has one deadline: later reads wait only what is left
      if reads > 0 then
        update_time()
        local left = deadline - now()
        if left <= 0 then return io_fail(self, sock, "timeout") end
        sock:settimeouts(self.cto_ms, self.to_ms, timeout_ms(left))
      end
      reads = reads + 1
      local data, err = sock:receiveany(READ_CHUNK)
      if not data then return io_fail(self, sock, err) end
      reader:feed(data)
    end
  end
end

-- Sends bytes, then reads `count` replies with the reader's limits; the
-- reader's buffer is freed at once (a reply may have been large).
-- One reply that one read brings whole (the common case) is parsed
-- without a reader of its own (core.redis_reply_of).
local function round_trip(self, sock, bytes, count, depth, elems)
  local deadline = now() + self.timeout
  local ok, err = sock:send(bytes)
  if not ok then return io_fail(self, sock, err) end
  local first
  if count == 1 then
    local rerr
    first, rerr = sock:receiveany(READ_CHUNK)
    if not first then return io_fail(self, sock, rerr) end
    local v = reply_of(first, depth, elems)
    if v ~= nil then return v end
  end
  local reader = redis_reader(depth, elems, MAX_BULK)
  if first then reader:feed(first) end
  local v, code
  v, err, code = read_replies(self, sock, reader, count, deadline, first and 1 or 0)
  reader:close()
  return v, err, code
end

local function connect_fail(self, sock, err)
  sock:close()
  if err == "timeout" then
    return fail(self, "timeout", "connect timed out after " .. seconds_text(self.connect_timeout) .. " s")
  end
  if err == "connection refused" then return fail(self, "refused", "connection refused") end
  return fail(self, "refused", "cannot connect: " .. tostring(err))
end

-- A connected socket: from the pool, or new (then AUTH and SELECT in one
-- round trip, as store_redis.c's handshake).
local function open(self)
  local sock = tcp()
  sock:settimeouts(self.cto_ms, self.to_ms, self.to_ms)
  local ok, err
  if self.target then
    ok, err = sock:connect(self.target, self.connect_opts)
  else
    ok, err = sock:connect(self.host, self.port, self.connect_opts)
  end
  if not ok then return connect_fail(self, sock, err) end
  if (self.password == nil and self.db == 0) or (sock:getreusedtimes() or 0) > 0 then
    return sock
  end
  local cmds, whats = {}, {}
  if self.password then
    if self.username then
      cmds[#cmds + 1] = redis_command("AUTH", self.username, self.password)
    else
      cmds[#cmds + 1] = redis_command("AUTH", self.password)
    end
    whats[#whats + 1] = "authentication failed"
  end
  if self.db ~= 0 then
    cmds[#cmds + 1] = redis_command("SELECT", format("%d", self.db))
    whats[#whats + 1] = format("cannot select database %d", self.db)
  end
  local replies, code
  replies, err, code = round_trip(self, sock, concat(cmds), #cmds, 0, 0)
  if replies == nil then return nil, err, code end
  if #cmds == 1 then replies = { replies } end
  for i = 1, #cmds do
    local r = replies[i]
    if not (type(r) == "table" and r.ok) then
      sock:close()
      if type(r) == "table" and r.err then return fail(self, "backend", whats[i] .. ": " .. shown(r.err)) end
      return fail(self, "backend", whats[i] .. ": unexpected reply")
    end
  end
  return sock
end

local ASKING = redis_command("ASKING")

-- store_redis.c's breaker, per worker: after a failed connect (refused, no
-- such socket, connect_timeout, the AUTH/SELECT round trip timing out or
-- breaking; not an error answer, nor a failure on a pooled connection),
-- calls fail at once with that connect's error for retry_after seconds.
local function connect(self)
  if self.checked then return fail(self, "misuse", self.checked) end
  local held = self.held
  if held and now() < held[1] then return nil, held[2], held[3] end
  local sock, err, code = open(self)
  if not sock and self.retry_after > 0 and (code == "refused" or code == "closed" or code == "timeout") then
    self.held = { now() + self.retry_after, err, code }
  end
  return sock, err, code
end

-- One command, one reply: the reply, or nil, err, code. A store marked
-- `asking` (cachy.resty.redis_cluster, following an ASK redirection) sends
-- ASKING first, on the same connection.
local function call(self, bytes, depth, elems)
  local sock, err, code = connect(self)
  if not sock then return nil, err, code end
  local v
  if self.asking then
    v, err, code = round_trip(self, sock, ASKING .. bytes, 2, depth or 0, elems or 0)
    v = v and v[2]
  else
    v, err, code = round_trip(self, sock, bytes, 1, depth or 0, elems or 0)
  end
  if v == nil then return nil, err, code end
  release(self, sock)
  return v
end

-- A reply the command does not give when it works (the stream is in step).
local function bad_reply(self, cmd, v)
  if type(v) == "table" and v.err then return fail(self, "backend", shown(v.err)) end
  return fail(self, "backend", format("unexpected reply type %d to %s", reply_type(v), cmd))
end

local function too_big(self, bytes)
  if #bytes <= MAX_BULK then return nil end
  return fail(self, "too_big", format("value of %d bytes is larger than Redis accepts (%d)", #bytes, MAX_BULK))
end

local function set_command(key, bytes, ms, nx)
  ms = ms and ms >= 1 and ms < 9.2e18 and floor(ms) or 0
  if ms > 0 then
    if nx then return redis_command("SET", key, bytes, "NX", "PX", format("%d", ms)) end
    return redis_command("SET", key, bytes, "PX", format("%d", ms))
  end
  if nx then return redis_command("SET", key, bytes, "NX") end
  return redis_command("SET", key, bytes)
end

function Store:get(key)
  local v, err, code = call(self, redis_command("GET", self.prefix .. key))
  if v == nil then return nil, err, code end
  if type(v) == "string" then return v end
  if v == false then return nil end
  return bad_reply(self, "GET", v)
end

function Store:put(key, bytes, ms)
  local _, err, code = too_big(self, bytes)
  if err then return nil, err, code end
  local v
  v, err, code = call(self, set_command(self.prefix .. key, bytes, ms, false))
  if v == nil then return nil, err, code end
  if is_ok(v) then return true end
  return bad_reply(self, "SET", v)
end

function Store:add(key, bytes, ms)
  local _, err, code = too_big(self, bytes)
  if err then return nil, err, code end
  local v
  v, err, code = call(self, set_command(self.prefix .. key, bytes, ms, true))
  if v == nil then return nil, err, code end
  if is_ok(v) then return true end
  if v == false then return false end        -- NX: the key was there
  return bad_reply(self, "SET", v)
end

function Store:forget(key)
  local v, err, code = call(self, redis_command("DEL", self.prefix .. key))
  if v == nil then return nil, err, code end
  if type(v) == "number" then return v > 0 end
  return bad_reply(self, "DEL", v)
end

-- incr(key, by [, shown [, verb]]): shown is the key as the caller wrote
-- it (default: key), verb "decrement" when the caller decremented.
-- INCRBY/DECRBY keep the key's expiry; a missing key starts at 0.
function Store:incr(key, by, shown_key, verb)
  local cmd
  if by < 0 and by ~= (math.mininteger or -2 ^ 63) then
    cmd = redis_command("DECRBY", self.prefix .. key, format("%d", -by))
  else
    cmd = redis_command("INCRBY", self.prefix .. key, format("%d", by))
  end
  local v, err, code = call(self, cmd)
  if v == nil then return nil, err, code end
  if type(v) == "number" then return v end
  local text = type(v) == "table" and v.err
  if text and text:find("not an integer", 1, true) then
    return fail(self, "not_integer", "value of key '" .. quote_key(shown_key or key) .. "' is not an integer")
  elseif text and text:find("overflow", 1, true) then
    return fail(self, "overflow", (verb == "decrement" and "decrement" or "increment") .. " of key '"
      .. quote_key(shown_key or key) .. "' overflows 64 bits")
  end
  return bad_reply(self, by < 0 and "DECRBY" or "INCRBY", v)
end

-- forget_if(key, bytes) and touch_if(key, bytes, ms), for locks: the
-- blocking driver's EVAL (core.redis_lock_command), whose reply is 1 or 0.
local function lock_script(self, which, key, bytes, ms)
  local _, err, code = too_big(self, bytes)
  if err then return nil, err, code end
  local v
  v, err, code = call(self, core.redis_lock_command(which, self.prefix .. key, bytes, ms))
  if v == nil then return nil, err, code end
  if type(v) == "number" then return v == 1 end
  return bad_reply(self, "EVAL", v)
end

function Store:forget_if(key, bytes)
  return lock_script(self, "forget_if", key, bytes)
end

function Store:touch_if(key, bytes, ms)
  return lock_script(self, "touch_if", key, bytes, ms)
end

-- The prefix as a SCAN MATCH pattern: glob characters escaped, then "*".
local function match_pattern(prefix)
  return (prefix:gsub("[%*%?%[%]\\]", "\\%0")) .. "*"
end

-- With a prefix: SCAN MATCH prefix* and UNLINK of each batch's keys that
-- really carry it, on one connection; without: FLUSHDB.
function Store:flush()
  local prefix = self.prefix
  if prefix == "" then
    local v, err, code = call(self, redis_command("FLUSHDB"))
    if v == nil then return nil, err, code end
    if is_ok(v) then return true end
    return bad_reply(self, "FLUSHDB", v)
  end
  local sock, err, code = connect(self)
  if not sock then return nil, err, code end
  local pattern, cursor, plen = match_pattern(prefix), "0", #prefix
  repeat
    local r
    r, err, code = round_trip(self, sock, redis_command("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT),
                              1, 2, SCAN_MAX_KEYS)
    if r == nil then return nil, err, code end
    if not (reply_type(r) == 2 and #r == 2 and type(r[1]) == "string" and #r[1] < 24
            and reply_type(r[2]) == 2) then
      release(self, sock)
      return bad_reply(self, "SCAN", r)
    end
    cursor = r[1]
    local args = { "UNLINK" }
    for _, k in ipairs(r[2]) do
      if type(k) ~= "string" then
        release(self, sock)
        return bad_reply(self, "SCAN", k)
      end
      if k:sub(1, plen) == prefix then args[#args + 1] = k end
    end
    if #args > 1 then
      local n
      n, err, code = round_trip(self, sock, redis_command(args), 1, 0, 0)
      if n == nil then return nil, err, code end
      if type(n) ~= "number" then
        release(self, sock)
        return bad_reply(self, "UNLINK", n)
      end
    end
  until cursor == "0"
  release(self, sock)
  return true
end

-- many({ key, ... }) -> { [i] = bytes } for the keys found: one MGET.
function Store:many(keys)
  local n, prefix = #keys, self.prefix
  local args = { "MGET" }
  for i = 1, n do args[i + 1] = prefix .. keys[i] end
  local out = {}
  if n == 0 then return out end
  local r, err, code = call(self, redis_command(args), 1, n)
  if r == nil then return nil, err, code end
  if reply_type(r) ~= 2 or #r ~= n then return bad_reply(self, "MGET", r) end
  for i = 1, n do
    local v = r[i]
    if type(v) == "string" then
      out[i] = v
    elseif v ~= false then
      return bad_reply(self, "MGET", v)
    end
  end
  return out
end

-- Every SET in one pipelined round trip; every reply is read, even after
-- an error reply, so none is left to be taken for a later answer.
function Store:put_many(keys, vals, ms)
  local n, prefix = #keys, self.prefix
  if n == 0 then return true end
  for i = 1, n do
    local _, err, code = too_big(self, vals[i])
    if err then return nil, err, code end
  end
  local cmds = {}
  for i = 1, n do cmds[i] = set_command(prefix .. keys[i], vals[i], ms, false) end
  local sock, err, code = connect(self)
  if not sock then return nil, err, code end
  local replies
  replies, err, code = round_trip(self, sock, concat(cmds), n, 0, 0)
  if replies == nil then return nil, err, code end
  release(self, sock)
  if n == 1 then replies = { replies } end
  for i = 1, n do
    if not is_ok(replies[i]) then return bad_reply(self, "SET", replies[i]) end
  end
  return true
end

-- The lifetime key has left in ms (0: no expiry); nothing for a miss.
function Store:ttl(key)
  local v, err, code = call(self, redis_command("PTTL", self.prefix .. key))
  if v == nil then return nil, err, code end
  if type(v) ~= "number" then return bad_reply(self, "PTTL", v) end
  if v == -2 then return nil end
  if v < 0 then return 0 end
  return v > 0 and v or 1
end

function Store:prune()
  return fail(self, "misuse", "the redis driver has no prune")
end

-- Pooled connections belong to nginx's worker; nothing to close here.
function Store:close() end

-- M.pipeline in two halves, so that a caller can send to several stores
-- before it reads any reply (their servers then work at once). send: the
-- commands written on a connection of the store, as a pending round trip
-- for receive; nil, err, code. Every pending round trip is to be
-- received, or dropped (its connection is closed, never pooled).
function M.send(self, bytes)
  local sock, err, code = connect(self)
  if not sock then return nil, err, code end
  local deadline = now() + self.timeout
  local ok
  ok, err = sock:send(bytes)
  if not ok then return io_fail(self, sock, err) end
  return { sock = sock, deadline = deadline }
end

-- count replies (a list) of a pending round trip, within the deadline set
-- when it was sent; the connection then goes back to the pool.
function M.receive(self, pending, count, depth, elems)
  local sock = pending.sock
  pending.sock = nil
  local reader = redis_reader(depth or 0, elems or 0, MAX_BULK)
  -- reads = 1: even the first read waits only what is left of the deadline
  local v, err, code = read_replies(self, sock, reader, count, pending.deadline, 1)
  reader:close()
  if v == nil then return nil, err, code end
  release(self, sock)
  if count == 1 then v = { v } end
  return v
end

-- count pipelined commands' replies (a list), on one connection of the
-- store; nil, err, code when the connection failed. For
-- cachy.resty.redis_cluster and cachy.resty.redis_sentinel.
function M.pipeline(self, bytes, count, depth, elems)
  local pending, err, code = M.send(self, bytes)
  if not pending then return nil, err, code end
  return M.receive(self, pending, count, depth, elems)
end

function M.drop(pending)
  if pending.sock then pending.sock:close() end
  pending.sock = nil
end
M.bad_reply, M.set_command, M.match_pattern = bad_reply, set_command, match_pattern
M.SCAN_COUNT, M.SCAN_MAX_KEYS = SCAN_COUNT, SCAN_MAX_KEYS

-- ---- for the cluster and sentinel stores -------------------------------------
-- Both route calls to cosocket stores of this module, one per node, and check
-- their fields the same way; these are the parts they share.

-- Codes of a failed connection: the node's address is to be asked again.
M.CONNECTION_CODES = { refused = true, closed = true, timeout = true }

-- The misuse message for the first of `fields` set beside `option` (the
-- parenthesis says why it cannot be), or nil.
function M.conflicting_field(config, fields, option, why)
  for _, f in ipairs(fields) do
    if config[f] ~= nil then
      return "field '" .. f .. "' cannot be set with '" .. option .. "' (" .. why .. ")"
    end
  end
  return nil
end

-- The misuse message for the first item of list, from index `first` on,
-- that is not "host:port" (`what` names the items, counted from 1 at
-- `first`), or nil.
function M.bad_address(list, first, what)
  for i = first, #list do
    if not core.redis_address(list[i]) then
      return format("%s %d must be \"host:port\", got \"%s\"", what, i - first + 1, list[i]:sub(1, 80))
    end
  end
  return nil
end

-- A copy of the store's config for the cosocket store of one node: field
-- `drop` (the cluster or sentinel list) removed, that node's host and port.
function M.node_config(config, drop, host, port)
  local c = {}
  for k, v in pairs(config) do c[k] = v end
  c[drop], c.host, c.port = nil, host, port
  return c
end

-- ---- the dispatcher ----------------------------------------------------------

-- The store a repository uses for a redis store inside nginx with
-- transport "auto" or "cosocket": each call goes through the cosocket
-- store in phases that allow cosockets, else through the blocking C
-- handle `blocking` (core.open's) -- or, with transport "cosocket",
-- fails there. `cosocket` is the store to use there (the memcached
-- driver passes its own, cachy.resty.memcached's); by default this
-- module's redis store.
local Dispatch = {}
Dispatch.__index = Dispatch

function M.dispatcher(name, prefix, config, blocking, cosocket)
  if cosocket == nil and config.cluster then
    cosocket = require("cachy.resty.redis_cluster").new(name, prefix, config)
  elseif cosocket == nil and config.sentinel then
    cosocket = require("cachy.resty.redis_sentinel").new(name, prefix, config)
  end
  return setmetatable({
    cosocket = cosocket or M.new(name, prefix, config),
    blocking = blocking,
    forced = config.transport == "cosocket",
  }, Dispatch)
end

local function wrong_phase(self, phase)
  return nil, self.cosocket.desc .. ": transport 'cosocket' cannot be used in nginx's '"
    .. tostring(phase) .. "' phase, which allows no cosockets", "misuse"
end

for _, method in ipairs({ "get", "put", "add", "forget", "incr", "flush", "many", "put_many",
                         "forget_if", "touch_if" }) do
  Dispatch[method] = function(self, ...)
    local phase = get_phase()
    if COSOCKET_PHASES[phase] then
      local st = self.cosocket
      return st[method](st, ...)
    end
    if self.forced then return wrong_phase(self, phase) end
    local st = self.blocking
    return st[method](st, ...)
  end
end

-- Which transport a call made now would use: "cosocket" or "blocking".
function Dispatch:transport()
  if COSOCKET_PHASES[get_phase()] then return "cosocket" end
  return "blocking"
end

-- (the memcached store cannot tell a key's lifetime on either transport)
function Dispatch:ttl(key)
  local cos = self.cosocket
  if cos.ttl == nil then return self.blocking:ttl(key) end
  if COSOCKET_PHASES[get_phase()] then return cos:ttl(key) end
  if self.forced then return wrong_phase(self, get_phase()) end
  return self.blocking:ttl(key)
end

function Dispatch:prune() return self.cosocket:prune() end
function Dispatch:describe() return self.cosocket:describe() end
function Dispatch:close() return self.blocking:close() end

return M
