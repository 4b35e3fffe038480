-- bench/nginx/locations.lua: the locations bench/nginx/run times with wrk,
-- in one nginx worker (bench/nginx/nginx.conf). Each request does one
-- Redis round trip, over 100 keys in turn, with a 100-byte value:
--
--   /cachy/get, /cachy/put   through cachy: a redis store, transport
--                            "cosocket" (nginx's pool, 64 connections)
--   /base/get, /base/put     by hand: RESP formatted and parsed in Lua over
--                            ngx.socket.tcp, the connection back to the same
--                            kind of pool with setkeepalive
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

local cache, port, base_opts
local ckeys, bkeys = {}, {}
for i = 1, NKEYS do ckeys[i] = "k" .. i; bkeys[i] = "b:k" .. i end
local turn = 0

-- init_by_lua: the manager is made once, before the worker forks, as an
-- application would.
function M.init(redis_port)
  port = redis_port
  cache = require("cachy").new({
    stores = { main = { driver = "redis", port = port, prefix = "c:", transport = "cosocket",
                        pool_size = POOL_SIZE, keepalive = KEEPALIVE_MS / 1000 } },
  })
  base_opts = { pool = "bench:base", pool_size = POOL_SIZE }
end

local function next_key()
  turn = turn % NKEYS + 1
  return turn
end

-- ---- the hand-written client -----------------------------------------------

local tcp, concat = ngx.socket.tcp, table.concat

local function base_call(cmd)
  local sock = tcp()
  sock:settimeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
  local ok, err = sock:connect("127.0.0.1", port, base_opts)
  if not ok then return nil, err end
  ok, err = sock:send(cmd)
  if not ok then sock:close() return nil, err end
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

-- ---- the locations ------------------------------------------------------------

function M.cachy_get()
  local v, err = cache:get(ckeys[next_key()])
  if v == nil then return ngx.exit(500) end
  ngx.print(v)
end

function M.base_get()
  local v = base_get(bkeys[next_key()])
  if v == nil then return ngx.exit(500) end
  ngx.print(v)
end

function M.cachy_put()
  if not cache:put(ckeys[next_key()], VALUE, TTL_MINUTES) then return ngx.exit(500) end
  ngx.print("ok")
end

function M.base_put()
  if base_set(bkeys[next_key()], VALUE) ~= "OK" then return ngx.exit(500) end
  ngx.print("ok")
end

-- Every key written both ways; each read back both ways.
function M.setup()
  for i = 1, NKEYS do
    assert(cache:put(ckeys[i], VALUE, TTL_MINUTES))
    assert(base_set(bkeys[i], VALUE) == "OK")
  end
  for i = 1, NKEYS do
    assert(cache:get(ckeys[i]) == VALUE, "cachy reads back another value")
    assert(base_get(bkeys[i]) == VALUE, "the baseline reads back another value")
  end
  ngx.print("ok")
end

-- /cpu?n=N (a diagnostic, not a row): N calls of each side's get and put
-- inside this one request, in alternating batches, timed in the worker's
-- CPU time (os.clock): what each client costs the worker per call, the
-- wait for Redis left out; a third side is cachy's cosocket store alone
-- (cachy.resty.redis, bytes in and out, no manager, no codec). Answers
-- "op cachy US base US cosocket-store US" lines, microseconds per call.
local raw, RAW_VALUE
function M.cpu()
  if not raw then
    raw = require("cachy.resty.redis").new("raw", "r:", { port = port, pool_size = POOL_SIZE })
    RAW_VALUE = VALUE
    for i = 1, NKEYS do assert(raw:put(ckeys[i], RAW_VALUE, TTL_MINUTES * 60000)) end
  end
  local n = tonumber(ngx.var.arg_n) or 2000
  local clock = os.clock
  local sides = {
    get = { function(k) return cache:get(ckeys[k]) end, function(k) return base_get(bkeys[k]) end,
            function(k) return raw:get(ckeys[k]) end },
    put = { function(k) return cache:put(ckeys[k], VALUE, TTL_MINUTES) end,
            function(k) return base_set(bkeys[k], VALUE) end,
            function(k) return raw:put(ckeys[k], RAW_VALUE, TTL_MINUTES * 60000) end },
  }
  for _, op in ipairs({ "get", "put" }) do
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
