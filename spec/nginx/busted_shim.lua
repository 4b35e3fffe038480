-- spec/nginx/busted_shim.lua: enough of busted for spec/behaviour.lua to
-- run inside an nginx worker, where busted's runner cannot. Installed as
-- package.loaded["busted"] (and a "system" of nginx's clock and sleep as
-- package.loaded["system"]); collect() runs a suite's definition and gives
-- its cases, each runnable on its own (before_each of every enclosing
-- block, outermost first, the case, then after_each innermost first), so
-- spec/nginx/runner.lua can run one per request.
--
--   local shim = require("busted_shim").install()
--   local cases = shim.collect(function() require("behaviour")("redis", opts) end)
--   for _, c in ipairs(cases) do print(c.name, c.pending, c.run()) end
local M = {}

local current            -- the block being defined
local collected          -- the cases of the collect() in progress

local function new_block(name, parent)
  return { name = name, parent = parent, before = {}, after = {}, setup = {}, teardown = {} }
end

local function full_name(block, name)
  local parts = { name }
  while block and block.name do
    table.insert(parts, 1, block.name)
    block = block.parent
  end
  return table.concat(parts, " ")
end

local function need_block(what)
  if not current then error(what .. " outside collect()", 3) end
end

local api = {}

function api.describe(name, fn)
  need_block("describe")
  local parent = current
  current = new_block(name, parent)
  local ok, err = pcall(fn)
  current = parent
  if not ok then error(err, 0) end
end
api.context = api.describe

function api.it(name, fn)
  need_block("it")
  collected[#collected + 1] = { name = full_name(current, name), block = current, fn = fn }
end

function api.pending(name)
  need_block("pending")
  collected[#collected + 1] = { name = full_name(current, name), block = current, pending = "pending" }
end

function api.before_each(fn) need_block("before_each"); table.insert(current.before, fn) end
function api.after_each(fn) need_block("after_each"); table.insert(current.after, fn) end
-- (setup and teardown run around each case: cases run one per request)
function api.setup(fn) need_block("setup"); table.insert(current.setup, fn) end
function api.teardown(fn) need_block("teardown"); table.insert(current.teardown, fn) end
api.lazy_setup, api.strict_setup = api.setup, api.setup
api.lazy_teardown, api.strict_teardown = api.teardown, api.teardown

M.api = api

-- An error value as one line of text (luassert raises tables).
local function text(e)
  local s = tostring(e)
  if type(e) == "table" and e.message then s = tostring(e.message) end
  return (s:gsub("%s*\n%s*", " | "))
end

-- Runs one case: nil when it passed, else why it failed.
local function run_case(c)
  local chain = {}
  local b = c.block
  while b do
    table.insert(chain, 1, b)
    b = b.parent
  end
  local failure
  local function step(fn)
    if failure then return end
    local ok, err = pcall(fn)
    if not ok then failure = text(err) end
  end
  for _, blk in ipairs(chain) do
    for _, fn in ipairs(blk.setup) do step(fn) end
    for _, fn in ipairs(blk.before) do step(fn) end
  end
  step(c.fn)
  -- after_each and teardown run even after a failure; the first failure is reported
  local first = failure
  for i = #chain, 1, -1 do
    for _, fn in ipairs(chain[i].after) do failure = nil; step(fn); first = first or failure end
    for _, fn in ipairs(chain[i].teardown) do failure = nil; step(fn); first = first or failure end
  end
  return first
end

-- The cases defined by define(), in definition order: { name, pending, run }.
function M.collect(define)
  local saved_current, saved_collected = current, collected
  current, collected = new_block(nil, nil), {}
  local ok, err = pcall(define)
  local cases = collected
  current, collected = saved_current, saved_collected
  if not ok then error(err, 0) end
  for _, c in ipairs(cases) do
    local case = c
    c.run = function() return run_case(case) end
  end
  return cases
end

-- nginx's clock and sleep as luasystem's functions (sleep yields).
M.system = {
  sleep = function(s) ngx.sleep(s) end,
  monotime = function() ngx.update_time(); return ngx.now() end,
  gettime = function() ngx.update_time(); return ngx.now() end,
}

function M.install()
  package.loaded["busted"] = api
  package.loaded["system"] = M.system
  return M
end

return M
