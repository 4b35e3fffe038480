-- spec/helpers/forked.lua: what a forked child does with a store its
-- parent opened (OpenResty's master before it forks the workers, a script
-- that forks): it opens a connection of its own, so no reply reaches the
-- wrong process, and closing the store leaves the parent's connection open.
local assert = require("luassert")
local process = require("spec_process")

local ROUNDS = 300

-- new_cache(): a manager on the server. connections() (optional): how
-- many connections the server has accepted so far, asked by another client
-- (whose own connection counts).
return function(new_cache, connections)
  local c = new_cache()
  assert.are.equal(true, c:put("shared", "parent"))       -- the parent's connection is open
  local before = connections and connections()
  local pid = process.fork()
  if pid == 0 then
    local ok = pcall(function()
      for i = 1, ROUNDS do
        assert(c:put("child:" .. i, i) == true)
        assert(c:get("child:" .. i) == i)
        assert(c:get("shared") == "parent")
      end
      c:close()
    end)
    process.exit(ok and 0 or 1)
  end
  -- The parent works at the same time, on the connection it had.
  local wrong = 0
  for i = 1, ROUNDS do
    if c:put("parent:" .. i, -i) ~= true then wrong = wrong + 1 end
    if c:get("parent:" .. i) ~= -i then wrong = wrong + 1 end
    if c:get("shared") ~= "parent" then wrong = wrong + 1 end
  end
  assert.are.equal(0, process.wait(pid), "the child saw a wrong value or an error")
  assert.are.equal(0, wrong, "wrong values or errors in the parent")
  assert.are.equal(ROUNDS, c:get("child:" .. ROUNDS))
  assert.are.equal("parent", c:get("shared"))
  -- The child's connection and this count's own: a parent reconnecting
  -- after the child ended its connection would add one more.
  if connections then assert.are.equal(before + 2, connections()) end
  c:close()
end
