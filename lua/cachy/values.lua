-- cachy.values: what the library accepts as keys, lifetimes and values,
-- and how a value becomes bytes and back through a store's serializer.
-- Misuse raises "bad argument #N to 'method' (...)" at the caller's line.
local core = require("cachy.core")
local compat = require("cachy.compat")

local pcall, is_integer = compat.pcall, compat.is_integer
local encode, decode, parse_int, quote_key = core.encode, core.decode, core.parse_int, core.quote_key
local ttl_of, ceil = core.ttl, math.ceil
local envelope_open = core.envelope_open
local byte = string.byte

local M = {}

-- cachy.jit on LuaJIT (its FFI paths, which the trace compiler compiles),
-- else nil. There the common shapes are decoded in Lua, where the trace
-- goes on.
M.jit = rawget(_G, "jit") and pcall(require, "ffi") and require("cachy.jit") or nil
if M.jit then decode = M.jit.decode end

-- Raises at `level` above the function calling this one (1: its caller).
function M.argerror(n, method, msg, level)
  error("bad argument #" .. n .. " to '" .. method .. "' (" .. msg .. ")", level + 2)
end
local argerror = M.argerror

-- The type of argument i of n given, as Lua's messages name it.
function M.typename(v, i, n)
  if v == nil and i > n then return "no value" end
  return type(v)
end

-- A key (argument n of method) as a string; raises for anything else.
function M.key(key, n, method, given, level)
  local t = type(key)
  if t == "string" then
    if key ~= "" then return key end
    argerror(n, method, "key must not be empty", level + 1)
  elseif t == "number" then
    return tostring(key)
  end
  argerror(n, method, "key must be a non-empty string or a number, got "
    .. M.typename(key, n, given or n), level + 1)
end

-- A lifetime argument: milliseconds (0 = forever), or false when it is
-- already over; nil uses default_ms.
function M.ttl(v, default_ms, n, method, level)
  -- the common case, minutes well inside the range, as core.ttl computes
  -- it (ceil of minutes * 60000), without a call into C
  if type(v) == "number" and v > 0 and v < 1e12 then return ceil(v * 60000) end
  local ms, why = ttl_of(v, default_ms)
  if ms == nil then argerror(n, method, why, level + 1) end
  return ms
end

-- The bytes of value (not nil) for repository r, or nil, why,
-- "unstorable" when it cannot be stored (MessagePack is the check of what
-- can be stored, whatever the serializer, and a built-in serializer's
-- `encode` refuses what its format cannot carry); a user serializer's
-- failure returns nil, err, "corrupt".
function M.try_encode(r, value, root)
  local bytes, why = encode(value, root or "value")
  if bytes == nil then return nil, why, "unstorable" end
  r:_store()      -- the serializer is looked up with the driver
  local ser = r._base._serializer
  if ser == nil or is_integer(value) then return bytes end
  if ser.encode then
    local text, why2 = ser.encode(value, root or "value")
    if text == nil then return nil, why2, "unstorable" end
    return text
  end
  local ok, text = pcall(ser.serialize, value)
  if not ok or type(text) ~= "string" then
    return nil, r:_describe() .. ": serializer '" .. r._serializer_name .. "' failed: "
      .. (ok and "it did not return a string" or tostring(text)), "corrupt"
  end
  return text
end

-- The same, raising as argument n of method when value cannot be stored.
function M.encode(r, value, n, method, root, level)
  if value == nil then
    argerror(n, method, "nil cannot be stored; use forget to remove a key", level + 1)
  end
  local bytes, why, code = M.try_encode(r, value, root)
  if code == "unstorable" then argerror(n, method, why, level + 1) end
  return bytes, why, code
end

-- How much longer than its window (visible lifetime, then stale_if_error)
-- a store keeps an item in an envelope: the envelope says what is seen,
-- and stores whose clocks tick in whole seconds (memcached) would drop it
-- up to a second early.
M.KEEP_MS = 1000

-- What a plain read of the bytes under a key sees. An item kept for stale
-- serving is wrapped in an envelope (csrc/envelope.h), which begins with
-- the byte 0xC1: then its serializer's bytes while it is visible, false
-- once it is not (or for a cached nil), nil, why when it is malformed.
-- Other bytes are the serializer's, as they are.
function M.live(bytes)
  if byte(bytes, 1) ~= 0xC1 then return bytes end
  local kind, why, visible, inner = envelope_open(bytes)
  if not kind then return nil, why end
  if kind == "n" or visible <= 0 then return false end
  return inner
end

local function corrupt(r, key, why)
  return nil, r:_describe() .. ": value of key '" .. quote_key(key) .. "' cannot be decoded: "
    .. tostring(why), "corrupt"
end
M.corrupt = corrupt

-- The value held in bytes read for key: true, value; or nil, err, code.
function M.decode(r, key, bytes)
  local ser = r._base._serializer
  if ser == nil then
    local ok, v = decode(bytes)
    if ok then return true, v end
    return corrupt(r, key, v)
  end
  local iv = parse_int(bytes)
  if iv then return true, iv end
  local ok, v = pcall(ser.unserialize, bytes)
  if ok then return true, v end
  return corrupt(r, key, v or "unserialize failed")
end

return M
