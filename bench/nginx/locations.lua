-- bench/nginx/locations.lua: the locations bench/nginx/run times with wrk,
-- in one nginx worker (bench/nginx/nginx.conf). Each request does one
-- Redis or Memcached round trip, over 100 keys in turn, with a 100-byte
-- value:
--
--   /cachy/get, /cachy/put   through cachy: a redis store, transport
--                            "cosocket" (nginx's pool, 64 connections)
--   /base/get, /base/put     by hand: RESP formatted and parsed in Lua over
--                            ngx.socket.tcp, the connection back to the same
--                            kind of pool with setkeepalive
--   /cachy/mc_get, /cachy/mc_put, /base/mc_get, /base/mc_put: the same
--                            with a memcached store and, by hand,
--                            memcached's binary protocol (the one cachy
--                            speaks): GET, and SET with a lifetime
--
-- Both answer the value read (get) or "ok" (put), so the HTTP side of the
-- two is the same; /setup writes every key both ways and checks they read
-- back.
local M = {}

local NKEYS, VLEN = 100, 100
local POOL_SIZE, KEEPALIVE_MS, TIMEOUT_MS = 64, 60000, 1000
local TTL_MINUTES = 10

local VALUE = {}
for i = 1, VLEN do VALUE[i] = string.char(97 + (i - 1) % 26) end
VALUE = table.concat(VALUE)
M.VALUE = VALUE

local cache, port, base_opts, mc_port, mc_opts
local ckeys, bkeys = {}, {}
for i = 1, NKEYS do ckeys[i] = "k" .. i; bkeys[i] = "b:k" .. i end
local turn = 0

-- init_by_lua: the manager is made once, before the worker forks, as an
-- application would.
function M.init(redis_port, memcached_port)
  port, mc_port = redis_port, memcached_port
  cache = require("cachy").new({
    default = "main",
    stores = { main = { driver = "redis", port = port, prefix = "c:", transport = "cosocket",
                        pool_size = POOL_SIZE, keepalive = KEEPALIVE_MS / 1000 },
               mc = { driver = "memcached", servers = { "127.0.0.1:" .. mc_port }, prefix = "c:",
                      transport = "cosocket", pool_size = POOL_SIZE, keepalive = KEEPALIVE_MS / 1000 } },
  })
  base_opts = { pool = "bench:base", pool_size = POOL_SIZE }
  mc_opts = { pool = "bench:base:mc", pool_size = POOL_SIZE }
end

local function next_key()
  turn = turn % NKEYS + 1
  return turn
end

-- ---- the hand-written client -----------------------------------------------

local tcp, concat = ngx.socket.tcp, table.concat

-- A pooled connection to the server at server_port with bytes sent on it.
local function base_send(server_port, opts, bytes)
  local sock = tcp()
  sock:settimeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
  local ok, err = sock:connect("127.0.0.1", server_port, opts)
  if not ok then return nil, err end
  ok, err = sock:send(bytes)
  if not ok then sock:close() return nil, err end
  return sock
end

local function base_call(cmd)
  local sock, err = base_send(port, base_opts, cmd)
  if not sock then return nil, err end
  local line
  line, err = sock:receive("*l")
  if not line then sock:close() return nil, err end
  local kind, v = line:sub(1, 1), nil
  if kind == "$" then
    local n = tonumber(line:sub(2))
    if n >= 0 then
      v, err = sock:receive(n + 2)
      if not v then sock:close() return nil, err end
      v = v:sub(1, n)
    end
  elseif kind == "+" then
    v = line:sub(2)
  else
    sock:close()
    return nil, line
  end
  sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
  return v
end

