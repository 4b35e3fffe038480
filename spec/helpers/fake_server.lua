-- spec/helpers/fake_server.lua: starts spec/helpers/fake_server.py (a server
-- that never answers, answers every request with fixed bytes, or resets the
-- connection mid-request) on a free 127.0.0.1 port, and stops it by PID.
-- Also gives a port nothing listens on.
local util = require("helpers.util")

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/helpers"

local sh, quote = util.sh, util.q

local Fake = {}
Fake.__index = Fake

function Fake:stop()
  os.execute(string.format("kill %d 2>/dev/null", self.pid))
end

-- mode: "silent" | "reply" | "hangup"; reply: the bytes to answer with,
-- Python-escaped. The PID is the one the server reports (python3 may be a wrapper).
function M.start(mode, reply)
  local outfile = os.tmpname()
  local launcher = tonumber(sh(string.format("python3 %s/fake_server.py %s %s >%s 2>&1 & echo $!",
    here, mode, reply and quote(reply) or "", outfile)):match("%d+"))
  local port, pid
  for _ = 1, 100 do
    local f = io.open(outfile)
    local line = f and f:read("*l")
    if f then f:close() end
    port, pid = (line or ""):match("^(%d+) (%d+)$")
    if port then break end
    os.execute("sleep 0.05")
  end
  os.remove(outfile)
  if not port then
    os.execute(string.format("kill %d 2>/dev/null", launcher))
    error("could not start fake_server.py " .. mode)
  end
  local pidfile = os.getenv("CACHY_PIDFILE")
  if pidfile then
    local f = io.open(pidfile, "a")
    if f then f:write(pid, "\n") f:close() end
  end
  return setmetatable({ pid = tonumber(pid), port = tonumber(port) }, Fake)
end

-- A 127.0.0.1 port that was free a moment ago: connecting to it is refused.
function M.closed_port()
  local out = sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()']])
  return assert(tonumber(out:match("%d+")), "no free port: " .. out)
end

return M
