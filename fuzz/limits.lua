-- fuzz/limits.lua: the decoder's limits seen from the public API. Each
-- input of fuzz/regress/decode is planted in a store as the bytes of a key
-- and of a decorator entry; reading it must give `nil, err` with the exact
-- cause (or the value, for the one valid input), quickly, whatever length
-- the bytes declare. Run from the repository root after `make`:
--   lua5.4 fuzz/limits.lua
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "csrc/?.so;" .. package.cpath
local cachy = require("cachy")

-- Slower than this is a decoder that does work in proportion to what the
-- bytes claim, not to what they hold (measured: well under 10 ms each).
local LIMIT_SECONDS = 0.25

-- name = { cause through get, cause through the decorator }; true: valid.
local NOT_TUPLE = "not a MessagePack array of results"
local expected = {
  ["array-of-100000-empty-arrays"] = { true, true },
  ["array16-claims-64k"] = { "declared length 65535 exceeds the data", "declared length 65535 exceeds the data" },
  ["array32-claims-4g"] = { "declared length 4294967295 exceeds the data", "declared length 4294967295 exceeds the data" },
  ["map32-claims-4g"] = { "declared length 4294967295 exceeds the data", NOT_TUPLE },
  ["tuple-claims-4g"] = { "declared length 4294967295 exceeds the data", "declared length 4294967295 exceeds the data" },
  ["str32-claims-4g"] = { "truncated MessagePack", NOT_TUPLE },
  ["bin32-claims-4g"] = { "truncated MessagePack", NOT_TUPLE },
  ["ext32-claims-2g"] = { "truncated MessagePack", NOT_TUPLE },
  -- msgpack-c adds the type byte to the length in 32 bits: 0xffffffff + 1
  -- wraps to an empty ext, whose type is then read from the length's last
  -- byte (in bounds). Still refused, before anything is allocated.
  ["ext32-claims-4g"] = { "unsupported MessagePack type (ext -1)", NOT_TUPLE },
  ["nested-100000-arrays"] = { "nested deeper than 100 levels", "nested deeper than 100 levels" },
  ["nested-100000-maps"] = { "nested deeper than 100 levels", NOT_TUPLE },
  -- As a tuple the outer array is the list of results: 100 levels remain.
  ["nested-101-arrays"] = { "nested deeper than 100 levels", true },
  ["nil-key"] = { "nil map key", NOT_TUPLE },
  ["nan-key"] = { "NaN map key", NOT_TUPLE },
  ["never-used-byte"] = { "invalid MessagePack", NOT_TUPLE },
}

local data = {}
local function table_store()
  return {
    get = function(_, k) return data[k] end,
    put = function(_, k, b) data[k] = b return true end,
    add = function(_, k, b) if data[k] then return false end data[k] = b return true end,
    forget = function(_, k) local had = data[k] ~= nil data[k] = nil return had end,
    increment = function(_, k, n) local v = (tonumber(data[k]) or 0) + n data[k] = tostring(v) return v end,
    flush = function() data = {} return true end,
  }
end

local reported = {}
local cache = cachy.new({
  stores = { main = { driver = "luatable" } },
  on_error = function(err) reported[#reported + 1] = err end,
})
cache:extend("luatable", table_store)

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local failures = 0
local function check(ok, fmt, ...)
  if not ok then
    failures = failures + 1
    print("FAIL " .. string.format(fmt, ...))
  end
end

local names = {}
for name in pairs(expected) do names[#names + 1] = name end
table.sort(names)

-- The decorator's entry key: the one key a first call writes.
local calls = 0
local wrapped = cache(function() calls = calls + 1 return "fresh" end, { key = "limits" })
assert(wrapped() == "fresh")
local entry_key = next(data)

for _, name in ipairs(names) do
  local bytes = readfile("fuzz/regress/decode/" .. name)
  local want_get, want_call = expected[name][1], expected[name][2]

  data = { g = bytes }
  local t0 = os.clock()
  local v, err = cache:get("g")
  local get_time = os.clock() - t0
  if want_get == true then
    check(type(v) == "table" and #v == 100000 and next(v[1]) == nil and err == nil,
      "%s: get did not give the 100000 empty tables (%s)", name, tostring(err))
  else
    local msg = "store 'main' (luatable): value of key 'g' cannot be decoded: not a cachy value: " .. want_get
    check(v == nil and err == msg, "%s: get gave %s, %s; want nil, %q", name, tostring(v), tostring(err), msg)
  end
  check(get_time < LIMIT_SECONDS, "%s: get took %.3f s", name, get_time)

  -- As a decorator entry: a corrupt one fails open and reports the cause.
  data = { [entry_key] = bytes }
  reported, calls = {}, 0
  t0 = os.clock()
  local r = wrapped()
  local call_time = os.clock() - t0
  if want_call == true then
    check(calls == 0 and #reported == 0 and r ~= nil, "%s: the decorator did not read its entry", name)
  else
    check(r == "fresh" and calls == 1, "%s: the decorator did not call through", name)
    local cause = reported[1] and reported[1]:match("not a cachy value: (.*)$")
    check(cause == want_call, "%s: the decorator reported %s", name, tostring(reported[1]))
  end
  check(call_time < LIMIT_SECONDS, "%s: the decorator call took %.3f s", name, call_time)
  print(string.format("%-30s get %6.2f ms, decorator %6.2f ms", name, get_time * 1000, call_time * 1000))
end

cache:close()
print(string.format("decoder limits: %d inputs, %d failures", #names, failures))
os.exit(failures == 0 and 0 or 1)
