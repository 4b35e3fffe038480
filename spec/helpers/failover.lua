-- spec/helpers/failover.lua: the loop of the failover cases (a Redis master
-- SIGKILLed under puts and gets), run by busted specs and by the nginx
-- suite's cases alike: each passes its own kill, clock and sleep.
local M = {}

-- Puts "v<i> 0" under prefix .. i (i = 1 .. n), each put's results going
-- to o.first_put(i, ...), sleeps 0.3 s and calls o.kill(); then, round
-- after round, puts "v<i> <round>" under each key and reads it back,
-- until a round has no error or o.limit seconds have passed since the
-- kill. Each error (a put failing, or a get's nil, err) goes to
-- o.error(err). A read may give any value once written under its key (a
-- failover may lose the latest writes); another one counts as wrong.
-- o: cache, prefix, n, limit, first_put, kill, error, now() (seconds),
-- sleep(seconds). Returns { clean = a round without error came, wrong =,
-- errors =, rounds =, back = seconds from the kill to the last error }.
function M.run(o)
  local cache, prefix, n = o.cache, o.prefix, o.n
  local written = {}
  for i = 1, n do
    o.first_put(i, cache:put(prefix .. i, "v" .. i .. " 0"))
    written[prefix .. i] = { ["v" .. i .. " 0"] = true }
  end
  o.sleep(0.3)
  o.kill()
  local killed, last_error = o.now(), nil
  local round, clean, wrong, errors = 0, false, 0, 0
  repeat
    round, clean = round + 1, true
    for i = 1, n do
      local key, value = prefix .. i, "v" .. i .. " " .. round
      written[key][value] = true
      local ok, err = cache:put(key, value)
      local got
      if ok then got, err = cache:get(key) end
      if not ok or (got == nil and err) then
        o.error(err)
        errors, last_error, clean = errors + 1, o.now(), false
      elseif got ~= nil and not written[key][got] then
        wrong = wrong + 1
      end
    end
    if not clean then o.sleep(0.05) end
  until clean or o.now() - killed > o.limit
  return { clean = clean, wrong = wrong, errors = errors, rounds = round, back = (last_error or killed) - killed }
end

return M
