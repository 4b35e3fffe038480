-- cachy.tags: tagged items by namespace versioning, on any store, through
-- the store's bytes interface (so a store written in Lua may yield here).
--
-- Each tag has a version kept in the store itself. A tagged item lives
-- under a hash of its ordered tags' versions, so bumping one tag's version
-- (flush) makes every item written under it unreachable at once. So that
-- unreachable items do not pile up on stores that never evict, every write
-- is also recorded under each tag's current version (a counter and one
-- slot per write, with the item's lifetime); a flush deletes what the old
-- version recorded, and what the item's other tags recorded of it.
--
-- A write racing a flush: the writer records before it writes and reads
-- the versions again after; the flusher bumps before it deletes. Either
-- the flusher sees the record (and deletes the item, or the writer's
-- recheck does when the item lands after the deletion), or the writer
-- sees the new version and removes what it wrote. No item survives the
-- flush under the old namespace.
local core = require("cachy.core")

local hash, parse_int, fresh_version = core.hash, core.parse_int, core.fresh_version

local M = {}

local function tag_key(tag, suffix)
  return "cachy:tag:" .. hash(tag):sub(1, 16) .. ":" .. suffix
end

-- The tag's current version; a missing one is created when `create`, else 0.
local function version(st, tag, create)
  local key = tag_key(tag, "version")
  for _ = 1, 3 do
    local bytes, err, code = st:get(key)
    if err then return nil, err, code end
    if bytes ~= nil then
      local v = parse_int(bytes)
      if v then return v end
      -- not ours to read: a foreign value under our key; replace it
      local _, ferr, fcode = st:forget(key)
      if ferr then return nil, ferr, fcode end
    elseif not create then
      return 0
    else
      local fresh = fresh_version(tag)
      local added, aerr, acode = st:add(key, string.format("%d", fresh), 0)
      if aerr then return nil, aerr, acode end
      if added then return fresh end
      -- another writer created it first: read theirs
    end
  end
  return nil, st:describe() .. ": tag version keeps changing", "backend"
end

-- The namespace of an ordered tag list: a hash of the versions.
local function namespace(st, tags)
  local parts = {}
  for i = 1, #tags do
    local v, err, code = version(st, tags[i], true)
    if v == nil then return nil, err, code end
    parts[i] = string.format("%d|", v)
  end
  return hash(table.concat(parts))
end

-- The key the store sees for key under tags, and the namespace it was made in.
function M.item_key(st, tags, key)
  local ns, err, code = namespace(st, tags)
  if ns == nil then return nil, err, code end
  return "cachy:tagged:" .. ns .. ":" .. key, ns
end

-- A record names the item's key and the record slots its other tags hold
-- for the same write, so that flushing one tag also removes what the
-- others recorded of the item (they would pile up until those tags are
-- flushed). Netstring-like: "<len>:<bytes>" after the marker; a record
-- without the marker holds just the item's key.
local MARK = "cachy-rec1\0"

