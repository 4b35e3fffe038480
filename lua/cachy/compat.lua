-- cachy.compat: what differs between Lua 5.1-5.4 and LuaJIT, in one place.
local M = {}

M.unpack = table.unpack or unpack
M.pack = table.pack or function(...) return { n = select("#", ...), ... } end

local math_type = math.type

-- An integer value: the integer subtype on 5.3+, an integral number
-- within +-2^53 elsewhere (what the codec stores as decimal text).
function M.is_integer(v)
  if math_type then return math_type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53
end

-- pcall lets the called function yield on 5.2+ and LuaJIT; PUC Lua 5.1's
-- does not. There, the function runs in a coroutine of its own whose
-- yields are passed on to the caller's coroutine and its resumes back.
-- (Decided by version, not by a probe: inside an nginx request, resuming
-- a coroutine while `require` runs would abort the request.)
if jit or _VERSION ~= "Lua 5.1" then
  M.pcall = pcall
else
  local create, resume, status, yield = coroutine.create, coroutine.resume, coroutine.status, coroutine.yield
  local function relay(co, ok, ...)
    if not ok then return false, ... end
    if status(co) == "dead" then return true, ... end
    return relay(co, resume(co, yield(...)))
  end
  function M.pcall(fn, ...)
    local co = create(fn)
    return relay(co, resume(co, ...))
  end
end

return M
