-- spec/20-codec_spec.lua: how values become bytes and back (SPEC section 4),
-- through the memory store: every storable type with its subtype, nesting
-- to the depth limit, and the exact errors for what cannot be stored.
local cachy = require("cachy")
local util = require("helpers.util")
local strict_diff, assert_strict = util.strict_diff, util.assert_strict

local math_type = math.type          -- nil on Lua 5.1, 5.2 and LuaJIT: no integer subtype there
local maxinteger, mininteger = math.maxinteger, math.mininteger

-- n tables, each inside the previous one.
local function nest(n, leaf)
  local t = { leaf }
  for _ = 2, n do t = { t } end
  return t
end

describe("codec", function()
  local cache

  before_each(function()
    cache = cachy.new({ stores = { main = { driver = "memory" } } })
  end)

  after_each(function()
    cache:close()
  end)

  local function round_trip(value)
    assert.are.equal(true, cache:put("v", value))
    local got = cache:get("v")
    assert_strict(value, got)
    return got
  end

  describe("numbers", function()
    it("keep integers exact", function()
      for _, v in ipairs({ 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, -2147483648,
        4294967295, 4294967296, 2 ^ 53, -(2 ^ 53), 2 ^ 62, -(2 ^ 63) }) do
        if math_type then v = math.tointeger(v) end
        round_trip(v)
        round_trip({ v })
      end
    end)

    it("keep floats exact", function()
      for _, v in ipairs({ 0.1, -0.1, 1 / 3, 1e-310, 5e-324, 1.7976931348623157e308, -1e300,
        math.pi, 2 ^ 63, -(2 ^ 64), 1e300, math.huge, -math.huge }) do
        round_trip(v)
        round_trip({ v, x = v })
      end
    end)

    it("keep NaN a NaN", function()
      local got = cache:put("v", 0 / 0) and cache:get("v")
      assert.are.equal("number", type(got))
      assert.is_true(got ~= got)
    end)

    if math_type then
      it("keep the integer and float subtypes (5.3+)", function()
        for _, v in ipairs({ 1.0, -1.0, 0.0, -0.0, 2.0 ^ 53, 1e15, maxinteger + 0.0 }) do
          local got = round_trip(v)
          assert.are.equal("float", math_type(got))
          got = round_trip({ v, k = v })
          assert.are.equal("float", math_type(got[1]))
          assert.are.equal("float", math_type(got.k))
        end
        for _, v in ipairs({ 1, 0, -1, maxinteger, mininteger, 9007199254740993, -9007199254740993 }) do
          assert.are.equal("integer", math_type(round_trip(v)))
          assert.are.equal("integer", math_type(round_trip({ v })[1]))
        end
      end)
    else
      pending("keep the integer and float subtypes: Lua 5.1, 5.2 and LuaJIT have one number type")
    end
  end)

  describe("strings", function()
    it("keep every byte", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs({ "", "\0", all, all:rep(300), "\255\254", "ключ🔑", string.rep("a", 31),
        string.rep("a", 32), string.rep("b", 255), string.rep("c", 256), string.rep("d", 65536) }) do
        round_trip(s)
        round_trip({ s, [s ~= "" and s or "empty"] = s })
      end
    end)

    it("keep a string that looks like a number a string", function()
      for _, s in ipairs({ "10", "-5", "0", "1.5", "1e3", " 7", "007", "9223372036854775808" }) do
        round_trip(s)
      end
    end)
  end)

  describe("tables", function()
    it("keep arrays, maps, mixed tables and holes", function()
      round_trip({})
      round_trip({ 1, 2, 3 })
      round_trip({ a = 1, b = 2 })
      round_trip({ 1, 2, a = "x" })
      round_trip({ [1] = "a", [3] = "c" })
      round_trip({ [0] = "zero", [1] = "one" })
      round_trip({ [-1] = "neg" })
      round_trip({ [1] = 1, [1000000] = 2 })
      local big = {}
      for i = 1, 10000 do big[i] = i end
      round_trip(big)
    end)

    it("keep key types", function()
      round_trip({ [1] = "int", ["1"] = "str", [1.5] = "float", [true] = "t", [false] = "f" })
      round_trip({ ["a\0b"] = 1, [""] = 2, [-0.5] = 3, [math.huge] = 4 })
    end)

    it("keep nested tables", function()
      round_trip({ a = { b = { c = { d = { 1, { 2, { 3, { x = true } } } } } } } })
      round_trip({ { {} }, { {}, {} } })
    end)

    it("store a table referenced from two places (not a cycle)", function()
      local shared = { 1 }
      round_trip({ shared, shared, x = { y = shared } })
    end)

    it("read back fresh copies without metatables", function()
      local t = setmetatable({ a = setmetatable({}, { __index = { hidden = 1 } }) }, {
        __index = function() return "mt" end,
        __len = function() return 99 end,
      })
      assert.are.equal(true, cache:put("t", t))
      local got = cache:get("t")
      assert.is_nil(getmetatable(got))
      assert.is_nil(getmetatable(got.a))
      assert.is_nil(got.a.hidden)
      assert_strict({ a = {} }, got)
      assert.are_not.equal(got, cache:get("t"))
    end)

    it("nest 100 levels deep", function()
      local got = round_trip(nest(100, "leaf"))
      for _ = 1, 99 do got = got[1] end
      assert.are.same({ "leaf" }, got)
    end)
  end)

  describe("what cannot be stored", function()
    local function put_error(value)
      local ok, err = pcall(function() cache:put("k", value) end)
      assert.are.equal(false, ok)
      return (tostring(err):gsub("^.-:%d+: ", "", 1))
    end

    it("nil: says to use forget", function()
      assert.are.equal("bad argument #2 to 'put' (nil cannot be stored; use forget to remove a key)",
        put_error(nil))
      assert.has_error(function() cache:add("k", nil) end,
        "bad argument #2 to 'add' (nil cannot be stored; use forget to remove a key)")
      assert.has_error(function() cache:forever("k", nil) end,
        "bad argument #2 to 'forever' (nil cannot be stored; use forget to remove a key)")
    end)

    it("functions, userdata and threads: names the path", function()
      assert.are.equal("bad argument #2 to 'put' (value is a function)", put_error(print))
      assert.are.equal("bad argument #2 to 'put' (value.handlers[2] is a function)",
        put_error({ handlers = { 1, function() end } }))
      assert.are.equal("bad argument #2 to 'put' (value[1] is a userdata)", put_error({ io.stdout }))
      assert.are.equal("bad argument #2 to 'put' (value.a.b is a thread)",
        put_error({ a = { b = coroutine.create(function() end) } }))
      assert.has_error(function() cache:add("k", { f = print }) end,
        "bad argument #2 to 'add' (value.f is a function)")
      assert.has_error(function() cache:forever("k", { 1, { 2, print } }) end,
        "bad argument #2 to 'forever' (value[2][2] is a function)")
      assert.are.equal(false, cache:has("k"))
    end)

    it("a function used as a table key", function()
      local err = put_error({ [print] = 1 })
      assert.is_truthy(err:match("^bad argument #2 to 'put' %(value.*function.*%)$"), err)
    end)

    it("cycles: names the path", function()
      local t = {}
      t.self = t
      assert.are.equal("bad argument #2 to 'put' (value.self is a cyclic reference)", put_error(t))
      local a = { b = {} }
      a.b.back = a
      assert.are.equal("bad argument #2 to 'put' (value.b.back is a cyclic reference)", put_error(a))
      local arr = { {} }
      arr[1][1] = arr
      assert.are.equal("bad argument #2 to 'put' (value[1][1] is a cyclic reference)", put_error(arr))
    end)

    it("more than 100 levels: names the path, its middle left out", function()
      assert.are.equal("bad argument #2 to 'put' (value[1][1][1][1]...[1][1][1][1] is nested deeper than 100 levels)",
        put_error(nest(101, "leaf")))
      assert.are.equal("bad argument #2 to 'put' (value[1][1][1][1]...[1][1][1][1] is nested deeper than 100 levels)",
        put_error(nest(100000, "leaf")))
      assert.are.equal("bad argument #2 to 'put' (value.a.b[1][1]...[1][1][1][1] is nested deeper than 100 levels)",
        put_error({ a = { b = nest(99, 1) } }))
    end)

    it("put_many: names the key of the value", function()
      local ok, err = pcall(function() cache:put_many({ good = 1, bad = { print } }) end)
      assert.are.equal(false, ok)
      err = err:gsub("^.-:%d+: ", "", 1)
      assert.is_truthy(err:match("^bad argument #1 to 'put_many' %(value.*bad.*%[1%] is a function%)$"), err)
    end)

    it("leaves the stored value alone", function()
      assert.are.equal(true, cache:put("k", "before"))
      put_error({ print })
      assert.are.equal("before", cache:get("k"))
    end)
  end)
end)
