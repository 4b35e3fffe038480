-- spec/31-redis_proto_spec.lua: the Redis protocol module without sockets
-- (csrc/redis_proto.c through core.redis_command and core.redis_reader),
-- which the cosocket transport (lua/cachy/resty/redis.lua) drives: command
-- bytes, every reply type, replies split anywhere, several in one feed,
-- the limits refused before allocation, and failures that stay failures.
local core = require("cachy.core")

local MIB = 1024 * 1024

-- Every reply in bytes, fed in pieces of `step` bytes.
local function replies(bytes, step, depth, elems, bulk)
  local r = core.redis_reader(depth or 2, elems or 100, bulk)
  local out = {}
  for i = 1, #bytes, step do
    r:feed(bytes:sub(i, i + step - 1))
    while true do
      local v, err, code = r:reply()
      if v == nil then
        if err then return out, err, code end
        break
      end
      out[#out + 1] = v
    end
  end
  return out
end

describe("redis protocol", function()
  describe("redis_command", function()
    it("formats arguments as a RESP array of bulk strings, bytes as they are", function()
      assert.are.equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\n\0\r\n",
        core.redis_command("SET", "k", "a\r\n\0"))
      assert.are.equal("*1\r\n$4\r\nPING\r\n", core.redis_command("PING"))
      assert.are.equal("*2\r\n$4\r\nINCR\r\n$0\r\n\r\n", core.redis_command("INCR", ""))
      assert.are.equal("*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$2\r\n-5\r\n", core.redis_command("INCRBY", "n", -5))
    end)

    it("takes a list, of any length", function()
      local args = { "MGET" }
      for i = 1, 1000 do args[#args + 1] = "k" .. i end
      local bytes = core.redis_command(args)
      assert.are.equal(core.redis_command("MGET", "k1", "k2"), core.redis_command({ "MGET", "k1", "k2" }))
      assert.are.equal("*1001\r\n$4\r\nMGET\r\n$2\r\nk1\r\n", bytes:sub(1, 25))
      assert.are.equal("$5\r\nk1000\r\n", bytes:sub(-11))
    end)

    it("raises for no command and for arguments that are not strings", function()
      assert.has_error(function() core.redis_command() end)
      assert.has_error(function() core.redis_command({}) end)
      assert.has_error(function() core.redis_command("GET", {}) end)
      assert.has_error(function() core.redis_command({ "GET", true }) end,
        "bad argument #1 to 'redis_command' (element 2 is a boolean, not a string)")
    end)
  end)

  describe("redis_reader", function()
    local all = table.concat({
      "+OK\r\n", "-ERR unknown command\r\n", ":42\r\n", ":-7\r\n", "$5\r\nhe\r\nl\r\n",
      "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n", "*3\r\n$1\r\na\r\n$-1\r\n:1\r\n",
      "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
    })
    local want = {
      { ok = "OK" }, { err = "ERR unknown command" }, 42, -7, "he\r\nl", "", false, false, {},
      { "a", false, 1 }, { "0", { "x", "y" } },
    }

    it("gives every reply type, whole or in pieces of any size", function()
      for _, step in ipairs({ 1, 2, 3, 7, #all }) do
        local got, err = replies(all, step)
        assert.is_nil(err)
        assert.are.same(want, got)
      end
    end)

    it("gives nil while a reply is incomplete, then the reply", function()
      local r = core.redis_reader()
      assert.is_nil(r:reply())
      r:feed("$3\r\nab")
      local v, err = r:reply()
      assert.is_nil(v)
      assert.is_nil(err)
      assert.is_true(r:buffered() > 0)
      r:feed("c\r\n+PONG\r")
      assert.are.equal("abc", r:reply())
      assert.is_nil(r:reply())
      r:feed("\n")
      assert.are.same({ ok = "PONG" }, r:reply())
      assert.are.equal(0, r:buffered())
    end)

    it("keeps 64-bit integers exact where Lua has integers", function()
      local got = replies(":9223372036854775807\r\n:-9223372036854775808\r\n", 100)
      if math.type then
        assert.are.equal(math.maxinteger, got[1])
        assert.are.equal(math.mininteger, got[2])
      else
        assert.are.equal(2 ^ 63, got[1])
        assert.are.equal(-2 ^ 63, got[2])
      end
    end)

    it("refuses a string longer than max_bulk when its length arrives", function()
      local r = core.redis_reader(0, 0, 10)
      r:feed("$10\r\n0123456789\r\n")
      assert.are.equal("0123456789", r:reply())
      r:feed("$11\r\n01234567890\r\n")
      assert.are.same({ nil, "reply refused: a string of 11 bytes (at most 10)", "corrupt" },
        { r:reply() })
    end)

    it("refuses arrays deeper or longer than allowed", function()
      local _, err, code = replies("*1\r\n$1\r\na\r\n", 100, 0, 10)
      assert.are.equal("reply refused: an array at depth 1 (at most 0)", err)
      assert.are.equal("corrupt", code)
      _, err = replies("*1\r\n*1\r\n$1\r\na\r\n", 100, 1, 10)
      assert.are.equal("reply refused: an array at depth 2 (at most 1)", err)
      _, err = replies("*3\r\n:1\r\n:2\r\n:3\r\n", 100, 1, 2)
      assert.are.equal("reply refused: an array of 3 elements (at most 2)", err)
      -- announced, not sent: refused before anything is allocated for it
      _, err = replies("*2147483647\r\n", 100, 1, 1000)
      assert.are.equal("reply refused: an array of 2147483647 elements (at most 1000)", err)
      _, err = replies("$536870913\r\n", 100)
      assert.is_nil(err)       -- the length alone: nothing to refuse yet
    end)

    it("refuses more buffered bytes than one reply may hold", function()
      local r = core.redis_reader(0, 0, 10)
      r:feed("$100000\r\n" .. string.rep("x", 64 * 1024))
      assert.is_nil(r:reply())
      r:feed(string.rep("x", 100))
      assert.are.same({ nil, "reply refused: larger than 65546 bytes", "too_big" }, { r:reply() })
    end)

    it("reports a protocol error, and keeps reporting it", function()
      local r = core.redis_reader()
      r:feed("?what\r\n")
      local v, err, code = r:reply()
      assert.is_nil(v)
      assert.are.equal("protocol error: Protocol error, got \"?\" as reply type byte", err)
      assert.are.equal("closed", code)
      r:feed("+OK\r\n")
      assert.are.same({ nil, err, "closed" }, { r:reply() })
    end)

    it("reads a large bulk string split into many feeds", function()
      local big = string.rep("0123456789abcdef", MIB / 16)
      local got, err = replies("$" .. #big .. "\r\n" .. big .. "\r\n:1\r\n", 16384)
      assert.is_nil(err)
      assert.are.equal(2, #got)
      assert.are.equal(big, got[1])
      assert.are.equal(1, got[2])
    end)

    it("raises once closed; closing twice is fine", function()
      local r = core.redis_reader()
      r:close()
      r:close()
      assert.has_error(function() r:feed("+OK\r\n") end, "attempt to use a closed redis reader")
      assert.has_error(function() r:reply() end, "attempt to use a closed redis reader")
    end)

    it("checks its limits' arguments", function()
      assert.has_error(function() core.redis_reader(8) end)
      assert.has_error(function() core.redis_reader(1, -1) end)
    end)
  end)

  describe("redis_reply_of", function()
    it("gives the reply when the bytes are exactly one whole reply, else nothing", function()
      assert.are.equal("abc", core.redis_reply_of("$3\r\nabc\r\n"))
      assert.are.equal(5, core.redis_reply_of(":5\r\n"))
      assert.are.same({ ok = "OK" }, core.redis_reply_of("+OK\r\n"))
      assert.are.same({ err = "ERR no" }, core.redis_reply_of("-ERR no\r\n"))
      assert.are.equal(false, core.redis_reply_of("$-1\r\n"))
      assert.are.same({ "a", false }, core.redis_reply_of("*2\r\n$1\r\na\r\n$-1\r\n", 1, 10))
      assert.are.equal(0, select("#", core.redis_reply_of("$3\r\nab")))          -- not whole
      assert.are.equal(0, select("#", core.redis_reply_of(":1\r\n:2\r\n")))    -- two replies
      assert.are.equal(0, select("#", core.redis_reply_of("*1\r\n:1\r\n")))    -- an array where none is allowed
      assert.are.equal(0, select("#", core.redis_reply_of("?garbage\r\n")))     -- a protocol error
      -- what a call left behind never reaches the next one
      assert.are.equal("xy", core.redis_reply_of("$2\r\nxy\r\n"))
    end)
  end)

  describe("cluster", function()
    it("puts keys in Redis Cluster's hash slots, {hash tags} included", function()
      -- values from the Redis Cluster specification and CLUSTER KEYSLOT
      assert.are.equal(12182, core.redis_slot("foo"))
      assert.are.equal(5061, core.redis_slot("bar"))
      assert.are.equal(866, core.redis_slot("hello"))
      assert.are.equal(7365, core.redis_slot("c"))
      assert.are.equal(0, core.redis_slot(""))
      assert.are.equal(core.redis_slot("user1000"), core.redis_slot("{user1000}.following"))
      assert.are.equal(core.redis_slot("user1000"), core.redis_slot("x{user1000}{y}"))
      -- an empty tag, or none closed, hashes the whole key
      assert.are_not.equal(core.redis_slot("{}"), core.redis_slot("{}x"))
      assert.are.equal(core.redis_slot("a{b"), core.redis_slot("a{b"))
      for i = 1, 500 do
        local s = core.redis_slot("k" .. i .. "\0\255")
        assert.is_true(s >= 0 and s < 16384)
      end
    end)

    it("reads MOVED and ASK, IPv6 and an empty host included, and nothing else", function()
      assert.are.same({ "MOVED", 3999, "127.0.0.1", 6381 }, { core.redis_redirect("MOVED 3999 127.0.0.1:6381") })
      assert.are.same({ "ASK", 16383, "::1", 7000 }, { core.redis_redirect("ASK 16383 ::1:7000") })
      assert.are.same({ "MOVED", 0, "", 7 }, { core.redis_redirect("MOVED 0 :7") })
      for _, bad in ipairs({ "MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h",
                             "MOVED 1 h:1 extra", "ASK", "ERR MOVED 1 h:1", "CLUSTERDOWN The cluster is down", "" }) do
        assert.is_nil(core.redis_redirect(bad), bad)
      end
    end)

    it("reads a CLUSTER SLOTS reply into the slot map, and refuses other shapes", function()
      local m = core.redis_slot_map()
      assert.are.equal(1, m:add("seed", 1))
      assert.is_nil(m:owner("foo"))
      assert.is_true(m:read({
        { 0, 5460, { "10.0.0.1", 7000, "id1" }, { "10.0.0.4", 7003, "id4" } },
        { 5461, 10922, { "", 7001, "id2" } },                      -- empty: the node asked
        { 10923, 16383, { "10.0.0.3", 7002, "id3", { "hostname", "c" } } },
      }, "10.0.0.9"))
      assert.are.same({ "10.0.0.3", 7002 }, { m:node(m:owner("foo")) })      -- slot 12182
      assert.are.same({ "10.0.0.9", 7001 }, { m:node(m:owner("c")) })        -- slot 7365
      assert.are.same({ "10.0.0.1", 7000 }, { m:node(m:owner("bar")) })      -- slot 5061
      assert.are.equal(4, #m:masters() + 1)                                   -- the seed serves none
      m:set(12182, m:add("10.0.0.1", 7000))
      assert.are.same({ "10.0.0.1", 7000 }, { m:node(m:owner("foo")) })
      for _, bad in ipairs({
        "not an array",
        { { 5, 1, { "h", 1 } } },
        { { 0, 16384, { "h", 1 } } },
        { { 0, 1, { "h", 0 } } },
        { { 0, 1 } },
        { { 0, 1, "h" } },
      }) do
        local ok, why = m:read(bad, "h")
        assert.is_nil(ok)
        assert.is_truthy(why:find("CLUSTER SLOTS: ", 1, true), why)
      end
      -- a refused reply leaves the map as it was
      assert.are.same({ "10.0.0.1", 7000 }, { m:node(m:owner("foo")) })
      assert.has_error(function() m:node(99) end)
      assert.has_error(function() m:set(16384, 1) end)
    end)
  end)
end)
