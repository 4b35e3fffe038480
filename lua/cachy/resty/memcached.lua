-- cachy.resty.memcached: the memcached driver inside nginx (SPEC section
-- 11), as cachy.resty.redis is for redis: a store behind the bytes
-- interface that talks memcached's binary protocol through ngx.socket.tcp,
-- and the dispatcher (cachy.resty.redis's) that picks it or the blocking C
-- handle per call, by phase.
--
-- The bytes come from csrc/memcached_wire.c: the wire keys, lifetimes,
-- frames and counter steps of the blocking driver (csrc/store_memcached.c),
-- and libmemcached's own weighted ketama continuum over the same `servers`,
-- so a key goes to the server the blocking driver sends it to, and either
-- reads what the other wrote. The same rules: set/add/delete, a get per
-- key, `many` one pipelined GETKQ... + NOOP per server, `put_many` SETQ...
-- + NOOP per server, `flush` a flush_all on every server, increments by
-- memcached's incr while the counter stays at or above zero and by
-- compare-and-swap below it, with the same wrap and overflow handling.
--
-- A single-key round trip's first read is given the whole `timeout` (what
-- is left of it, later reads); connect sets it.
--
-- Failures: a call that fails on a pooled connection (not a timeout) runs
-- again on a new one; then, with several servers, the server is left out
-- for 2 s (per worker, per store) and the call runs on the key's next
-- server on the continuum, up to 3 tries, as the blocking driver does. A
-- connection that failed or timed out is closed, never pooled. As the
-- blocking driver does, every write sent while a server is out is noted
-- with its key's own server (ring:note, memcached_wire.c's log), and a
-- server comes back only once the keys written elsewhere meanwhile are
-- deleted on it, then on the servers they went to (flush_all past the
-- log's limit): see rejoin_due.
--
-- Loaded only inside nginx (cachy.repository requires it there).
local core = require("cachy.core")
local socket = require("cachy.resty.socket")
local seconds_text, timeout_ms, release, group = socket.seconds_text, socket.timeout_ms, socket.release, socket.group

local ngx = ngx
local tcp, now, update_time, sleep = ngx.socket.tcp, ngx.now, ngx.update_time, ngx.sleep
local mc_key, mc_expiry, mc_request, mc_header = core.mc_key, core.mc_expiry, core.mc_request, core.mc_header
local mc_store_extras, mc_incr_extras, mc_unpad = core.mc_store_extras, core.mc_incr_extras, core.mc_unpad
local mc_incr_plan, mc_incr_result, mc_repair, mc_status = core.mc_incr_plan, core.mc_incr_result, core.mc_repair, core.mc_status
local quote_key = core.quote_key
local format, byte, floor, concat, random = string.format, string.byte, math.floor, table.concat, math.random
local setmetatable, type, tostring = setmetatable, type, tostring

local M = {}

local GET, SET, ADD, DELETE, INCR, FLUSH, NOOP, GETKQ, SETQ = 0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x0a, 0x0d, 0x11
local ST_OK, ST_NOT_FOUND, ST_EXISTS, ST_E2BIG, ST_EINVAL, ST_NOT_STORED, ST_DELTA_BADVAL, ST_ENOMEM =
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x82
local ATTEMPTS = 3            -- tries of a single-key call (store_memcached.c's MC_ATTEMPTS)
local READ_CHUNK = 16384
local RELATIVE_MAX = 2592000  -- exptimes up to 30 days are relative (memcached_wire.h)
local REPAIR_TRIES = 200
local MAX_BODY = 1024 * 1024 * 1024
local NO_EXTRAS4 = "\0\0\0\0"

-- ---- the cosocket store ----------------------------------------------------

local Store = {}
Store.__index = Store

-- A store on nginx cosockets for the memcached store `name` (config
-- validated by cachy.new; the servers and timeouts are checked here, with
-- the blocking driver's messages, reported by every call).
function M.new(name, prefix, config)
  local self = setmetatable({
    name = name, prefix = prefix or "", config = config,
    connect_timeout = config.connect_timeout or 1.0, timeout = config.timeout or 1.0,
    keepalive_ms = floor((config.keepalive or 60) * 1000),
    pool_size = config.pool_size or 64, backlog = config.pool_backlog,
  }, Store)
  local ring, why = core.mc_ring(config.servers)
  if not (self.connect_timeout > 0 and self.connect_timeout <= 86400) then
    self.checked = "connect_timeout must be above 0 and at most 86400 seconds"
  elseif not (self.timeout > 0 and self.timeout <= 86400) then
    self.checked = "timeout must be above 0 and at most 86400 seconds"
  elseif not ring then
    self.checked = why
  end
  -- named as the blocking driver names itself: its servers once they are valid
  self.desc = "store '" .. name .. "' (memcached" .. (ring and (" " .. ring:addresses()) or "") .. ")"
  if ring then
    self.ring, self.n, self.cleaning = ring, ring:count(), {}
    self.servers = {}
    for i = 1, self.n do
      local label, host, port = ring:address(i)
      self.servers[i] = {
        label = self.n > 1 and (" (server " .. label .. ")") or "",
        host = port and host or ("unix:" .. host), port = port,
        opts = { pool = "cachy:memcached:" .. label, pool_size = self.pool_size, backlog = self.backlog },
      }
    end
  end
  self.cto_ms, self.to_ms = timeout_ms(self.connect_timeout), timeout_ms(self.timeout)
  return self
end

function Store:describe()
  return self.desc
end

-- nil, "<desc>: <cause>[ (server ...)]", code
local function fail(self, i, code, cause)
  return nil, self.desc .. ": " .. cause .. (i and self.servers[i].label or ""), code
end

-- A failure of the server or its connection (the call may move on to
-- another server): nil, err, code, true. The socket is closed.
local function io_fail(self, i, sock, err, connecting)
  if sock then sock:close() end
  local code, cause = "closed", nil
  if err == "timeout" then
    code = "timeout"
    if connecting then
      cause = "connect timed out after " .. seconds_text(self.connect_timeout) .. " s"
    else
      cause = "timed out after " .. seconds_text(self.timeout) .. " s"
    end
  elseif connecting then
    cause = tostring(err):lower()
    -- nothing listens there: as the blocking driver's code says
    if cause:find("refused", 1, true) or cause:find("no such file", 1, true) then code = "refused" end
  elseif err == "closed" then
    cause = "connection failure"
  else
    cause = tostring(err):lower()
  end
  local _, msg = fail(self, i, code, cause)
  return nil, msg, code, true
end

local function connect(self, i)
  local s = self.servers[i]
  local sock = tcp()
  sock:settimeouts(self.cto_ms, self.to_ms, self.to_ms)
  local ok, err
  if s.port then
    ok, err = sock:connect(s.host, s.port, s.opts)
  else
    ok, err = sock:connect(s.host, s.opts)
  end
  if not ok then return io_fail(self, i, sock, err, true) end
  return sock
end

local function response(op, status, opaque, cas, body, elen, klen)
  return {
    op = op, status = status, opaque = opaque, cas = cas,
    extras = body:sub(1, elen), key = body:sub(elen + 1, elen + klen),
    value = body:sub(elen + klen + 1),
  }
end

local function unknown_failure(self, i, sock)
  sock:close()
  local _, msg = fail(self, i, "closed", "unknown read failure")
  return nil, msg, "closed", true
end

-- Reads one response within the round trip's deadline: a table
-- { op, status, opaque, cas, extras, key, value }, or the io_fail values.
local function read_response(self, i, sock, deadline)
  update_time()
  local left = deadline - now()
  if left <= 0 then return io_fail(self, i, sock, "timeout") end
  sock:settimeouts(self.cto_ms, self.to_ms, timeout_ms(left))
  local h, err = sock:receive(24)
  if not h then return io_fail(self, i, sock, err) end
  local op, status, klen, elen, blen, opaque, cas = mc_header(h)
  if not op then return unknown_failure(self, i, sock) end
  local body = ""
  if blen > 0 then
    if blen > MAX_BODY or klen + elen > blen then return unknown_failure(self, i, sock) end
    update_time()
    left = deadline - now()
    if left <= 0 then return io_fail(self, i, sock, "timeout") end
    sock:settimeouts(self.cto_ms, self.to_ms, timeout_ms(left))
    body, err = sock:receive(blen)
    if not body then return io_fail(self, i, sock, err) end
  end
  return response(op, status, opaque, cas, body, elen, klen)
end

-- Reads `want` more bytes after `have` within the deadline; the socket's
-- read timeout is then the whole `timeout` again, for the next round trip.
local function read_more(self, i, sock, deadline, have, want)
  update_time()
  local left = deadline - now()
  if left <= 0 then return io_fail(self, i, sock, "timeout") end
  sock:settimeouts(self.cto_ms, self.to_ms, timeout_ms(left))
  local more, err = sock:receive(want)
  if not more then return io_fail(self, i, sock, err) end
  sock:settimeouts(self.cto_ms, self.to_ms, self.to_ms)
  return have .. more
end

-- Sends bytes and reads the one response they ask for. The first read
-- takes what has come (a whole response, in the common case: parsed with
-- no further socket call); the rest of a response that came in parts is
-- read within the round trip's deadline. Bytes beyond the one response
-- are a broken stream: the connection is closed.
local function round_trip(self, i, sock, bytes)
  local deadline = now() + self.timeout
  local ok, err = sock:send(bytes)
  if not ok then return io_fail(self, i, sock, err) end
  local data
  data, err = sock:receiveany(READ_CHUNK)
  if not data then return io_fail(self, i, sock, err) end
  local code, failure
  if #data < 24 then
    data, err, code, failure = read_more(self, i, sock, deadline, data, 24 - #data)
    if not data then return nil, err, code, failure end
  end
  local op, status, klen, elen, blen, opaque, cas = mc_header(data)
  if not op or blen > MAX_BODY or klen + elen > blen or #data > 24 + blen then
    return unknown_failure(self, i, sock)
  end
  if #data < 24 + blen then
    data, err, code, failure = read_more(self, i, sock, deadline, data, 24 + blen - #data)
    if not data then return nil, err, code, failure end
  end
  return response(op, status, opaque, cas, data:sub(25), elen, klen)
end

-- A response status that is not the answer the caller handles, as the
-- blocking driver's mc_fail words it. Unknown statuses are failures of the
-- connection, as libmemcached reads them (it is closed).
local function status_fail(self, i, sock, r, vlen)
  if r.status == ST_E2BIG then
    release(self, sock)
    return fail(self, nil, "too_big", format("value of %d bytes is larger than the server's item size limit", vlen or 0))
  elseif r.status == ST_ENOMEM then
    release(self, sock)
    return fail(self, i, "backend", "out of memory storing the value")
  end
  local text, failure = mc_status(r.status)
  if failure then
    sock:close()
    local _, msg = fail(self, i, "closed", text)
    return nil, msg, "closed", true
  end
  release(self, sock)
  return fail(self, i, "backend", text)
end

-- The keys at sel (positions into wks) on server i, as pipelined quiet
-- requests ending with a NOOP: make(pos) gives each request (opaque = its
-- position); on_reply(r) handles each response before the NOOP's. Returns
-- true, or the failure values (4th: a server failure).
local function pipeline(self, i, sel, make, on_reply)
  local sock, err, code, failure = connect(self, i)
  if not sock then return nil, err, code, failure end
  local reqs = {}
  for j = 1, #sel do reqs[j] = make(sel[j]) end
  reqs[#sel + 1] = mc_request(NOOP, nil, nil, nil, nil, 0)
  local ok
  ok, err = sock:send(concat(reqs))
  if not ok then return io_fail(self, i, sock, err) end
  update_time()
  local deadline = now() + self.timeout
  local first_err
  while true do
    local r
    r, err, code, failure = read_response(self, i, sock, deadline)
    if not r then return nil, err, code, failure end
    if r.op == NOOP then break end
    local e, c = on_reply(r)
    if e and not first_err then first_err = { e, c } end
  end
  release(self, sock)
  if first_err then return nil, first_err[1], first_err[2] end
  return true
end

-- ---- failover cleaning (store_memcached.c's rejoin_due) ---------------------

-- Deletes on server i the logged keys (own: all of them; else those that
-- went to i), or empties it (flush); true when it worked. Nothing to do
-- needs no connection.
local function clean_on(self, i, flush, keys, landed, own)
  local sel = {}
  if flush then
    sel[1] = 0
  else
    for p = 1, #keys do
      if own or landed[p] == i then sel[#sel + 1] = p end
    end
  end
  if #sel == 0 then return true end
  return pipeline(self, i, sel, function(p)
    if p == 0 then return mc_request(FLUSH, nil, NO_EXTRAS4, nil, nil, 0) end
    return mc_request(DELETE, keys[p], nil, nil, nil, 0)
  end, function(r)
    if r.status ~= ST_OK and r.status ~= ST_NOT_FOUND then return self.desc, "backend" end
  end) == true
end

local function lands(flush, landed, j)
  if flush then return true end
  for p = 1, #landed do
    if landed[p] == j then return true end
  end
  return false
end

local CLEAN_PASSES = 3

-- Lets back, cleaned, every server left out whose 2 s are over (in this
-- worker): its logged keys are deleted on it (a failure: out another 2 s),
-- it takes its keys back, then they are deleted where they went (a server
-- that fails that is left out and emptied before it is back). The
-- cleaning yields, so other requests of the worker go on meanwhile: the
-- server stays out until it is clean (their writes of its keys go
-- elsewhere and are noted; a log that grew during a pass is cleaned
-- again), and only one request cleans a given server.
local function rejoin_due(self)
  local ring, cleaning = self.ring, self.cleaning
  local i = ring:due()
  while i do
    if not cleaning[i] then
      cleaning[i] = true
      local ok, flush, keys, landed = false, nil, nil, nil
      for _ = 1, CLEAN_PASSES do
        flush, keys, landed = ring:plan(i)
        if not clean_on(self, i, flush, keys, landed, true) then break end
        local flush_now, keys_now = ring:plan(i)
        if flush_now == flush and #keys_now == #keys then
          ok = true
          break
        end
      end
      if ok then
        ring:rejoin(i)
        for j = 1, self.n do
          if j ~= i and not ring:is_out(j) and lands(flush, landed, j)
             and not clean_on(self, j, flush, keys, landed, false) then
            ring:spoil(j)
          end
        end
      else
        ring:eject(i)
      end
      cleaning[i] = nil
    end
    i = ring:due(i)
  end
end

-- Runs body(self, i, sock, wk, a, b, c, d) on the server that owns the
-- wire key wk, with the blocking driver's tries (store_memcached.c's
-- try_again): after a failure on a pooled connection (not a timeout), once
-- more on a new one; then, with several servers, the server is left out
-- and the call runs on the key's new owner. body returns its results, or
-- the io_fail values.
local function single(self, wk, body, a1, a2, a3, a4)
  if self.checked then return fail(self, nil, "misuse", self.checked) end
  if self.n > 1 then rejoin_due(self) end
  local failures, reconnected = 0, false
  while true do
    local i = self.n > 1 and self.ring:server(wk) or 1
    local sock, err, code = connect(self, i)
    local reused = false
    local a, b, c, d
    if sock then
      reused = (sock:getreusedtimes() or 0) > 0
      a, b, c, d = body(self, i, sock, wk, a1, a2, a3, a4)
      if not d then return a, b, c end
      err, code = b, c
    end
    failures = failures + 1
    if failures >= ATTEMPTS then return nil, err, code end
    if reused and code ~= "timeout" and not reconnected then
      reconnected = true
    elseif self.n < 2 then
      return nil, err, code
    else
      self.ring:eject(i)
    end
  end
end

-- The set/add extras (flags 0) of a lifetime; the last relative one is
-- kept (an absolute exptime moves with the clock).
local function store_extras(self, ms)
  ms = ms or 0
  if ms == self.extras_ms then return self.extras end
  local exptime = mc_expiry(ms)
  local extras = mc_store_extras(0, exptime)
  if exptime <= RELATIVE_MAX then self.extras_ms, self.extras = ms, extras end
  return extras
end

local function get_on(self, i, sock, wk)
  local r, err, code, failure = round_trip(self, i, sock, mc_request(GET, wk, nil, nil, nil, 0))
  if not r then return nil, err, code, failure end
  if r.status == ST_OK then
    release(self, sock)
    local v = r.value
    if byte(v, -1) == 32 then v = mc_unpad(v) end
    return v
  elseif r.status == ST_NOT_FOUND then
    release(self, sock)
    return nil
  end
  return status_fail(self, i, sock, r)
end

function Store:get(key)
  return single(self, mc_key(self.prefix .. key), get_on)
end

local function write_on(self, i, sock, wk, op, bytes, ms, answers)
  if self.n > 1 then self.ring:note(wk, i) end
  local req
  if op == DELETE then req = mc_request(DELETE, wk, nil, nil, nil, 0)
  else req = mc_request(op, wk, store_extras(self, ms), bytes, nil, 0) end
  local r, err, code, failure = round_trip(self, i, sock, req)
  if not r then return nil, err, code, failure end
  local answer = answers[r.status]
  if answer ~= nil then
    release(self, sock)
    return answer
  end
  return status_fail(self, i, sock, r, bytes and #bytes)
end

local function write(self, key, op, bytes, ms, answers)
  return single(self, mc_key(self.prefix .. key), write_on, op, bytes, ms, answers)
end

local SET_ANSWERS = { [ST_OK] = true }
local ADD_ANSWERS = { [ST_OK] = true, [ST_EXISTS] = false, [ST_NOT_STORED] = false }
local DELETE_ANSWERS = { [ST_OK] = true, [ST_NOT_FOUND] = false }

function Store:put(key, bytes, ms)
  return write(self, key, SET, bytes, ms, SET_ANSWERS)
end

function Store:add(key, bytes, ms)
  return write(self, key, ADD, bytes, ms, ADD_ANSWERS)
end

function Store:forget(key)
  return write(self, key, DELETE, nil, nil, DELETE_ANSWERS)
end

-- ---- locks (store_memcached.c's mc_if_once) ----------------------------------

local IF_TRIES = 10

-- A get, the comparison, then a compare-and-swap of the same bytes with
-- the new exptime (core.mc_expired deletes); a lost swap reads again.
local function if_held(self, key, bytes, exptime)
  local wk = mc_key(self.prefix .. key)
  local extras_tail = mc_store_extras(0, exptime):sub(5, 8)
  return single(self, wk, function(_, i, sock)
    if self.n > 1 then self.ring:note(wk, i) end
    for _ = 1, IF_TRIES do
      local r, err, code, failure = round_trip(self, i, sock, mc_request(GET, wk, nil, nil, nil, 0))
      if not r then return nil, err, code, failure end
      if r.status == ST_NOT_FOUND then
        release(self, sock)
        return false
      end
      if r.status ~= ST_OK then return status_fail(self, i, sock, r) end
      local v = r.value
      if byte(v, -1) == 32 then v = mc_unpad(v) end
      if v ~= bytes then
        release(self, sock)
        return false
      end
      local flags = r.extras ~= "" and r.extras or NO_EXTRAS4
      local w
      w, err, code, failure = round_trip(self, i, sock, mc_request(SET, wk, flags .. extras_tail, bytes, r.cas, 0))
      if not w then return nil, err, code, failure end
      if w.status == ST_OK or w.status == ST_NOT_FOUND then
        release(self, sock)
        return w.status == ST_OK
      end
      if w.status ~= ST_EXISTS then return status_fail(self, i, sock, w, #bytes) end
    end
    release(self, sock)
    return false
  end)
end

function Store:forget_if(key, bytes)
  return if_held(self, key, bytes, core.mc_expired)
end

function Store:touch_if(key, bytes, ms)
  return if_held(self, key, bytes, mc_expiry(ms))
end

-- ---- increments (store_memcached.c's mc_incr_once, round trip by round trip)

local function key_fail(self, code, what, shown)
  return fail(self, nil, code, format(what, quote_key(shown)))
end

-- Rewrites a counter left as an unsigned two's complement signed (repair_wrapped).
local function repair_wrapped(self, i, sock, wk)
  for _ = 1, REPAIR_TRIES do
    local r, err, code, failure = round_trip(self, i, sock, mc_request(GET, wk, nil, nil, nil, 0))
    if not r then return nil, err, code, failure end
    if r.status == ST_NOT_FOUND then return true end
    if r.status ~= ST_OK then return status_fail(self, i, sock, r) end
    local text = mc_repair(r.value)
    if not text then return true end
    local flags = r.extras ~= "" and r.extras or NO_EXTRAS4
    local w
    w, err, code, failure = round_trip(self, i, sock, mc_request(SET, wk, flags .. NO_EXTRAS4, text, r.cas, 0))
    if not w then return nil, err, code, failure end
    if w.status == ST_OK then return true end
    if w.status ~= ST_EXISTS and w.status ~= ST_NOT_FOUND then return status_fail(self, i, sock, w) end
  end
  return true
end

local function incr_once(self, i, sock, wk, by, shown, verb)
  if self.n > 1 then self.ring:note(wk, i) end
  local wait = self.timeout
  update_time()
  local start = now()
  local deadline = start + wait
  local wrap_seen, wrap_cas, wrap_until, wrap_polls = false, nil, 0, 0
  local tries = 0
  while true do
    if tries > 0 then
      update_time()
      if now() >= deadline then
        release(self, sock)
        return fail(self, nil, "backend", format("increment lost %d races with other writers in %s s",
          tries, seconds_text(self.timeout)))
      end
      if tries >= 3 then
        local cap_us = tries >= 9 and 2000 or 50 * 2 ^ (tries - 3)
        sleep(floor(random() * cap_us) / 1e6)
      end
    end
    local r, err, code, failure = round_trip(self, i, sock, mc_request(GET, wk, nil, nil, nil, 0))
    if not r then return nil, err, code, failure end
    local again = false
    if r.status == ST_NOT_FOUND then
      local text = format("%d", by)
      local w
      w, err, code, failure = round_trip(self, i, sock, mc_request(ADD, wk, store_extras(self, 0), text, nil, 0))
      if not w then return nil, err, code, failure end
      if w.status == ST_OK then
        release(self, sock)
        return by
      end
      if w.status ~= ST_EXISTS and w.status ~= ST_NOT_STORED then return status_fail(self, i, sock, w) end
      again = true
    elseif r.status ~= ST_OK then
      return status_fail(self, i, sock, r)
    else
      local plan, v, text = mc_incr_plan(r.value, by)
      if plan == "not_integer" then
        release(self, sock)
        return key_fail(self, "not_integer", "value of key '%s' is not an integer", shown)
      elseif plan == "overflow" then
        release(self, sock)
        return key_fail(self, "overflow", (verb == "decrement" and "decrement" or "increment")
          .. " of key '%s' overflows 64 bits", shown)
      elseif plan == "same" then
        release(self, sock)
        return v
      elseif plan == "wrapped" then
        -- another writer's two's complement, about to be rewritten signed,
        -- or a number beyond int64: the same item after `timeout` is no counter
        update_time()
        local t = now()
        if not wrap_seen or r.cas ~= wrap_cas then
          if t >= start + 3 * wait then
            release(self, sock)
            return fail(self, nil, "backend", format("increment lost races with other writers for 3 times %s s",
              seconds_text(self.timeout)))
          end
          wrap_seen, wrap_cas, wrap_until, wrap_polls = true, r.cas, t + wait, 0
        elseif t >= wrap_until then
          release(self, sock)
          return key_fail(self, "not_integer", "value of key '%s' is not an integer", shown)
        end
        sleep(wrap_polls < 10 and 0.001 or 0.01)
        wrap_polls = wrap_polls + 1
        update_time()
        deadline = now() + wait
        tries = -1
        again = true
      elseif plan == "incr" then
        local w
        w, err, code, failure = round_trip(self, i, sock, mc_request(INCR, wk, mc_incr_extras(by), nil, nil, 0))
        if not w then return nil, err, code, failure end
        if w.status == ST_NOT_FOUND or w.status == ST_DELTA_BADVAL or w.status == ST_EINVAL then
          again = true                  -- gone, or not numeric to memcached any more
        elseif w.status ~= ST_OK then
          return status_fail(self, i, sock, w)
        elseif #w.value ~= 8 then
          sock:close()
          local _, msg = fail(self, i, "closed", "unknown read failure")
          return nil, msg, "closed", true
        else
          local sum, wrapped = mc_incr_result(w.value, by)
          if sum == nil then
            local u
            u, err, code = round_trip(self, i, sock, mc_request(INCR, wk, mc_incr_extras(by, true), nil, nil, 0))
            if u then release(self, sock) end
            return key_fail(self, "overflow", (verb == "decrement" and "decrement" or "increment")
              .. " of key '%s' overflows 64 bits", shown)
          end
          if wrapped then
            local ok
            ok, err, code, failure = repair_wrapped(self, i, sock, wk)
            if not ok then return nil, err, code, failure end
          end
          release(self, sock)
          return sum
        end
      else -- "cas"
        local flags = r.extras ~= "" and r.extras or NO_EXTRAS4
        local w
        w, err, code, failure = round_trip(self, i, sock, mc_request(SET, wk, flags .. NO_EXTRAS4, text, r.cas, 0))
        if not w then return nil, err, code, failure end
        if w.status == ST_OK then
          release(self, sock)
          return v
        end
        if w.status ~= ST_EXISTS and w.status ~= ST_NOT_FOUND then return status_fail(self, i, sock, w) end
        again = true
      end
    end
    if again then tries = tries + 1 end
  end
end

-- incr(key, by [, shown [, verb]]), as cachy.resty.redis's.
function Store:incr(key, by, shown, verb)
  return single(self, mc_key(self.prefix .. key), incr_once, by, shown or key, verb)
end

-- ---- whole store ------------------------------------------------------------

-- flush_all on every server (memcached cannot delete by prefix). As
-- libmemcached's flush, every server is asked even after one failed, and
-- the last failure is the call's.
function Store:flush()
  if self.checked then return fail(self, nil, "misuse", self.checked) end
  local last_err, last_code
  for i = 1, self.n do
    local sock, err, code = connect(self, i)
    if sock then
      local r
      r, err, code = round_trip(self, i, sock, mc_request(FLUSH, nil, NO_EXTRAS4, nil, nil, 0))
      if r and r.status ~= ST_OK then
        local _
        _, err, code = status_fail(self, i, sock, r)
      elseif r then
        release(self, sock)
      end
    end
    if err then last_err, last_code = err, code end
  end
  if last_err then return nil, last_err, last_code end
  return true
end

-- Sends every pending position to the server owning its wire key, in
-- rounds: the keys of a server that failed go to their new owner in the
-- next round (store_memcached.c's each_owner).
local function each_owner(self, wks, run)
  if self.checked then return fail(self, nil, "misuse", self.checked) end
  if self.n > 1 then rejoin_due(self) end
  local n = #wks
  local pending = {}
  for p = 1, n do pending[p] = true end
  local failures, limit = 0, ATTEMPTS + self.n
  while true do
    local groups, order = {}, {}
    for p = 1, n do
      if pending[p] then
        group(groups, order, self.n > 1 and self.ring:server(wks[p]) or 1, p)
      end
    end
    if #order == 0 then return true end
    local again = false
    for _, i in ipairs(order) do
      local ok, err, code, failure = run(i, groups[i])
      if ok then
        for _, p in ipairs(groups[i]) do pending[p] = nil end
      elseif not failure then
        return nil, err, code
      else
        failures = failures + 1
        if failures >= limit or self.n < 2 then return nil, err, code end
        self.ring:eject(i)
        again = true
      end
    end
    if not again then return true end
  end
end

-- many({ key, ... }) -> { [i] = bytes } for the keys found.
function Store:many(keys)
  local n, prefix = #keys, self.prefix
  local out = {}
  if n == 0 then return out end
  local wks = {}
  for p = 1, n do wks[p] = mc_key(prefix .. keys[p]) end
  local ok, err, code = each_owner(self, wks, function(i, sel)
    return pipeline(self, i, sel, function(p)
      return mc_request(GETKQ, wks[p], nil, nil, nil, p)
    end, function(r)
      if r.status == ST_OK and wks[r.opaque] then
        local v = r.value
        if byte(v, -1) == 32 then v = mc_unpad(v) end
        out[r.opaque] = v
      elseif r.status ~= ST_NOT_FOUND then
        local text = mc_status(r.status)
        return select(2, fail(self, i, "backend", text)), "backend"
      end
    end)
  end)
  if not ok then return nil, err, code end
  return out
end

-- put_many(keys, vals, ms): one pipelined SETQ... + NOOP per server.
function Store:put_many(keys, vals, ms)
  local n, prefix = #keys, self.prefix
  if n == 0 then return true end
  local wks = {}
  for p = 1, n do wks[p] = mc_key(prefix .. keys[p]) end
  local extras = mc_store_extras(0, mc_expiry(ms or 0))
  return each_owner(self, wks, function(i, sel)
    if self.n > 1 then
      for _, p in ipairs(sel) do self.ring:note(wks[p], i) end
    end
    return pipeline(self, i, sel, function(p)
      return mc_request(SETQ, wks[p], extras, vals[p], nil, p)
    end, function(r)
      if r.status == ST_E2BIG then
        return format("%s: value of %d bytes is larger than the server's item size limit",
          self.desc, #(vals[r.opaque] or "")), "too_big"
      elseif r.status == ST_ENOMEM then
        return select(2, fail(self, i, "backend", "out of memory storing the value")), "backend"
      elseif r.status ~= ST_OK then
        return select(2, fail(self, i, "backend", (mc_status(r.status)))), "backend"
      end
    end)
  end)
end


function Store:prune()
  if self.blocking then return self.blocking:prune() end
  return fail(self, nil, "misuse", "the memcached driver has no prune")
end

-- Pooled connections belong to nginx's worker; nothing to close here.
function Store:close() end

-- ---- the dispatcher -------------------------------------------------------------

-- cachy.resty.redis's dispatcher around this store and the blocking handle.
function M.dispatcher(name, prefix, config, blocking)
  local st = M.new(name, prefix, config)
  st.blocking = blocking
  return require("cachy.resty.redis").dispatcher(name, prefix, config, blocking, st)
end

return M
