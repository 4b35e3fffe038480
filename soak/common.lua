-- soak/common.lua: what the soak and the load test share: module paths,
-- keys and values drawn from a seeded generator, a strict comparison of
-- values, the store configurations (starting redis-server and memcached
-- through spec/helpers/servers.lua), and the process's resident memory.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;soak/?.lua;" .. package.path
package.cpath = (os.getenv("CACHY_CPATH") or "csrc/?.so") .. ";" .. package.cpath

local M = {}

local maxinteger, mininteger = math.maxinteger, math.mininteger

-- ---- random keys and values ------------------------------------------------

-- rng: a function like math.random (an independent generator per process).
local function random_bytes(rng, n, alphabet)
  local t = {}
  for i = 1, n do
    if alphabet then
      local k = rng(#alphabet)
      t[i] = alphabet:sub(k, k)
    else
      t[i] = string.char(rng(0, 255))
    end
  end
  return table.concat(t)
end
M.random_bytes = random_bytes

local PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:"

-- n distinct keys of every kind SPEC section 4 allows: plain, with spaces
-- and control bytes, NUL, UTF-8, longer than memcached's 250 bytes.
function M.keys(rng, n, tag)
  local keys, seen = {}, {}
  local i = 0
  while #keys < n do
    i = i + 1
    local kind, k = rng(10), nil
    if kind <= 5 then
      k = tag .. ":" .. i .. ":" .. random_bytes(rng, rng(1, 12), PLAIN)
    elseif kind == 6 then
      k = tag .. " key with spaces\t" .. i .. "\n"
    elseif kind == 7 then
      k = tag .. "\0" .. random_bytes(rng, rng(1, 16))
    elseif kind == 8 then
      k = tag .. ":ключ:" .. i .. ":鍵"
    elseif kind == 9 then
      k = tag .. ":" .. i .. ":" .. random_bytes(rng, rng(240, 400), PLAIN)
    else
      k = tag .. ":" .. i
    end
    if not seen[k] then
      seen[k] = true
      keys[#keys + 1] = k
    end
  end
  return keys
end

local function random_int(rng)
  local r = rng(100)
  if r <= 60 then return rng(-1000, 1000) end
  if r <= 80 then return rng(-2147483648, 2147483647) end
  if r <= 90 then return maxinteger - rng(0, 10) end
  return mininteger + rng(0, 10)
end
M.random_int = random_int

local function random_float(rng)
  local r = rng(20)
  if r == 1 then return 1 / 0 end
  if r == 2 then return -1 / 0 end
  if r == 3 then return 0 / 0 end
  if r == 4 then return -0.0 end
  if r == 5 then return rng(-1000, 1000) + 0.0 end
  return (rng() - 0.5) * 10 ^ rng(-20, 20)
end

local function random_string(rng)
  local r = rng(20)
  if r <= 12 then return random_bytes(rng, rng(0, 24), PLAIN) end
  if r <= 14 then return tostring(rng(-1000, 1000)) end   -- digits stay a string
  if r <= 17 then return random_bytes(rng, rng(0, 64)) end
  return random_bytes(rng, rng(100, 3000))
end

local function random_key(rng)
  local r = rng(4)
  if r == 1 then return random_string(rng) end
  if r == 2 then return random_int(rng) end
  if r == 3 then return rng(2) == 1 end
  local f = random_float(rng)
  if f ~= f then return 0.5 end          -- NaN cannot be a key
  return f
end

-- A storable value: scalars of every type and subtype, tables nested up
-- to `depth` levels (arrays, maps, mixed), at most about 40 scalars and
-- 12 KB in all, so that the run's memory is not ruled by rare giants.
local function value(rng, depth, budget)
  budget.nodes = budget.nodes - 1
  local r = rng(100)
  if r <= 25 then return random_int(rng) end
  if r <= 35 then return random_float(rng) end
  if r <= 65 or depth <= 0 or budget.nodes <= 0 then
    local s = random_string(rng)
    if #s > budget.bytes then s = s:sub(1, budget.bytes) end
    budget.bytes = budget.bytes - #s
    return s
  end
  if r <= 72 then return rng(2) == 1 end
  local t, shape = {}, rng(3)
  local n = rng(0, 8)
  if shape == 1 or shape == 3 then
    for i = 1, n do t[i] = value(rng, depth - 1, budget) end
  end
  if shape == 2 or shape == 3 then
    for _ = 1, n do
      t[random_key(rng)] = value(rng, depth - 1, budget)
    end
  end
  return t
end

function M.value(rng, depth)
  return value(rng, depth, { nodes = 40, bytes = 12 * 1024 })
end

-- ---- comparison ------------------------------------------------------------

-- Why got differs from want, strictly (subtypes, NaN, the sign of zero,
-- table contents), or nil when they are the same value: the specs' own.
M.diff = require("helpers.util").strict_diff

function M.copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = M.copy(x) end
  return t
end

-- Would cur + n overflow 64 bits?
function M.overflows(cur, n)
  return (n > 0 and cur > maxinteger - n) or (n < 0 and cur < mininteger - n)
end

-- ---- stores ------------------------------------------------------------------

M.STORES = { "memory", "file", "redis", "memcached" }

-- Is the driver built into this module (redis and memcached are optional)?
function M.has_driver(name)
  return require("cachy.core").driver_fields(name) ~= nil
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end
M.sh = sh

-- The store config for `name`, plus the server object (redis, memcached)
-- that the caller stops. Scratch files go under $CACHY_TMP.
function M.store(name)
  local tmp = os.getenv("CACHY_TMP") or "/tmp"
  if name == "memory" then
    return { driver = "memory", max_items = 10000000, max_bytes = 1024 * 1024 * 1024 }
  elseif name == "file" then
    return { driver = "file", path = sh("mktemp -d " .. tmp .. "/cachy-soak-file.XXXXXX") }
  elseif name == "redis" or name == "memcached" then
    local server = require("helpers.servers").start(name)
    if name == "redis" then
      return { driver = "redis", host = "127.0.0.1", port = server.port }, server
    end
    return { driver = "memcached", servers = { "127.0.0.1:" .. server.port } }, server
  end
  error("unknown store " .. tostring(name))
end

-- Resident set size of this process, in bytes.
function M.rss()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * tonumber(sh("getconf PAGESIZE"))
end

function M.now()
  return require("system").monotime()
end

return M