local function record_value(item_key, slots, self)
  local parts = { MARK, #item_key, ":", item_key }
  for j = 1, #slots do
    if j ~= self then
      parts[#parts + 1] = #slots[j]
      parts[#parts + 1] = ":"
      parts[#parts + 1] = slots[j]
    end
  end
  return table.concat(parts)
end

-- The item's key and the sibling record slots of a record.
local function parse_record(v)
  if v:sub(1, #MARK) ~= MARK then return v, {} end
  local out, pos = {}, #MARK + 1
  while pos <= #v do
    local colon = v:find(":", pos, true)
    local len = colon and tonumber(v:sub(pos, colon - 1))
    if not len then break end
    out[#out + 1] = v:sub(colon + 1, colon + len)
    pos = colon + len + 1
  end
  return table.remove(out, 1), out
end

-- Before a tagged write: record item_key under each tag's version.
local function record(st, tags, item_key, ms)
  local slots = {}
  for i = 1, #tags do
    local v, err, code = version(st, tags[i], true)
    if v == nil then return nil, err, code end
    local slot
    slot, err, code = st:incr(tag_key(tags[i], string.format("%d:count", v)), 1)
    if slot == nil then return nil, err, code end
    slots[i] = tag_key(tags[i], string.format("%d:%d", v, slot))
  end
  for i = 1, #tags do
    local ok, err, code = st:put(slots[i], record_value(item_key, slots, i), ms)
    if not ok then return nil, err, code end
  end
  return true
end

-- After a tagged write: if a flush moved the namespace meanwhile, remove
-- what was written. false kept, true removed, or nil, err, code.
local function recheck(st, tags, item_key, ns)
  local now, err, code = namespace(st, tags)
  if now == nil then return nil, err, code end
  if now == ns then return false end
  local _, ferr, fcode = st:forget(item_key)
  if ferr then return nil, ferr, fcode end
  return true
end

-- A tagged put (is_add false) or add of bytes under key: recorded first,
-- checked against a racing flush after. What the store's put or add
-- returns; an add whose item a flush removed meanwhile is false.
function M.write(st, tags, key, bytes, ms, is_add)
  local ikey, ns, code = M.item_key(st, tags, key)
  if ikey == nil then return nil, ns, code end
  local ok, err
  ok, err, code = record(st, tags, ikey, ms)
  if not ok then return nil, err, code end
  if is_add then ok, err, code = st:add(ikey, bytes, ms) else ok, err, code = st:put(ikey, bytes, ms) end
  if ok == nil then return nil, err, code end
  local moved
  moved, err, code = recheck(st, tags, ikey, ns)
  if moved == nil then return nil, err, code end
  if moved and is_add then return false end
  return ok
end

-- A tagged increment; a counter is recorded once, when it is created, not
-- at every step. Messages name key as the caller gave it.
function M.incr(st, tags, key, by, verb)
  local ikey, ns, code = M.item_key(st, tags, key)
  if ikey == nil then return nil, ns, code end
  local old, err
  old, err, code = st:get(ikey)
  if err then return nil, err, code end
  if old == nil then
    local ok
    ok, err, code = record(st, tags, ikey, 0)
    if not ok then return nil, err, code end
  end
  local v
  v, err, code = st:incr(ikey, by, key, verb)
  if v == nil then return nil, err, code end
  local moved
  moved, err, code = recheck(st, tags, ikey, ns)
  if moved == nil then return nil, err, code end
  return v
end

-- Deletes what the tag's version v recorded.
local function drop_records(st, tag, v)
  local count_key = tag_key(tag, string.format("%d:count", v))
  local bytes, err, code = st:get(count_key)
  if err then return nil, err, code end
  local count = bytes and parse_int(bytes) or 0
  for i = 1, count do
    local slot = tag_key(tag, string.format("%d:%d", v, i))
    local rec
    rec, err, code = st:get(slot)
    if err then return nil, err, code end
    if rec then
      local item, siblings = parse_record(rec)
      siblings[#siblings + 1] = item
      for j = 1, #siblings do
        local _, ferr, fcode = st:forget(siblings[j])
        if ferr then return nil, ferr, fcode end
      end
    end
    local _, ferr, fcode = st:forget(slot)
    if ferr then return nil, ferr, fcode end
  end
  local _, ferr, fcode = st:forget(count_key)
  if ferr then return nil, ferr, fcode end
  return true
end

-- Bumps each tag's version and deletes what the old version recorded.
function M.flush(st, tags)
  for i = 1, #tags do
    local v, err, code = version(st, tags[i], false)
    if v == nil then return nil, err, code end
    if v ~= 0 then      -- 0: never written, nothing to flush
      -- bump first: writes from now on go to the new namespace
      local bumped
      bumped, err, code = st:incr(tag_key(tags[i], "version"), 1)
      if bumped == nil then return nil, err, code end
      local ok
      ok, err, code = drop_records(st, tags[i], v)
      if not ok then return nil, err, code end
    end
  end
  return true
end

return M
