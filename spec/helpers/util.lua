-- spec/helpers/util.lua: small helpers the spec files and their worker
-- processes share. Workers run outside busted, so luassert is loaded only
-- by the functions that assert.
local M = {}

local math_type = math.type          -- nil on LuaJIT: no integer subtype there

-- s as one single-quoted shell word.
function M.q(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

-- A shell command's standard output.
function M.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

-- redis-cli --raw against 127.0.0.1:port, each argument one word; its
-- output (and errors) without the last newline.
function M.redis_cli(port, ...)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = M.q(a) end
  return (M.sh(string.format("redis-cli --raw -p %d %s 2>&1", port, table.concat(args, " ")))
    :gsub("\n$", ""))
end

-- Closes the managers a test made (a list), newest first, and empties the
-- list: the after_each of the specs that keep one.
function M.close_managers(managers)
  for i = #managers, 1, -1 do
    managers[i]:close()
    managers[i] = nil
  end
end

-- os.execute's result differs between Lua 5.1/LuaJIT (a status number) and 5.2+.
function M.succeeds(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

function M.readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function M.writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The interpreter that runs busted (lua5.1 ... lua5.4, luajit).
function M.interpreter()
  local i = -1
  while arg and arg[i - 1] do i = i - 1 end
  return arg and arg[i] or (rawget(_G, "jit") and "luajit" or "lua5.4")
end

-- Whether this run takes the slow cases (processes racing, SIGKILL,
-- waits for leases): spec/run runs the suite under Lua 5.4, LuaJIT and
-- the sanitizer build, and these need to run once, on plain Lua 5.4.
function M.runs_slow_cases()
  if rawget(_G, "jit") or _VERSION ~= "Lua 5.4" then return false end
  local core = package.searchpath("cachy.core", package.cpath) or ""
  return not core:find("asan", 1, true)
end

-- Runs the Lua source script in a new process under busted's interpreter,
-- with this build of cachy.core as arg[1] (the script loads it with
-- package.loadlib), and returns what it wrote; redirect is appended to the
-- command (e.g. "2>&1 >/dev/null" for its standard error).
function M.run_script(script, redirect)
  local core = assert(package.searchpath("cachy.core", package.cpath))
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(script)
  f:close()
  local p = assert(io.popen(string.format("%s %s %s %s", M.interpreter(), path, core, redirect or "")))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

-- The start of a shell command that runs the Lua script at path under the
-- interpreter that runs busted, with its module paths (the worker scripts
-- set them from CACHY_WORKER_PATH and CACHY_WORKER_CPATH).
function M.worker_command(path)
  return string.format("CACHY_WORKER_PATH=%s CACHY_WORKER_CPATH=%s %s %s",
    M.q(package.path), M.q(package.cpath), M.q(M.interpreter()), M.q(path))
end

-- In a worker process: reports err on standard output and exits with status 1.
function M.fail(err)
  io.write("error: ", tostring(err), "\n")
  os.exit(1)
end

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
  local assert = require("luassert")
  assert.are.same(expected, actual)
  local d = strict_diff(expected, actual, "value")
  assert.is_nil(d, d)
end

return M
