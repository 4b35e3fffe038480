-- SIGSTOP that has taken effect. kill(2) returns once the signal is queued:
-- one thread of the target is woken to begin the group stop, and until it
-- runs, the other threads (memcached's workers, asleep in epoll_wait) still
-- answer requests that arrive. On a loaded machine that lasts milliseconds,
-- so a spec that stops a server waits until every thread is stopped.
local M = {}

-- Whether every thread of pid is stopped (state "T" in /proc/PID/task/*/stat).
function M.stopped(pid)
  local list = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  local tids = list:read("*a")
  list:close()
  local any = false
  for tid in tids:gmatch("%d+") do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/stat")
    if f then
      local line = f:read("*l") or ""
      f:close()
      if line:match("^%d+ %b() (%a)") ~= "T" then return false end
      any = true
    end
  end
  return any
end

-- Sends SIGSTOP to pid and waits (through sleep(seconds)) until it holds.
function M.stop(pid, sleep)
  os.execute("kill -STOP " .. pid)
  for _ = 1, 2000 do
    if M.stopped(pid) then return end
    sleep(0.001)
  end
  error("process " .. pid .. " did not stop on SIGSTOP", 2)
end

return M
