-- cachy.jit: on LuaJIT, a memory store's get and put and the decorator's
-- read go through the FFI (csrc/lcachy_jit.c) instead of the C functions
-- of lcachy_fast.c. LuaJIT compiles none of the calls made through the Lua
-- C API, so a loop of cache hits ran in the interpreter; an FFI call is
-- compiled into the trace like any other instruction. The C side finds
-- and copies the bytes; this side turns the common MessagePack shapes
-- (strings, numbers, booleans, nil) into values itself and hands anything
-- else (tables, 64-bit integers) to the C decoder, so every answer,
-- copy-on-read included, is the one lcachy_fast.c gives. A read of an
-- item that has not changed since it was last read or written here is a
-- "touch" of that item (csrc/store_memory.h; memo below). Arguments this
-- path does not take on (a date as a lifetime, a table as a value or as
-- a decorated function's argument, a misuse to report) go to the
-- lcachy_fast.c function, which answers them as before.
local ffi = require("ffi")
local core = require("cachy.core")
local compat = require("cachy.compat")

local ffi_string, ffi_cast, ffi_new = ffi.string, ffi.cast, ffi.new
local type, tostring, tonumber, select, ceil = type, tostring, tonumber, select, math.ceil
local core_decode, core_decode_tuple, quote_key = core.decode, core.decode_tuple, core.quote_key
local pack, unpack = compat.pack, compat.unpack

-- The layouts of lcachy_jit.c (and of cachy_error and cachy_arg), which
-- bind checks by size against core.so's: keep them in step.
if not pcall(ffi.typeof, "cachy_jit_api") then
  ffi.cdef([[
typedef struct { int code; char msg[512]; } cachy_jit_error;
typedef struct {
  const char *ptr; size_t len; const char *key; size_t klen;
  uint64_t item, stamp, gen;
} cachy_jit_out;
typedef struct { int tag; double num; const char *str; size_t len; } cachy_jit_arg;
typedef struct {
  const uint64_t *freed; size_t stamp_at, expires_at, used_at;
} cachy_jit_view;
typedef struct {
  size_t api_size;
  int (*get)(void *h, const char *key, size_t klen, cachy_jit_out *out, cachy_jit_error *err);
  int (*touch)(void *h, uint64_t item, uint64_t stamp, uint64_t gen);
  int (*put_string)(void *h, const char *key, size_t klen, const char *s, size_t n, int64_t ms,
                    cachy_jit_out *out, cachy_jit_error *err);
  int (*put_number)(void *h, const char *key, size_t klen, double d, int64_t ms,
                    cachy_jit_error *err);
  int (*put_boolean)(void *h, const char *key, size_t klen, int b, int64_t ms,
                     cachy_jit_error *err);
  int (*tuple_get)(void *h, const char *prefix, size_t plen, const cachy_jit_arg *args, int n,
                   cachy_jit_out *out, cachy_jit_error *err);
  const char *(*code_name)(int code);
  int (*view)(void *h, cachy_jit_view *v);
  size_t error_size, arg_size, out_size, view_size;
} cachy_jit_api;
]])
end

local BYTES = ffi.typeof("const uint8_t *")
local ITEM = ffi.typeof("uint8_t *")
local U64 = ffi.typeof("const uint64_t *")
local I64 = ffi.typeof("const int64_t *")
local MAX_ARGS = 4      -- decorated calls with more arguments take the C path
local MEMO_MAX, MEMO_VALUE_MAX = 1024, 1024     -- see memo below

local M = {}

-- nginx's clock inside nginx: ngx_current_msec, the monotonic milliseconds
-- nginx reads once per turn of its event loop (the time ngx.now() and
-- lua_shared_dict lifetimes go by), on the clock the memory store's
-- lifetimes are set by (CLOCK_MONOTONIC_COARSE, within a tick of
-- core.now_ms()). Reading it is a load; the store's clock is a call. Used
-- only when it is there and agrees with core.now_ms().
local C = ffi.C
local NGX_CLOCK = false
if type(rawget(_G, "ngx")) == "table" then
  pcall(ffi.cdef, "extern volatile int64_t ngx_current_msec;")
  local ok, msec = pcall(function() return tonumber(C.ngx_current_msec) end)
  NGX_CLOCK = ok and type(msec) == "number" and math.abs(msec - core.now_ms()) < 1000
end
M.ngx_clock = NGX_CLOCK

-- ---- decoding ---------------------------------------------------------------

local be = ffi_new("union { uint8_t b[8]; double d; }")

-- The MessagePack element at p[off] of the kinds handled here, and the
-- offset after it; nil, nil for any other kind, or one that overruns n.
local function element(p, off, n)
  local b = p[off]
  if b < 0x80 then return b, off + 1 end
  if b >= 0xe0 then return b - 256, off + 1 end
  local len, head
  if b >= 0xa0 and b <= 0xbf then
    len, head = b - 0xa0, 1
  elseif b == 0xd9 and off + 2 <= n then
    len, head = p[off + 1], 2
  elseif b == 0xda and off + 3 <= n then
    len, head = p[off + 1] * 256 + p[off + 2], 3
  elseif b == 0xc0 then
    return nil, off + 1
  elseif b == 0xc2 then
    return false, off + 1
  elseif b == 0xc3 then
    return true, off + 1
  elseif b == 0xcb and off + 9 <= n then
    for i = 0, 7 do be.b[7 - i] = p[off + 1 + i] end
    return be.d, off + 9
  elseif b == 0xcc and off + 2 <= n then
    return p[off + 1], off + 2
  elseif b == 0xcd and off + 3 <= n then
    return p[off + 1] * 256 + p[off + 2], off + 3
  elseif b == 0xd0 and off + 2 <= n then
    local v = p[off + 1]
    return v >= 0x80 and v - 256 or v, off + 2
  else
    return nil, nil
  end
  if off + head + len > n then return nil, nil end
  return ffi_string(p + off + head, len), off + head + len
end

-- A top-level integer's decimal text of at most 15 digits (exact as a
-- double), written as cachy_parse_int reads it; nil for anything else.
local function decimal(p, n)
  local i, sign = 0, 1
  if p[0] == 45 then i, sign = 1, -1 end       -- "-"
  local digits = n - i
  if digits < 1 or digits > 15 or (digits > 1 and p[i] == 48) then return nil end
  local v = 0
  for j = i, n - 1 do
    local d = p[j] - 48
    if d < 0 or d > 9 then return nil end
    v = v * 10 + d
  end
  if sign < 0 and v == 0 then return nil end   -- "-0" is text
  return sign * v
