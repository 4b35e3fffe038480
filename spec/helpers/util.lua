-- spec/helpers/util.lua: small helpers the spec files share.
local assert = require("luassert")

local M = {}

local math_type = math.type          -- nil on LuaJIT: no integer subtype there

-- Every argument, nils included, with the count in n.
function M.pack(...)
  return { n = select("#", ...), ... }
end

-- A function that counts its calls: c.calls, c.fn.
function M.counted(impl)
  local c = { calls = 0 }
  c.fn = function(...)
    c.calls = c.calls + 1
    return impl(...)
  end
  return c
end

-- Why a and b differ, strictly (number subtypes, NaN, sign of zero,
-- metatables), or nil when they are the same value.
local function strict_diff(a, b, path)
  if type(a) ~= type(b) then
    return string.format("%s: expected a %s, got a %s", path, type(a), type(b))
  end
  if type(a) == "number" then
    if math_type and math_type(a) ~= math_type(b) then
      return string.format("%s: expected a %s, got a %s", path, math_type(a), math_type(b))
    end
    if a ~= a then
      return b == b and string.format("%s: expected NaN, got %s", path, tostring(b)) or nil
    end
    if a ~= b then
      return string.format("%s: expected %.17g, got %.17g", path, a, b)
    end
    if a == 0 and (not math_type or math_type(a) == "float") and 1 / a ~= 1 / b then
      return path .. ": the sign of zero was lost"
    end
    return nil
  end
  if type(a) == "table" then
    if getmetatable(b) ~= nil then return path .. ": has a metatable" end
    for k, v in pairs(a) do
      local d = strict_diff(v, rawget(b, k), path .. "[" .. tostring(k) .. "]")
      if d then return d end
    end
    for k in pairs(b) do
      if rawget(a, k) == nil then return path .. ": unexpected key " .. tostring(k) end
    end
    return nil
  end
  if a ~= b then
    return string.format("%s: expected %q, got %q", path, tostring(a), tostring(b))
  end
  return nil
end
M.strict_diff = strict_diff

-- expected and actual are the same value, strictly (see strict_diff).
function M.assert_strict(expected, actual)
  assert.are.same(expected, actual)
  local d = strict_diff(expected, actual, "value")
  assert.is_nil(d, d)
end

return M
