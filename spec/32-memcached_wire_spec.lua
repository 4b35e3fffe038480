-- spec/32-memcached_wire_spec.lua: memcached's wire without sockets
-- (csrc/memcached_wire.c through core.mc_*), which the cosocket transport
-- (lua/cachy/resty/memcached.lua) drives: wire keys, lifetimes, request
-- frames and response headers of the binary protocol, the counter steps,
-- statuses, and libmemcached's continuum with servers left out. That the
-- continuum picks the blocking driver's servers, on real servers, is
-- checked in spec/nginx (300 keys); here, its rules.
local core = require("cachy.core")

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function be(n, bytes)
  local t = {}
  for i = bytes, 1, -1 do
    t[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(t)
end

-- A response header as memcached writes it.
local function response(op, status, klen, elen, blen, opaque, cas)
  return "\129" .. string.char(op) .. be(klen, 2) .. string.char(elen) .. "\0" .. be(status, 2)
    .. be(blen, 4) .. be(opaque, 4) .. (cas or string.rep("\0", 8))
end

describe("memcached wire", function()
  describe("keys", function()
    it("leaves keys memcached can carry as they are", function()
      assert.are.equal("a:b", core.mc_key("a:b"))
      assert.are.equal(string.rep("k", 250), core.mc_key(string.rep("k", 250)))
      assert.are.equal("~!{}", core.mc_key("~!{}"))
    end)

    it("hashes other keys: readable head, ~h, 32 hex digits of XXH3-128", function()
      for _, k in ipairs({ "a b", "tab\tkey", "caf\195\169", string.rep("k", 251), "\0", "x\127" }) do
        local w = core.mc_key(k)
        assert.is_truthy(w:match("~h%x+$"), w)
        assert.are.equal(32, #w:match("~h(%x+)$"))
        assert.is_truthy(#w <= 64 + 2 + 32)
        assert.are.equal(core.mc_key(k), w, "stable")
      end
      assert.are.equal("a~h", core.mc_key("a b"):sub(1, 3))
      assert.are.equal(string.rep("k", 64) .. "~h", core.mc_key(string.rep("k", 251)):sub(1, 66))
      assert.are_not.equal(core.mc_key("a b"), core.mc_key("a  b"))
    end)

    it("hashes a key that looks like a hashed form, so no two keys share a wire key", function()
      local w = core.mc_key("a b")
      assert.are_not.equal(w, core.mc_key(w))
      assert.is_truthy(core.mc_key(w):match("~h%x+$"))
      -- upper-case hex is not the hashed form: left as it is
      local upper = "x~h" .. string.rep("A", 32)
      assert.are.equal(upper, core.mc_key(upper))
    end)
  end)

  describe("lifetimes", function()
    it("are whole seconds rounded up, 0 forever", function()
      assert.are.equal(0, core.mc_expiry(0))
      assert.are.equal(0, core.mc_expiry(nil))
      assert.are.equal(1, core.mc_expiry(1))
      assert.are.equal(1, core.mc_expiry(1000))
      assert.are.equal(2, core.mc_expiry(1001))
      assert.are.equal(2592000, core.mc_expiry(2592000 * 1000))
    end)

    it("past 30 days are absolute Unix times", function()
      local at = core.mc_expiry(2592001 * 1000)
      local want = os.time() + 2592001
      assert.is_truthy(math.abs(at - want) <= 2, tostring(at))
      assert.are.equal(4294967295, core.mc_expiry(1e300))
    end)
  end)

  describe("frames", function()
    it("formats a set: header, extras, key, value", function()
      local req = core.mc_request(0x01, "key", core.mc_store_extras(0, 60), "val", nil, 7)
      assert.are.equal("8001" .. "0003" .. "08" .. "00" .. "0000" .. "0000000e" .. "00000007"
        .. "0000000000000000" .. "00000000" .. "0000003c" .. hex("key") .. hex("val"), hex(req))
    end)

    it("carries a CAS and bytes of every value", function()
      local cas = "\1\2\3\4\5\6\7\8"
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      local req = core.mc_request(0x01, "k", core.mc_store_extras(0, 0), all, cas, 0)
      assert.are.equal(cas, req:sub(17, 24))
      assert.are.equal(all, req:sub(24 + 8 + 1 + 1))
      assert.are.equal(24 + 8 + 1 + 256, #req)
    end)

    it("formats requests without key or body (noop, flush)", function()
      assert.are.equal("800a" .. string.rep("0", 44), hex(core.mc_request(0x0a)))
      assert.are.equal(28, #core.mc_request(0x08, nil, "\0\0\0\0"))
    end)

    it("increment extras: delta modulo 2^64, initial 0, never create", function()
      assert.are.equal("0000000000000005" .. "0000000000000000" .. "ffffffff", hex(core.mc_incr_extras(5)))
      assert.are.equal("fffffffffffffffb", hex(core.mc_incr_extras(-5)):sub(1, 16))
      assert.are.equal("fffffffffffffffb", hex(core.mc_incr_extras(5, true)):sub(1, 16))
    end)

    it("refuses arguments the protocol cannot carry", function()
      assert.has_error(function() core.mc_request(256) end)
      assert.has_error(function() core.mc_request(1, string.rep("k", 65536)) end)
      assert.has_error(function() core.mc_request(1, "k", string.rep("e", 256)) end)
      assert.has_error(function() core.mc_request(1, "k", nil, "v", "short") end)
    end)

    it("reads a response header", function()
      local op, status, klen, elen, blen, opaque, cas = core.mc_header(
        response(0x0d, 0, 3, 4, 10, 4000000000, "abcdefgh"))
      assert.are.same({ 0x0d, 0, 3, 4, 10, 4000000000, "abcdefgh" }, { op, status, klen, elen, blen, opaque, cas })
      local _, st = core.mc_header(response(0x00, 0x82, 0, 0, 0, 0))
      assert.are.equal(0x82, st)
    end)

    it("refuses bytes that are not a response", function()
      local v, err = core.mc_header("\128" .. string.rep("\0", 23))
      assert.is_nil(v)
      assert.is_truthy(err:find("magic byte 0x80", 1, true))
      assert.has_error(function() core.mc_header("short") end)
    end)
  end)

  describe("counters", function()
    it("drops decr's space padding from numbers only", function()
      assert.are.equal("9", core.mc_unpad("9 "))
      assert.are.equal("-9", core.mc_unpad("-9  "))
      assert.are.equal("a ", core.mc_unpad("a "))
      assert.are.equal("  ", core.mc_unpad("  "))
      assert.are.equal("9", core.mc_unpad("9"))
    end)

    it("plans each step as the blocking driver does", function()
      assert.are.same({ "incr" }, { core.mc_incr_plan("10", 5) })
      assert.are.same({ "incr" }, { core.mc_incr_plan("10", -10) })
      assert.are.same({ "cas", -1, "-1" }, { core.mc_incr_plan("10", -11) })
      assert.are.same({ "cas", -2, "-2" }, { core.mc_incr_plan("-5", 3) })
      assert.are.same({ "cas", 1, "1" }, { core.mc_incr_plan("-5", 6) })
      assert.are.same({ "same", 7 }, { core.mc_incr_plan("7 ", 0) })
      assert.are.same({ "not_integer" }, { core.mc_incr_plan("x", 1) })
      assert.are.same({ "not_integer" }, { core.mc_incr_plan("", 1) })
      assert.are.same({ "not_integer" }, { core.mc_incr_plan("01", 1) })
      assert.are.same({ "wrapped" }, { core.mc_incr_plan("18446744073709551615", 1) })
      assert.are.same({ "not_integer" }, { core.mc_incr_plan("18446744073709551616", 1) })
    end)

    if math.type then    -- 64-bit integers: Lua 5.3 and later
      it("finds the overflow of int64", function()
        assert.are.same({ "overflow" }, { core.mc_incr_plan("9223372036854775807", 1) })
        assert.are.same({ "overflow" }, { core.mc_incr_plan("-9223372036854775808", -1) })
      end)

      it("reads the sum back from memcached's incr modulo 2^64", function()
        assert.are.same({ 15, false }, { core.mc_incr_result(be(15, 8), 5) })
        -- 3 - 5 raced below zero: the two's complement, to be rewritten signed
        assert.are.same({ -2, true }, { core.mc_incr_result("\255\255\255\255\255\255\255\254", -5) })
        -- INT64_MAX - 1 + 5: past int64, to be undone
        assert.is_nil(core.mc_incr_result("\128\0\0\0\0\0\0\3", 5))
      end)
    end

    it("rewrites a two's complement signed, and nothing else", function()
      assert.are.equal("-1", core.mc_repair("18446744073709551615"))
      assert.are.equal("-2", core.mc_repair("18446744073709551614 "))
      assert.is_nil(core.mc_repair("5"))
      assert.is_nil(core.mc_repair("x"))
    end)
  end)

  describe("statuses", function()
    it("words them as libmemcached does; unknown ones are failures", function()
      local text, failure = core.mc_status(0x01)
      assert.are.equal("not found", text)
      assert.is_false(failure)
      text, failure = core.mc_status(0x81)
      assert.is_string(text)
      assert.is_true(failure)
    end)
  end)

  describe("the continuum", function()
    local servers = { "10.0.0.1:11211", "10.0.0.2:11211 2", "10.0.0.3:11211" }

    it("reads the servers list as the blocking driver does", function()
      local r = assert(core.mc_ring(servers))
      assert.are.equal(3, r:count())
      assert.are.same({ "10.0.0.2:11211", "10.0.0.2", 11211 }, { r:address(2) })
      assert.are.equal("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211", r:addresses())
      local many = {}
      for i = 1, 20 do many[i] = "10.0.0." .. i .. ":11211" end
      local a = assert(core.mc_ring(many)):addresses()
      assert.are.equal(127, #a)
      assert.are.equal("...", a:sub(-3))
      assert.are.same({ "/tmp/mc.sock", "/tmp/mc.sock" }, { assert(core.mc_ring({ "/tmp/mc.sock 3" })):address(1) })
      assert.are.same({ "127.0.0.1:11211", "127.0.0.1", 11211 }, { assert(core.mc_ring()):address(1) })
      assert.are.same({ "h:11211", "h", 11211 }, { assert(core.mc_ring({ "h" })):address(1) })
      assert.are.same({ "::1:11300", "::1", 11300 }, { assert(core.mc_ring({ "[::1]:11300" })):address(1) })
      for _, bad in ipairs({ "h:0", "h:65536", "h:1 0", "::1", "h:x", "" }) do
        local v, err = core.mc_ring({ bad })
        assert.is_nil(v, bad)
        assert.are.equal("invalid server '" .. bad .. "' in servers (expected \"host:port\", "
          .. "\"host:port weight\" or a Unix socket path)", err)
      end
      assert.are.same({ nil, "servers must list at least one server" }, { core.mc_ring({}) })
      assert.has_error(function() r:address(4) end)
    end)

    it("maps every key to a server, stably, by weight", function()
      local r = assert(core.mc_ring(servers))
      local per = { 0, 0, 0 }
      for i = 1, 3000 do
        local k = core.mc_key("key" .. i)
        local s = r:server(k)
        assert.are.equal(s, r:server(k))
        assert.are.equal(s, r:home(k))
        per[s] = per[s] + 1
      end
      assert.is_truthy(per[1] > 400 and per[3] > 400, table.concat(per, " "))
      assert.is_truthy(per[2] > per[1] and per[2] > per[3], table.concat(per, " "))
    end)

    it("one server owns every key", function()
      local r = assert(core.mc_ring({ "10.0.0.1:1" }))
      assert.are.equal(1, r:server("a"))
      r:eject(1)
      assert.are.equal(1, r:server("a"))
    end)

    -- Weighted ketama gives each live server points in proportion to its
    -- share of the live weight, so leaving one out also moves a few points
    -- of the others: libmemcached's behaviour, which both transports share.
    it("a server left out: its keys go to the others, most others stay; due after 2 s, back when rejoined", function()
      local r = assert(core.mc_ring(servers))
      local before = {}
      for i = 1, 1000 do before[i] = r:server("key" .. i) end
      r:eject(2)
      assert.is_true(r:is_out(2))
      local moved, others, stayed = 0, 0, 0
      for i = 1, 1000 do
        local s = r:server("key" .. i)
        assert.are_not.equal(2, s)
        if before[i] == 2 then
          moved = moved + 1
        else
          others = others + 1
          if before[i] == s then stayed = stayed + 1 end
        end
        assert.are.equal(before[i], r:home("key" .. i))
      end
      assert.is_truthy(moved > 0)
      assert.is_truthy(stayed >= others * 0.8, stayed .. " of " .. others .. " stayed")
      assert.is_nil(r:due())
      local deadline = os.time() + 4
      while not r:due() and os.time() < deadline do end
      assert.are.equal(2, r:due())
      assert.is_nil(r:due(2))
      assert.is_true(r:is_out(2))                  -- out until the transport has cleaned it
      r:rejoin(2)
      assert.is_false(r:is_out(2))
      assert.is_nil(r:due())
      for i = 1, 1000 do assert.are.equal(before[i], r:server("key" .. i)) end
    end)

    -- What a server left out must have deleted before it is back
    -- (memcached_wire.h, "failover cleaning"): the writes of its keys that
    -- went elsewhere, with where each went; past 1024 keys, everything.
    it("notes the writes of a left-out server's keys, once each, with where they went", function()
      local r = assert(core.mc_ring(servers))
      local mine, other = {}, nil
      for i = 1, 1000 do
        local k = "key" .. i
        if r:home(k) == 2 then mine[#mine + 1] = k elseif not other then other = k end
      end
      r:note(mine[1], 2)                           -- its own server, in: nothing to clean
      r:note(other, r:home(other))
      assert.is_false(r:is_out(2))
      local flush, keys, landed = r:plan(2)
      assert.are.same({ false, {}, {} }, { flush, keys, landed })
      r:eject(2)
      for j = 1, 5 do
        r:note(mine[j], r:server(mine[j]))
        r:note(mine[j], r:server(mine[j]))         -- a repeat is kept once
      end
      r:note(other, r:server(other))               -- another server's key, at home: not noted
      flush, keys, landed = r:plan(2)
      assert.is_false(flush)
      assert.are.equal(5, #keys)
      for j = 1, 5 do
        assert.are.equal(mine[j], keys[j])
        assert.are.equal(r:server(mine[j]), landed[j])
        assert.are_not.equal(2, landed[j])
      end
      r:rejoin(2)
      assert.are.same({ false, {}, {} }, { r:plan(2) })
    end)

    it("past 1024 keys noted, a server is emptied; so is a server out that its keys went to", function()
      local r = assert(core.mc_ring(servers))
      r:eject(2)
      local n, by = 0, {}
      for i = 1, 20000 do
        local k = "key" .. i
        if r:home(k) == 2 then
          n = n + 1
          local to = r:server(k)
          by[to] = true
          r:note(k, to)
        end
      end
      assert.is_true(n > 1024, n .. " keys")
      local flush, keys = r:plan(2)
      assert.is_true(flush)
      assert.are.equal(0, #keys)
      -- a server its keys went to is out when it rejoins: that one is emptied when back
      local to = next(by)
      r:eject(to)
      r:rejoin(2)
      assert.are.same({ false, {}, {} }, { r:plan(2) })
      assert.is_true((r:plan(to)))
      -- a server whose cleaning failed is out, and emptied when back
      r:spoil(1)
      assert.is_true(r:is_out(1))
      assert.is_true((r:plan(1)))
    end)
  end)
end)
