-- fuzz/seeds.lua: writes the named seed inputs of fuzz/corpus/ and the
-- hostile inputs of fuzz/regress/ (run once each by `make fuzz`).
-- Run from the repository root after `make`: lua5.4 fuzz/seeds.lua
-- Seeds are what the library itself writes (through a capturing store and
-- a file store) plus MessagePack that other writers produce. Only the
-- order of map entries (Lua's table order) differs between runs.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "csrc/?.so;" .. package.cpath
local cachy = require("cachy")

-- The keys of t, sorted: seeds are written in the same order every time.
local function sorted_names(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  table.sort(names)
  return names
end

local function writefile(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function mkdir(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
end

local function nest(n, leaf)
  local v = leaf
  for _ = 1, n do v = { v } end
  return v
end

-- A store that keeps the last bytes it was given.
local last
local function capture_store()
  local data = {}
  return {
    get = function(_, k) return data[k] end,
    put = function(_, k, b) data[k] = b last = b return true end,
    add = function(_, k, b) if data[k] then return false end data[k] = b last = b return true end,
    forget = function(_, k) local had = data[k] ~= nil data[k] = nil return had end,
    increment = function(_, k, n) local v = (tonumber(data[k]) or 0) + n data[k] = tostring(v) return v end,
    flush = function() data = {} return true end,
  }
end

local cache = cachy.new({ stores = { cap = { driver = "capture" } } })
cache:extend("capture", capture_store)

-- ---- decoder seeds ------------------------------------------------------

local values = {
  ["true"] = true, ["false"] = false,
  ["int-zero"] = 0, ["int-neg"] = -1, ["int-max"] = math.maxinteger, ["int-min"] = math.mininteger,
  ["float"] = 1.5, ["float-negzero"] = -0.0, ["float-inf"] = 1 / 0, ["float-neginf"] = -1 / 0,
  ["float-nan"] = 0 / 0, ["float-integral"] = 10.0,
  ["str-empty"] = "", ["str-short"] = "hello", ["str-digits"] = "10", ["str-300"] = ("x"):rep(300),
  ["str-binary"] = "\0\1\255\n",
  ["table-empty"] = {}, ["array"] = { 1, 2, 3 }, ["array-mixed"] = { 1, "two", 3.0, false },
  ["map"] = { a = 1, b = { c = { d = true } } },
  ["map-keys"] = { [true] = 1, [false] = 0, [1.5] = "f", [{ 1 }] = "table key", ["1"] = "s", [1] = "i" },
  ["mixed"] = { 1, 2, x = 3 }, ["sparse"] = { [1] = 1, [1000000] = 2 },
  ["array-20"] = {}, ["map-20"] = {},
  ["nest-100"] = nest(99, "leaf"),
}
for i = 1, 20 do values["array-20"][i] = i * 1000 values["map-20"]["k" .. i] = { i } end

local decode_dir = "fuzz/corpus/decode"
mkdir(decode_dir)
for _, name in ipairs(sorted_names(values)) do
  last = nil
  assert(cache:put("k", values[name]))
  writefile(decode_dir .. "/value-" .. name, assert(last))
end

-- Decorator results: a tuple, nils kept by position.
local tuples = {
  ["none"] = function() end,
  ["nil"] = function() return nil end,
  ["three"] = function() return 1, nil, { a = "b" } end,
  ["strings"] = function() return "x", "y" end,
}
for _, name in ipairs(sorted_names(tuples)) do
  last = nil
  cache(tuples[name], { key = name })()
  writefile(decode_dir .. "/tuple-" .. name, assert(last))
end

-- What other MessagePack writers produce.
local foreign = {
  ["nil"] = "\xc0",
  ["float32"] = "\xca\x3f\xc0\x00\x00",
  ["uint64-big"] = "\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
  ["int8"] = "\xd0\x80", ["int16"] = "\xd1\x80\x00", ["int32"] = "\xd2\x80\x00\x00\x00",
  ["uint8"] = "\xcc\xff", ["uint16"] = "\xcd\xff\xff", ["uint32"] = "\xce\xff\xff\xff\xff",
  ["fixint"] = "\x05", ["negfixint"] = "\xe0",
  ["bin8"] = "\xc4\x03abc", ["bin16"] = "\xc5\x00\x02ab", ["bin32"] = "\xc6\x00\x00\x00\x01a",
  ["str8"] = "\xd9\x02ab", ["str16"] = "\xda\x00\x01a", ["str32"] = "\xdb\x00\x00\x00\x01a",
  ["array16"] = "\xdc\x00\x02\x01\x02", ["array32"] = "\xdd\x00\x00\x00\x01\xc3",
  ["map16"] = "\xde\x00\x01\xa1k\x01", ["map32"] = "\xdf\x00\x00\x00\x01\x01\x02",
  ["ext-fix1"] = "\xd4\x01\x00", ["ext8"] = "\xc7\x01\x05\x00", ["timestamp"] = "\xd6\xff\x00\x00\x00\x00",
  ["text-int"] = "42", ["text-neg"] = "-42", ["text-max"] = "9223372036854775807",
}
for _, name in ipairs(sorted_names(foreign)) do
  writefile(decode_dir .. "/foreign-" .. name, foreign[name])
end

-- ---- hostile inputs: must fail at once, whatever their size -------------

local hostile = {
  ["array32-claims-4g"] = "\xdd\xff\xff\xff\xff",
  ["map32-claims-4g"] = "\xdf\xff\xff\xff\xff",
  ["str32-claims-4g"] = "\xdb\xff\xff\xff\xff",
  ["bin32-claims-4g"] = "\xc6\xff\xff\xff\xff",
  ["ext32-claims-4g"] = "\xc9\xff\xff\xff\xff\x01",
  ["ext32-claims-2g"] = "\xc9\x7f\xff\xff\xff\x01",
  ["array16-claims-64k"] = "\xdc\xff\xff",
  ["nested-100000-arrays"] = ("\x91"):rep(100000) .. "\xc0",
  ["nested-100000-maps"] = ("\x81\x01"):rep(100000) .. "\xc0",
  ["nested-101-arrays"] = ("\x91"):rep(101) .. "\xc0",
  ["nil-key"] = "\x81\xc0\x01",
  ["nan-key"] = "\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01",
  ["tuple-claims-4g"] = "\xdd\xff\xff\xff\xff\xc0",
  ["never-used-byte"] = "\xc1",
  ["array-of-100000-empty-arrays"] = "\xdd\x00\x01\x86\xa0" .. ("\x90"):rep(100000),
}
mkdir("fuzz/regress/decode")
for _, name in ipairs(sorted_names(hostile)) do
  writefile("fuzz/regress/decode/" .. name, hostile[name])
end

-- ---- file store seeds: entries the store writes, under each control byte --
-- Two control bytes (fuzz/fuzz_file.c): operation and fixes, then where the
-- file is (behind which symbolic link) and how large (padded, sparse).

local dir = sh("mktemp -d /tmp/cachy-seeds.XXXXXX"):gsub("%s+$", "")
local files = cachy.new({ stores = { f = { driver = "file", path = dir } } })
local entries = {
  ["string"] = { "k", "hello" },
  ["integer"] = { "k", 41 },
  ["table"] = { "k", { 1, { a = true } } },
  ["expiry"] = { "k", "until 2100", { year = 2100, month = 1, day = 1, hour = 0 } },
  ["other-key"] = { "kother", "v" },
  ["max-integer"] = { "k", math.maxinteger },
  ["long-key"] = { ("key"):rep(50), "v" },
  -- 28 + 1 + 3 + n + 8 bytes: around the store's first read of 4096 bytes
  ["size-4095"] = { "k", ("x"):rep(4055) },
  ["size-4096"] = { "k", ("x"):rep(4056) },
  ["size-4097"] = { "k", ("x"):rep(4057) },
}
local file_dir = "fuzz/corpus/file"
mkdir(file_dir)
for _, name in ipairs(sorted_names(entries)) do
  local e = entries[name]
  assert(files:flush())
  if e[3] then assert(files:put(e[1], e[2], e[3])) else assert(files:forever(e[1], e[2])) end
  local path = sh("find '" .. dir .. "' -type f"):gsub("%s+$", "")
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("*a")
  f:close()
  -- Operations 0-6 (bits 3-5); 0x07 keeps lengths, checksum and key right.
  for op = 0, 6 do
    writefile(string.format("%s/%s-op%d", file_dir, name, op), string.char(op * 8 + 7, 0) .. bytes)
  end
  writefile(string.format("%s/%s-raw", file_dir, name), "\0\0" .. bytes)
  if name == "string" then
    for op = 0, 6 do
      -- Behind a link at the entry's name, the bucket, the top directory.
      for link = 1, 3 do
        writefile(string.format("%s/%s-link%d-op%d", file_dir, name, link, op),
          string.char(op * 8 + 7, link) .. bytes)
      end
      -- Extended by 1 GB; declaring 64 GB and as long; half of it padded back.
      writefile(string.format("%s/%s-sparse-op%d", file_dir, name, op), string.char(op * 8 + 7, 8) .. bytes)
      writefile(string.format("%s/%s-declares-64g-op%d", file_dir, name, op),
        string.char(op * 8 + 6, 12) .. bytes)
      writefile(string.format("%s/%s-truncated-padded-op%d", file_dir, name, op),
        string.char(op * 8 + 6, 4) .. bytes:sub(1, #bytes - 12))
    end
  end
end
writefile(file_dir .. "/foreign-text", "\0\0not a cache entry")

-- Headers whose lengths claim far more than the file holds.
mkdir("fuzz/regress/file")
local function header(klen, plen)
  return "cachy\0\1\0" .. string.pack("<i8I4I8", 0, klen, plen)
end
for op = 0, 6 do
  writefile(string.format("fuzz/regress/file/lengths-claim-16e18-op%d", op),
    string.char(op * 8, 0) .. header(0xffffffff, -1 & 0xffffffffffffffff) .. "k" .. ("\0"):rep(8))
  writefile(string.format("fuzz/regress/file/payload-claims-4g-op%d", op),
    string.char(op * 8 + 4, 0) .. header(1, 0xffffffff) .. "k" .. ("\0"):rep(8))
  -- A header that declares exactly the file's size, 1 GB and 64 GB of it
  -- sparse: judged by the header before anything more is read.
  writefile(string.format("fuzz/regress/file/sparse-1g-op%d", op),
    string.char(op * 8 + 6, 8) .. header(1, 0) .. "k" .. ("\0"):rep(8))
  writefile(string.format("fuzz/regress/file/declares-64g-op%d", op),
    string.char(op * 8 + 4, 12) .. header(1, 0) .. "k" .. ("\0"):rep(8))
  for link = 1, 3 do
    writefile(string.format("fuzz/regress/file/link%d-declares-64g-op%d", link, op),
      string.char(op * 8 + 4, 12 + link) .. header(1, 0) .. "k" .. ("\0"):rep(8))
  end
end
files:close()
os.execute("rm -rf '" .. dir .. "'")

-- ---- Redis replies: records as fuzz_redis_reply.c reads them --------------

local function rec(s)
  assert(#s < 255)
  return string.char(#s) .. s
end
local IDLE = "\1"          -- the idle check finds nothing pending
local redis = {
  ["get-hit"] = "\0" .. "\0" .. IDLE .. rec("$5\r\nhello\r\n"),
  ["get-miss"] = "\0" .. "\0" .. IDLE .. rec("$-1\r\n"),
  ["get-error"] = "\0" .. "\0" .. IDLE .. rec("-ERR wrong kind\r\n"),
  ["get-two-reads"] = "\0" .. "\0" .. IDLE .. rec("$5\r\nhe") .. rec("llo\r\n"),
  ["get-closed"] = "\0" .. "\0" .. IDLE .. "\0",
  ["get-timeout"] = "\0" .. "\0" .. IDLE .. "\255",
  ["get-idle-closed"] = "\0" .. "\0" .. "\0" .. rec("$1\r\nx\r\n"),
  ["put"] = "\0" .. "\1" .. IDLE .. rec("+OK\r\n"),
  ["put-ttl"] = "\0" .. "\21" .. IDLE .. rec("+OK\r\n"),
  ["add-stored"] = "\0" .. "\2" .. IDLE .. rec("+OK\r\n"),
  ["add-present"] = "\0" .. "\2" .. IDLE .. rec("$-1\r\n"),
  ["forget"] = "\0" .. "\3" .. IDLE .. rec(":1\r\n"),
  ["incr"] = "\0" .. "\4" .. IDLE .. rec(":42\r\n"),
  ["decr-not-int"] = "\0" .. "\14" .. IDLE .. rec("-ERR value is not an integer or out of range\r\n"),
  ["incr-overflow"] = "\0" .. "\24" .. IDLE .. rec("-ERR increment or decrement would overflow\r\n"),
  ["flush-prefix"] = "\0" .. "\5" .. IDLE .. rec("*2\r\n$1\r\n0\r\n*2\r\n$5\r\napp:1\r\n$5\r\napp:2\r\n")
    .. IDLE .. rec(":2\r\n"),
  ["flush-prefix-two-rounds"] = "\0" .. "\5" .. IDLE .. rec("*2\r\n$2\r\n17\r\n*1\r\n$5\r\napp:1\r\n")
    .. IDLE .. rec(":1\r\n") .. IDLE .. rec("*2\r\n$1\r\n0\r\n*0\r\n"),
  ["flush-all"] = "\0" .. "\6" .. IDLE .. rec("+OK\r\n"),
  ["many"] = "\0" .. "\7" .. IDLE .. rec("*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n"),
  ["put-many"] = "\0" .. "\8" .. IDLE .. rec("+OK\r\n+OK\r\n"),
  ["put-many-error"] = "\0" .. "\8" .. IDLE .. rec("-OOM command not allowed\r\n+OK\r\n"),
  ["auth-select"] = "\3" .. rec("+OK\r\n+OK\r\n") .. "\0" .. IDLE .. rec("$1\r\nv\r\n"),
  ["auth-refused"] = "\1" .. rec("-WRONGPASS invalid username-password pair\r\n"),
  ["connect-refused"] = "\4",
  ["reopen"] = "\0" .. "\9" .. "\0" .. IDLE .. rec("$1\r\nv\r\n"),
  ["sequence"] = "\0" .. "\1" .. IDLE .. rec("+OK\r\n") .. "\0" .. IDLE .. rec("$5\r\nvalue\r\n")
    .. "\4" .. IDLE .. rec(":1\r\n") .. "\3" .. IDLE .. rec(":1\r\n"),
}
mkdir("fuzz/corpus/redis_reply")
for _, name in ipairs(sorted_names(redis)) do
  writefile("fuzz/corpus/redis_reply/" .. name, redis[name])
end

-- ---- memcached: keys, counters, lifetimes (fuzz_memcached_key.c) ----------

local function klen(k)
  if #k < 200 then return string.char(#k) .. k end
  local units = (#k - 200 + 15) // 16
  return string.char(200 + units) .. k .. ("x"):rep(200 + 16 * units - #k)
end
local function be64(v) return string.pack(">i8", v) end
local hex32 = ("0123456789abcdef"):rep(2)
local memcached = {
  ["keys-plain"] = "\0" .. klen("user:1") .. klen("user:2"),
  ["keys-odd"] = "\0" .. klen("with space") .. klen("nul\0byte") .. klen("ключ") .. klen("tab\tkey"),
  ["keys-long"] = "\0" .. klen(("a"):rep(250)) .. klen(("a"):rep(251)) .. klen(("b"):rep(400)),
  ["keys-look-hashed"] = "\0" .. klen("head~h" .. hex32) .. klen("head~h" .. hex32:upper()),
  ["keys-empty"] = "\0" .. klen("") .. klen("x"),
  ["counter"] = "\128" .. "42",
  ["counter-negative"] = "\128" .. "-5",
  ["counter-padded"] = "\128" .. "9 ",
  ["counter-wrapped"] = "\128" .. "18446744073709551615",
  ["counter-min-wrapped"] = "\128" .. "9223372036854775808",
  ["counter-leading-zero"] = "\128" .. "007",
  ["counter-minus-zero"] = "\128" .. "-0",
  ["counter-text"] = "\128" .. "\x93\x01\x02\x03",
  ["expiry-none"] = "\192" .. be64(0),
  ["expiry-1.5s"] = "\192" .. be64(1500),
  ["expiry-30d"] = "\192" .. be64(2592000 * 1000),
  ["expiry-31d"] = "\192" .. be64(2678400 * 1000),
  ["expiry-huge"] = "\192" .. be64(1 << 50),
  ["expiry-negative"] = "\192" .. be64(-1),
}
mkdir("fuzz/corpus/memcached_key")
for _, name in ipairs(sorted_names(memcached)) do
  writefile("fuzz/corpus/memcached_key/" .. name, memcached[name])
end
