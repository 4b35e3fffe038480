-- cachy.resty.socket: what the two cosocket stores (cachy.resty.redis,
-- cachy.resty.memcached) do alike with their sockets and their messages.
local format, floor = string.format, math.floor

local M = {}

-- Seconds as a configuration writes them, as the C drivers' messages show
-- them (cachy_format_seconds): 1 -> "1.0", 0.25 -> "0.25".
function M.seconds_text(v)
  local s = format("%.1f", v)
  if tonumber(s) ~= v then s = format("%g", v) end
  return s
end

-- Seconds as whole milliseconds for settimeouts: never less than asked, at
-- least 1.
function M.timeout_ms(secs)
  local ms = floor(secs * 1000)
  if ms < secs * 1000 then ms = ms + 1 end
  if ms < 1 then ms = 1 end
  return ms
end

-- Puts item p in the group of node i (groups: { [i] = { p, ... } }), and
-- i at the end of order when it is new: how a call on several keys makes
-- one batch per node, the nodes in the order first seen (memcached's
-- servers, a cluster's masters).
function M.group(groups, order, i, p)
  local g = groups[i]
  if not g then
    g = {}
    groups[i] = g
    order[#order + 1] = i
  end
  g[#g + 1] = p
end

-- Back to the pool after a call that fully succeeded (store: keepalive_ms,
-- pool_size); a socket closed on the way is left closed.
function M.release(store, sock)
  local ok = sock:setkeepalive(store.keepalive_ms, store.pool_size)
  if not ok then sock:close() end
end

return M