local function base_get(key)
  return base_call(concat({ "*2\r\n$3\r\nGET\r\n$", #key, "\r\n", key, "\r\n" }))
end

local PX = tostring(TTL_MINUTES * 60000)
local function base_set(key, value)
  return base_call(concat({ "*5\r\n$3\r\nSET\r\n$", #key, "\r\n", key, "\r\n$", #value, "\r\n", value,
                            "\r\n$2\r\nPX\r\n$", #PX, "\r\n", PX, "\r\n" }))
end

-- memcached's binary protocol by hand: a 24-byte header (magic 0x80,
-- opcode, key length, extras length, body length; opaque and CAS zero),
-- extras, key, value; the response's header says the status and the body
-- length, its body is extras, key, value.
local char, byte, floor = string.char, string.byte, math.floor
local ZEROS12 = string.rep("\0", 12)

local function be32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function mc_frame(op, key, extras, value)
  local klen = #key
  return concat({ char(0x80, op, floor(klen / 256), klen % 256, #extras, 0, 0, 0),
                  be32(klen + #extras + #value), ZEROS12, extras, key, value })
end

-- status, value of one request
local function mc_call(req)
  local sock, err = base_send(mc_port, mc_opts, req)
  if not sock then return nil, err end
  local h
  h, err = sock:receive(24)
  if not h then sock:close() return nil, err end
  local b9, b10, b11, b12 = byte(h, 9, 12)
  local blen = ((b9 * 256 + b10) * 256 + b11) * 256 + b12
  local body = ""
  if blen > 0 then
    body, err = sock:receive(blen)
    if not body then sock:close() return nil, err end
  end
  sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
  local k1, k2 = byte(h, 3, 4)
  return byte(h, 7) * 256 + byte(h, 8), body:sub(byte(h, 5) + k1 * 256 + k2 + 1)
end

local function base_mc_get(key)
  local status, v = mc_call(mc_frame(0x00, key, "", ""))
  if status == 0 then return v end
  return nil
end

local MC_EXTRAS = "\0\0\0\0" .. be32(TTL_MINUTES * 60)     -- flags, exptime
local function base_mc_set(key, value)
  return mc_call(mc_frame(0x01, key, MC_EXTRAS, value)) == 0
end

-- ---- the locations ------------------------------------------------------------

-- A get location answers the value read, a put location "ok"; a failure
-- is a 500 (wrk counts it, and the run drops the round).
local function answer(v)
  if v == nil then return ngx.exit(500) end
  ngx.print(v)
end

local function done(ok)
  if not ok then return ngx.exit(500) end
  ngx.print("ok")
end

function M.cachy_get() return answer(cache:get(ckeys[next_key()])) end
function M.base_get() return answer(base_get(bkeys[next_key()])) end
function M.cachy_put() return done(cache:put(ckeys[next_key()], VALUE, TTL_MINUTES)) end
function M.base_put() return done(base_set(bkeys[next_key()], VALUE) == "OK") end

local mc
function M.cachy_mc_get() return answer(mc:get(ckeys[next_key()])) end
function M.base_mc_get() return answer(base_mc_get(bkeys[next_key()])) end
function M.cachy_mc_put() return done(mc:put(ckeys[next_key()], VALUE, TTL_MINUTES)) end
function M.base_mc_put() return done(base_mc_set(bkeys[next_key()], VALUE)) end

-- Every key written both ways, on both servers; each read back both ways.
function M.setup()
  mc = cache:store("mc")
  for i = 1, NKEYS do
    assert(cache:put(ckeys[i], VALUE, TTL_MINUTES))
    assert(base_set(bkeys[i], VALUE) == "OK")
    assert(mc:put(ckeys[i], VALUE, TTL_MINUTES))
    assert(base_mc_set(bkeys[i], VALUE))
  end
  for i = 1, NKEYS do
    assert(cache:get(ckeys[i]) == VALUE, "cachy reads back another value")
    assert(base_get(bkeys[i]) == VALUE, "the baseline reads back another value")
    assert(mc:get(ckeys[i]) == VALUE, "cachy reads back another value from memcached")
    assert(base_mc_get(bkeys[i]) == VALUE, "the baseline reads back another value from memcached")
  end
  ngx.print("ok")
end

-- /cpu?n=N (a diagnostic, not a row): N calls of each side's get and put
-- inside this one request, in alternating batches, timed in the worker's
-- CPU time (os.clock): what each client costs the worker per call, the
-- wait for Redis left out; a third side is cachy's cosocket store alone
-- (cachy.resty.redis or .memcached, bytes in and out, no manager, no
-- codec). Answers
-- "op cachy US base US cosocket-store US" lines, microseconds per call.
local raw, raw_mc, RAW_VALUE
function M.cpu()
  if not raw then
    raw = require("cachy.resty.redis").new("raw", "r:", { port = port, pool_size = POOL_SIZE })
    raw_mc = require("cachy.resty.memcached").new("raw", "r:", { servers = { "127.0.0.1:" .. mc_port },
                                                                 pool_size = POOL_SIZE })
    RAW_VALUE = VALUE
    for i = 1, NKEYS do
      assert(raw:put(ckeys[i], RAW_VALUE, TTL_MINUTES * 60000))
      assert(raw_mc:put(ckeys[i], RAW_VALUE, TTL_MINUTES * 60000))
    end
  end
  local n = tonumber(ngx.var.arg_n) or 2000
  local clock = os.clock
  local sides = {
    get = { function(k) return cache:get(ckeys[k]) end, function(k) return base_get(bkeys[k]) end,
            function(k) return raw:get(ckeys[k]) end },
    put = { function(k) return cache:put(ckeys[k], VALUE, TTL_MINUTES) end,
            function(k) return base_set(bkeys[k], VALUE) end,
            function(k) return raw:put(ckeys[k], RAW_VALUE, TTL_MINUTES * 60000) end },
    mc_get = { function(k) return mc:get(ckeys[k]) end, function(k) return base_mc_get(bkeys[k]) end,
               function(k) return raw_mc:get(ckeys[k]) end },
    mc_put = { function(k) return mc:put(ckeys[k], VALUE, TTL_MINUTES) end,
               function(k) return base_mc_set(bkeys[k], VALUE) end,
               function(k) return raw_mc:put(ckeys[k], RAW_VALUE, TTL_MINUTES * 60000) end },
  }
  for _, op in ipairs({ "get", "put", "mc_get", "mc_put" }) do
    local t = { 0, 0, 0 }
    for round = 1, 10 do
      for j = 0, 2 do
        local side = (round + j) % 3 + 1
        local f = sides[op][side]
        local t0 = clock()
        for i = 1, n / 10 do f(i % NKEYS + 1) end
        t[side] = t[side] + clock() - t0
      end
    end
    ngx.say(string.format("%s cachy %.2f base %.2f cosocket-store %.2f", op, t[1] / n * 1e6,
                          t[2] / n * 1e6, t[3] / n * 1e6))
  end
end

return M
