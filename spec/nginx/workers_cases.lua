-- spec/nginx/workers_cases.lua: the cases of spec/nginx/workers, inside an
-- nginx with two workers (SPEC section 11: the shdict store shared by the
-- workers, a tiered store kept coherent between them by events).
--
-- A request cannot choose its worker, so each worker runs an agent (a
-- timer chain started in init_worker) that takes tasks addressed to its
-- ngx.worker.id() from the "ctl" zone and writes their results back. A
-- case (run by whichever worker got the request) sends tasks to worker 0
-- and worker 1 and waits for their answers. Every task runs in a timer of
-- its worker, where cosockets work.
local cachy = require("cachy")

local M = { list = {} }

local ctl = ngx.shared.ctl
local TICK = 0.002

local function case(name, fn)
  M.list[#M.list + 1] = { name = name, fn = fn }
end

-- The managers every worker shares from the master (made in init_by_lua).
-- `shared`: the shdict store; `tiered`: memory, shdict, redis with
-- max_stale = 60 s, so only events can make a worker see a change soon.
function M.init(redis_port)
  M.cache = cachy.new({
    default = "shared",
    prefix = "w:",
    stores = {
      shared = { driver = "shdict", dict = "cachy" },
      memory = { driver = "memory" },
      redis = { driver = "redis", port = redis_port },
      tiered = { driver = "tiered", levels = { "memory", "shared", "redis" }, max_stale = 60 },
    },
  })
end

-- ---- what a worker does when asked ------------------------------------------

local actions = {}

-- A task's argument is "a\0b\0..." (split here).
local function split(arg)
  local out = {}
  for part in (arg .. "\0"):gmatch("(.-)%z") do out[#out + 1] = part end
  return out
end

local function now()
  ngx.update_time()
  return ngx.now()
end

-- Waits until the ctl zone's clock mark `name` (set by the case) has passed.
local function start_at(name)
  local t = ctl:get(name)
  while t and now() < t do ngx.sleep(0.001) end
end

function actions.put(arg)
  local a = split(arg)
  assert(M.cache:store(a[1]):put(a[2], a[3], 10))
  return "ok"
end

function actions.get(arg)
  local a = split(arg)
  local v, err = M.cache:store(a[1]):get(a[2])
  if err then error(err, 0) end
  return tostring(v)
end

-- 100 rounds of add on one key each, both workers from the same instant;
-- each win counted in ctl.
function actions.add_race(run)
  start_at("start:" .. run)
  local wins = 0
  for r = 1, 100 do
    local ok, err = M.cache:add("race:" .. run .. ":" .. r, ngx.worker.id(), 1)
    if ok == nil then error(err, 0) end
    if ok then
      wins = wins + 1
      ctl:incr("wins:" .. run .. ":" .. r, 1, 0)
    end
  end
  return tostring(wins)
end

function actions.increments(run)
  start_at("start:" .. run)
  local last
  for _ = 1, 10000 do
    local n, err = M.cache:increment("hits:" .. run)
    if n == nil then error(err, 0) end
    last = n
  end
  return tostring(last)
end

-- Reads the tiered key until it reads `want` ("nil" for a miss), after the
-- other worker marked the start of its write in ctl ("written:" .. run):
-- how long after that start it took, or "timeout". `tags`: read through that tag.
function actions.watch(arg)
  local a = split(arg)
  local run, key, want, tag = a[1], a[2], a[3], a[4]
  local repo = M.cache:store("tiered")
  if tag ~= "" then repo = repo:tags(tag) end
  local limit = now() + 5
  while now() < limit do
    local written = ctl:get("written:" .. run)
    local v, err = repo:get(key)
    if err then error(err, 0) end
    if tostring(v) == want then
      if not written then return "before the write" end
      return string.format("%.3f", now() - written)
    end
    ngx.sleep(0.002)
  end
  return "timeout"
end

-- A change by this worker through the tiered store, its start time in ctl
-- first: a change takes effect before the call returns (a tag flush bumps
-- the version, then deletes what the old one recorded), and another
-- worker may see it meanwhile.
function actions.change(arg)
  local a = split(arg)
  local run, what, key, tag = a[1], a[2], a[3], a[4]
  local repo = M.cache:store("tiered")
  local ok, err
  ctl:set("written:" .. run, now())
  if what == "put" then
    ok, err = repo:put(key, a[5], 10)
  elseif what == "forget" then
    ok, err = repo:forget(key)
  elseif what == "tag_flush" then
    ok, err = repo:tags(tag):flush()
  end
  if not ok then error("change " .. what .. ": " .. tostring(err), 0) end
  return "ok"
end

-- What the worker's memory level holds for key (its own copy).
function actions.l1(key)
  return tostring(M.cache:store("memory"):get(key))
end

-- ---- the agent ---------------------------------------------------------------

local function run_task(premature, seq, action, arg)
  if premature then return end
  local fn = actions[action]
  local ok, result = pcall(fn or error, arg)
  if not fn then ok, result = false, "no action " .. action end
  ctl:set("result:" .. seq, (ok and "ok " or "err ") .. tostring(result), 120)
end

function M.agent()
  local wid = ngx.worker.id()
  local tick
  tick = function(premature)
    if premature then return end
    local task = ctl:get("task:" .. wid)
    if task then
      ctl:delete("task:" .. wid)
      local seq, action, arg = task:match("^(%d+) ([%w_]+) (.*)$")
      ngx.timer.at(0, run_task, seq, action, arg)
    end
    ngx.timer.at(TICK, tick)
  end
  ngx.timer.at(0, tick)
end

-- ---- what a case uses ----------------------------------------------------------

-- Sends action(arg) to worker wid; wait(handle) gives its result.
local function ask(wid, action, arg)
  local seq = ctl:incr("seq", 1, 0)
  local deadline = now() + 5
  while not ctl:add("task:" .. wid, seq .. " " .. action .. " " .. (arg or "")) do
    if now() > deadline then error("worker " .. wid .. " takes no task", 0) end
    ngx.sleep(0.001)
  end
  return seq
end

local function wait(seq, limit)
  local deadline = now() + (limit or 30)
  while true do
    local r = ctl:get("result:" .. seq)
    if r then
      if r:sub(1, 3) == "ok " then return r:sub(4) end
      error(r:sub(5), 0)
    end
    if now() > deadline then error("no answer to task " .. seq, 0) end
    ngx.sleep(0.002)
  end
end

local function on(wid, action, arg)
  return wait(ask(wid, action, arg))
end

local function check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 2) end
end

local function fresh_run()
  return tostring(ctl:incr("runs", 1, 0)) .. "-" .. ngx.worker.pid()
end

-- ---- the cases -------------------------------------------------------------------

case("both workers answer", function()
  local pids = {}
  for wid = 0, 1 do
    local r = wait(ask(wid, "get", "shared\0nothing"))
    check(r == "nil", "worker %d: %s", wid, r)
    pids[wid] = true
  end
end)

case("shdict: a value put by worker 0 is read by worker 1, and the other way", function()
  local run = fresh_run()
  check(on(0, "put", "shared\0k" .. run .. "\0from 0") == "ok", "put")
  local got = on(1, "get", "shared\0k" .. run)
  check(got == "from 0", "worker 1 read %s", got)
  check(on(1, "put", "shared\0j" .. run .. "\0from 1") == "ok", "put")
  got = on(0, "get", "shared\0j" .. run)
  check(got == "from 1", "worker 0 read %s", got)
end)

case("shdict: add raced by both workers, 100 rounds: one winner per round", function()
  local run = fresh_run()
  ctl:set("start:" .. run, now() + 0.1)
  local a, b = ask(0, "add_race", run), ask(1, "add_race", run)
  local wa, wb = tonumber(wait(a)), tonumber(wait(b))
  check(wa + wb == 100, "wins %d + %d, not 100", wa, wb)
  for r = 1, 100 do
    local w = ctl:get("wins:" .. run .. ":" .. r)
    check(w == 1, "round %d had %s winners", r, tostring(w))
  end
end)

case("shdict: 2 x 10,000 increments from both workers at once give 20,000", function()
  local run = fresh_run()
  ctl:set("start:" .. run, now() + 0.1)
  local a, b = ask(0, "increments", run), ask(1, "increments", run)
  local la, lb = tonumber(wait(a, 60)), tonumber(wait(b, 60))
  local total = M.cache:get("hits:" .. run)
  check(total == 20000, "the counter is %s", tostring(total))
  check(math.max(la, lb) == 20000 and math.min(la, lb) >= 10000, "last results %d and %d", la, lb)
end)

-- Worker 0 reads k through the tiered store (its memory level then holds
-- a copy for up to 60 s); worker 1 changes k; worker 0 must see it within
-- 0.1 s.
local function coherence(what, want, tag)
  local run = fresh_run()
  local key = "tk" .. run
  local repo = M.cache:store("tiered")
  if tag then repo = repo:tags(tag) end
  assert(repo:put(key, "v1", 10))
  local r = on(0, "get", "tiered\0" .. key)
  if not tag then
    check(r == "v1", "worker 0 read %s", r)
    local l1 = on(0, "l1", key)
    check(l1 == "v1", "worker 0's memory level holds %s, not the copy", l1)
  end
  local watching = ask(0, "watch", table.concat({ run, key, "v1", tag or "" }, "\0"))
  check(wait(watching) ~= "timeout", "worker 0 never read v1")
  watching = ask(0, "watch", table.concat({ run, key, want, tag or "" }, "\0"))
  ngx.sleep(0.05)    -- worker 0 reads the old value from its copy meanwhile
  check(on(1, "change", table.concat({ run, what, key, tag or "", "v2" }, "\0")) == "ok", "change")
  local took = wait(watching)
  check(tonumber(took) and tonumber(took) <= 0.1, "worker 0 saw the %s after %s s", what, took)
  return took
end

case("tiered: worker 1's put is read by worker 0 within 0.1 s (max_stale = 60)", function()
  return "seen after " .. coherence("put", "v2") .. " s"
end)

case("tiered: worker 1's forget is seen by worker 0 within 0.1 s (max_stale = 60)", function()
  return "seen after " .. coherence("forget", "nil") .. " s"
end)

case("tiered: worker 1's tag flush is seen by worker 0 within 0.1 s (max_stale = 60)", function()
  return "seen after " .. coherence("tag_flush", "nil", "people") .. " s"
end)

return M