end

-- The value of the n bytes at p: true, value; or false when the C decoder
-- is to read them (the order of cachy_codec_decode: a lone string, then
-- decimal text, then MessagePack).
local function value_of(p, n)
  if n == 0 then return false end
  local b = p[0]
  if b == 45 or (b >= 48 and b <= 57) then
    local v = decimal(p, n)
    if v == nil then return false end
    return true, v
  end
  local v, off = element(p, 0, n)
  if off ~= n then return false end
  return true, v
end

-- core.decode's answer for bytes (true, value; false, why), the common
-- shapes read here: a call into C through the Lua API ends a trace.
function M.decode(bytes)
  local ok, v = value_of(ffi_cast(BYTES, bytes), #bytes)
  if ok then return true, v end
  return core_decode(bytes)
end

-- ---- the bound functions ----------------------------------------------------------

-- `cfast`: what core.bind made for the handle `st`; `default_ms` the
-- manager's default lifetime (-1: over at once). Returns a table like
-- cfast with get, put and tuple_get through the FFI, or cfast itself when
-- the store is not a memory store.
function M.bind(st, cfast, default_ms)
  if core.jit_bind == nil then
    error("cachy.jit: cachy/core.so has no jit_bind (a core.so of another version?)", 0)
  end
  local api_p, h_p = core.jit_bind(st)
  if api_p == nil then return cfast end
  local api = ffi_cast("const cachy_jit_api *", api_p)
  -- api_size is the table's first field: the others are read only when
  -- the table is as long as declared here
  if tonumber(api.api_size) ~= ffi.sizeof("cachy_jit_api")
      or tonumber(api.error_size) ~= ffi.sizeof("cachy_jit_error")
      or tonumber(api.arg_size) ~= ffi.sizeof("cachy_jit_arg")
      or tonumber(api.out_size) ~= ffi.sizeof("cachy_jit_out")
      or tonumber(api.view_size) ~= ffi.sizeof("cachy_jit_view") then
    error("cachy.jit: the FFI declarations differ from cachy/core.so's (a core.so of another version?)", 0)
  end
  local h = ffi_cast("void *", h_p)
  local c_get, c_touch, c_put_string, c_put_number, c_put_boolean, c_tuple_get =
    api.get, api.touch, api.put_string, api.put_number, api.put_boolean, api.tuple_get
  local out = ffi_new("cachy_jit_out")
  local err = ffi_new("cachy_jit_error")
  local args = ffi_new("cachy_jit_arg[?]", MAX_ARGS)
  local cget, cput, ctuple_get = cfast.get, cfast.put, cfast.tuple_get

  -- Where hits and misses of this path are counted: an increment that
  -- compiles (the memory store counts its own too, for stats()).
  local counts = { hits = 0, misses = 0, writes = 0 }

  -- Per key, the value a get last read when it is not a table (strings,
  -- numbers and booleans are values: handing the same one out again is a
  -- copy), with a reference to the store's item. While the reference
  -- holds (cachy_memory_touch: no item freed since, this one not
  -- rewritten), a hit is one touch of the item, which counts it and checks
  -- its expiry as a get does, without hashing or comparing the key or
  -- making a string. At most MEMO_MAX entries of values up to
  -- MEMO_VALUE_MAX bytes: past that the table starts afresh. (Weak
  -- entries were tried: a collection emptied the table, and a loop whose
  -- trace was recorded then compiled the read by key, the touch becoming
  -- a side trace at twice the cost.)
  local memo, dmemo, memo_n = {}, {}, 0      -- dmemo: the decorator's, below

  -- Where a hit on a memo entry is checked without a call: the store's
  -- count of freed items (once the store is open) and the offsets in an
  -- item (csrc/store_memory.h, cachy_memory_get_view).
  local view = ffi_new("cachy_jit_view")
  local STAMP_AT, EXPIRES_AT, USED_AT = 0, 0, 0
  local freed
  local function see()
    if freed == nil and api.view(h, view) == 0 then
      freed = view.freed
      STAMP_AT, EXPIRES_AT, USED_AT =
        tonumber(view.stamp_at), tonumber(view.expires_at), tonumber(view.used_at)
    end
    return freed ~= nil
  end

  -- Whether e's item is still the one e read and live, a hit, as the
  -- store's touch decides it, but without a call where no clock is needed
  -- (an item that never expires) or nginx's is at hand: the item is marked
  -- as used, and eviction moves a marked item to the newest end, as the
  -- touch would have (the hit is counted here, not in the store).
  local function hit(e)
    if e.touch then return c_touch(h, e.item, e.stamp, e.gen) == 1 end
    if tonumber(freed[0]) ~= e.gen then return false end
    local p = ffi_cast(ITEM, e.item)
    if ffi_cast(U64, p + STAMP_AT)[0] ~= e.stamp then return false end
    local expires = ffi_cast(I64, p + EXPIRES_AT)[0]
    if expires ~= 0 then
      if not NGX_CLOCK then return c_touch(h, e.item, e.stamp, e.gen) == 1 end
      if expires <= C.ngx_current_msec then return false end
    end
    p[USED_AT] = 1
    return true
  end

  -- Whether hits on the item just read or written go to the store's
  -- touch: it has a lifetime, and there is no clock at hand to check it
  -- (outside nginx). Checking its reference first would cost as much again.
  local function by_touch()
    return not NGX_CLOCK and ffi_cast(I64, ffi_cast(ITEM, out.item) + EXPIRES_AT)[0] ~= 0
  end

  local function fail()
    return nil, ffi_string(err.msg), ffi_string(api.code_name(err.code))
  end

  local function corrupt(key, why)
    return nil, st:describe() .. ": value of key '" .. quote_key(key) .. "' cannot be decoded: "
      .. tostring(why), "corrupt"
  end

  -- Whether the bytes just read are a stale-serving envelope (its first
  -- byte, 0xC1, is one MessagePack never writes): what such an item reads
  -- as depends on its windows, which only the C path checks.
  local function enveloped()
    return tonumber(out.len) > 0 and ffi_cast(BYTES, out.ptr)[0] == 0xC1
  end

  -- The value in the bytes just read for key: true, value; or nil, err, code.
  local function read(key)
    local p, n = ffi_cast(BYTES, out.ptr), tonumber(out.len)
    local ok, v = value_of(p, n)
    if ok then return true, v end
    local dok, dv = core_decode(ffi_string(p, n))
    if dok then return true, dv end
    return corrupt(key, dv)
  end

  -- Keeps v as what key's item (the one out refers to) reads as; e: key's
  -- entry, if it has one.
  local function remember(key, e, v)
    if out.item == 0 or (type(v) == "string" and #v > MEMO_VALUE_MAX) or not see() then return end
    if e == nil then
      if memo_n >= MEMO_MAX then memo, dmemo, memo_n = {}, {}, 0 end
      e = {}
      memo[key] = e
      memo_n = memo_n + 1
    end
    e.item, e.stamp, e.gen, e.value = tonumber(out.item), tonumber(out.stamp), tonumber(out.gen), v
    e.touch = by_touch()
  end

  local fast = {}
  for name, fn in pairs(cfast) do fast[name] = fn end
  fast.jit_counts = counts

  -- get(self, key, default): what lcachy_fast.c's get answers (the value;
  -- on a miss the default, or nil, nil, nil, true for the caller to call
  -- a function default; nil, err, code).
  function fast.get(self, key, default)
    local tk = type(key)
    if tk == "number" then
      key = tostring(key)
    elseif tk ~= "string" or key == "" or type(self) ~= "table" then
      if type(self) == "table" then
        local why = tk == "string" and "key must not be empty"
          or "key must be a non-empty string or a number, got " .. tk
        -- 3: the caller of the repository's get, which called this
        error("bad argument #1 to 'get' (" .. why .. ")", 3)
      end
      return cget(self, key, default)
    end
    local e = memo[key]
    if e ~= nil and hit(e) then
      counts.hits = counts.hits + 1
      return e.value
    end
    local rc = c_get(h, key, #key, out, err)
    -- an item kept for stale serving: the C path reads its envelope
    if rc == 1 and enveloped() then return cget(self, key, default) end
    if rc == 1 then
      counts.hits = counts.hits + 1
      local ok, v, code = read(key)
      if not ok then return nil, v, code end
      if type(v) ~= "table" then remember(key, e, v) end
      return v
    end
    if rc < 0 then return fail() end
    counts.misses = counts.misses + 1
    if type(default) == "function" then return nil, nil, nil, true end
    return default
  end

  -- put(self, key, value [, ttl]) for a string, number or boolean value
  -- and a lifetime in minutes (or none) that is not over: the C function
  -- takes everything else, misuse included, and reports it as a method.
  function fast.put(self, key, value, ttl)
    local tk, tv = type(key), type(value)
    local ms
    if ttl == nil then
      ms = default_ms
    elseif type(ttl) == "number" and ttl > 0 then
      ms = ceil(ttl * 60000)
      if ms >= 9.2e18 then ms = 0 end
    end
    if tk == "number" then key = tostring(key) end
    if ms == nil or ms < 0 or type(self) ~= "table" or (tk ~= "string" and tk ~= "number")
        or key == "" then
      return cput(self, key, value, ttl)
    end
    local rc
    if tv == "string" then
      rc = c_put_string(h, key, #key, value, #value, ms, out, err)
      -- a string reads back as itself: the next get can be a touch
      if rc == 0 then remember(key, memo[key], value) end
    elseif tv == "number" then
      rc = c_put_number(h, key, #key, value, ms, err)
    elseif tv == "boolean" then
      rc = c_put_boolean(h, key, #key, value and 1 or 0, ms, err)
    else
      return cput(self, key, value, ttl)
    end
    if rc < 0 then return fail() end
    counts.writes = counts.writes + 1
    return true
  end

  -- Describes argument i (0-based) in args; false for a kind it cannot hold.
  local function set_arg(i, v)
    local t = type(v)
    local a = args[i]
    if t == "string" then
      a.tag, a.str, a.len = 83, v, #v          -- 'S'
    elseif t == "number" then
      a.tag, a.num = 68, v                     -- 'D'
    elseif t == "nil" then
      a.tag = 78                               -- 'N'
    elseif t == "boolean" then
      a.tag = v and 84 or 70                   -- 'T', 'F'
    else
      return false
    end
    return true
  end

  -- A tuple the shapes below do not cover, decoded in C: true, results...;
  -- false, key, err, code, args... for bytes that are not one.
  local function other_results(...)
    local key = ffi_string(out.key, out.klen)
    local got = pack(core_decode_tuple(ffi_string(out.ptr, out.len)))
    if got[1] ~= nil then return true, unpack(got, 2, got.n) end
    local _, e, c = corrupt(key, got[2])
    return false, key, e, c, ...
  end

  -- The results in the bytes just read when they are an array of up to 3
  -- of the kinds element reads: their count, then the results; else
  -- nothing.
  local function results()
    local p, n = ffi_cast(BYTES, out.ptr), tonumber(out.len)
    local b = n > 0 and p[0] or 0
    if b < 0x90 or b > 0x93 then return end
    local count, off = b - 0x90, 1
    local v1, v2, v3
    if count >= 1 then v1, off = element(p, off, n) end
    if count >= 2 and off then v2, off = element(p, off, n) end
    if count >= 3 and off then v3, off = element(p, off, n) end
    if off == n then return count, v1, v2, v3 end
  end

  -- tuple_get(prefix, ...): what lcachy_fast.c's tuple_get answers: true,
  -- results... on a hit; false, key, err, code, args... otherwise.
  -- The decorator's twin of memo, for calls of up to two arguments: per
  -- prefix, then by the arguments (1 and 1.0 are one table key as they
  -- are one cache key; a nil argument is NIL), the results a read found,
  -- when none is a table, with the reference to their item. Counted in
  -- the same bound as memo.
  local NIL = {}

  -- t[k]; a new table put there when it is missing and create is true.
  local function sub(t, k, create)
    local v = t[k]
    if v == nil and create then
      v = {}
      t[k] = v
    end
    return v
  end

  -- The entry of a call, or nil; with create, made when missing.
  local function dentry(prefix, n, a1, a2, create)
    local t = sub(dmemo, prefix, create)
    if t == nil then return nil end
    if n == 0 then return sub(t, 0, create) end
    t = sub(t, n, create)
    if t == nil then return nil end
    local k1 = a1 == nil and NIL or a1
    if n == 1 then return sub(t, k1, create) end
    t = sub(t, k1, create)
    if t == nil then return nil end
    return sub(t, a2 == nil and NIL or a2, create)
  end

  local function long(v)
    return type(v) == "string" and #v > MEMO_VALUE_MAX
  end

  -- Keeps count results as what the call's item (the one out refers to)
  -- reads as.
  local function dremember(prefix, n, a1, a2, count, v1, v2, v3)
    if out.item == 0 or n > 2 or a1 ~= a1 or a2 ~= a2 or long(a1) or long(a2)
        or long(v1) or long(v2) or long(v3) or not see() then
      return
    end
    if memo_n >= MEMO_MAX then memo, dmemo, memo_n = {}, {}, 0 end
    local e = dentry(prefix, n, a1, a2, true)
    if e.count == nil then memo_n = memo_n + 1 end
    e.item, e.stamp, e.gen = tonumber(out.item), tonumber(out.stamp), tonumber(out.gen)
    e.touch = by_touch()
    e.count, e.v1, e.v2, e.v3 = count, v1, v2, v3
  end

  function fast.tuple_get(prefix, ...)
    local n = select("#", ...)
    if n > MAX_ARGS or type(prefix) ~= "string" then return ctuple_get(prefix, ...) end
    local a1, a2, a3, a4 = ...
    if n <= 2 and a1 == a1 and a2 == a2 then
      local e = dentry(prefix, n, a1, a2, false)
      if e ~= nil and hit(e) then
        counts.hits = counts.hits + 1
        local count = e.count
        if count == 2 then return true, e.v1, e.v2 end
        if count == 1 then return true, e.v1 end
        if count == 3 then return true, e.v1, e.v2, e.v3 end
        return true
      end
    end
    if (n >= 1 and not set_arg(0, a1)) or (n >= 2 and not set_arg(1, a2))
        or (n >= 3 and not set_arg(2, a3)) or (n >= 4 and not set_arg(3, a4)) then
      return ctuple_get(prefix, ...)
    end
    local rc = c_tuple_get(h, prefix, #prefix, args, n, out, err)
    if rc == 1 and enveloped() then return ctuple_get(prefix, ...) end
    if rc == 1 then
      counts.hits = counts.hits + 1
      -- (no varargs passed on here: LuaJIT compiles that only for
      -- varargs that came within the trace)
      local count, v1, v2, v3 = results()
      if count ~= nil then dremember(prefix, n, a1, a2, count, v1, v2, v3) end
      if count == 2 then return true, v1, v2 end
      if count == 1 then return true, v1 end
      if count == 3 then return true, v1, v2, v3 end
      if count == 0 then return true end
      return other_results(...)
    end
    local key = ffi_string(out.key, out.klen)
    if rc < 0 then return false, key, ffi_string(err.msg), ffi_string(api.code_name(err.code)), ... end
    counts.misses = counts.misses + 1
    return false, key, nil, nil, ...
  end

  return fast
end

return M
