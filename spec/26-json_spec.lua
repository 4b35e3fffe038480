-- spec/26-json_spec.lua: the built-in json serializer (SPEC sections 4, 7
-- and 9; issue #13 item 6). A value comes back exactly (key types, number
-- subtypes on 5.3+, every double bit for bit) or `put` raises naming the
-- path of what JSON cannot carry; JSON that another client wrote reads back
-- right; text that is not JSON, or not a Lua value, is nil, err, "corrupt".
local cachy = require("cachy")
local util = require("helpers.util")
local luastore = require("helpers.luastore")
local assert_strict, pack = util.assert_strict, util.pack

local math_type = math.type          -- nil on Lua 5.1, 5.2 and LuaJIT: no integer subtype there
local PYTHON = "/usr/bin/python3"    -- Debian's; its json module is the other client here

-- An integer with the integer subtype where there is one.
local function int(v)
  return math_type and math.tointeger(v) or v
end

-- n tables, each inside the previous one.
local function nest(n, leaf)
  local t = { leaf }
  for _ = 2, n do t = { t } end
  return t
end

-- Runs a Python program with its standard input from a file holding input; its stdout.
local function python(program, input)
  local prog, inp = os.tmpname(), os.tmpname()
  util.writefile(prog, program)
  util.writefile(inp, input or "")
  local out = util.sh(string.format("%s %s < %s 2>&1", PYTHON, prog, inp))
  os.remove(prog)
  os.remove(inp)
  return out
end

describe("json serializer", function()
  local backend, cache, memory

  before_each(function()
    backend = luastore.new()
    cache = cachy.new({ serializer = "json", stores = { main = { driver = "luatable" } } })
    cache:extend("luatable", backend:factory())
    memory = cachy.new({ serializer = "json", stores = { main = { driver = "memory" } } })
  end)

  after_each(function()
    cache:close()
    memory:close()
  end)

  -- value round-trips strictly through a Lua store and the memory store;
  -- returns the JSON text the Lua store was given.
  local function round_trip(value)
    assert.are.equal(true, cache:put("v", value))
    assert_strict(value, cache:get("v"))
    assert.are.equal(true, memory:put("v", value))
    assert_strict(value, memory:get("v"))
    return backend.data["v"]
  end

  local function put_error(value, c)
    local ok, err = pcall(function() (c or cache):put("k", value) end)
    assert.are.equal(false, ok)
    return (tostring(err):gsub("^.-:%d+: ", "", 1))
  end

  describe("round-trips exactly", function()
    it("arrays and maps, nested, key types kept", function()
      assert.are.equal("[1,2,3]", round_trip({ int(1), int(2), int(3) }))
      round_trip({ name = "Ada", langs = { "lua", "c" }, admin = false, score = 1.5,
        nested = { deep = { int(1), { x = "y" } } }, n = int(42) })
      -- a string key that looks like a number stays a string
      assert.are.equal('{"1":"a"}', round_trip({ ["1"] = "a" }))
      round_trip({ { { "a" } }, { b = { true, false } } })
    end)

    it("integers inside tables keep the integer subtype", function()
      local text = round_trip({ a = int(1), list = { int(-1), int(0), int(2 ^ 31), int(2 ^ 53) } })
      assert.is_nil(text:find("%.0"), text)
    end)

    if math_type then
      it("1.0 inside a table stays a float on 5.3+ (written 1.0)", function()
        assert.are.equal("[1.0,2.5]", round_trip({ 1.0, 2.5 }))
        assert.are.equal('{"x":1.0}', round_trip({ x = 1.0 }))
      end)
    else
      it("1.0 is the integer 1 where numbers are doubles", function()
        assert.are.equal("[1,2.5]", round_trip({ 1.0, 2.5 }))
      end)
    end

    it("0.1 + 0.2 bit for bit, at the top and inside a table", function()
      local v = 0.1 + 0.2
      assert.are.equal("0.30000000000000004", round_trip(v))
      assert.are.equal(v, memory:get("v"))
      assert.are_not.equal(0.3, memory:get("v"))
      round_trip({ v, x = nil })
      round_trip({ x = v })
    end)

    it("every kind of double", function()
      for _, v in ipairs({ 0.1, 1 / 3, math.pi, -2.5e-300, 1e300, 5e-324, 2 ^ -1074, 1.7976931348623157e308,
        2 ^ 70, -(2 ^ 63) - 4096, 123456789.125 }) do
        round_trip({ v })
        round_trip(v)
      end
    end)

    if math_type then
      it("large integers on 5.3+ (2^62, the int64 ends)", function()
        round_trip({ int(2 ^ 62), math.maxinteger, math.mininteger })
        round_trip({ big = int(2 ^ 62) })
      end)

      it("floats that are integral stay floats on 5.3+, and -0.0 keeps its sign", function()
        round_trip({ 2.0 ^ 53, 2.0 ^ 62, -0.0, 0.0 })
        round_trip(-0.0)
        round_trip(3.0)
      end)
    end

    it("strings: UTF-8, empty, NUL bytes, control characters; booleans", function()
      round_trip({ "héllo ☃ 𝄞", "", "a\0b", "line\nnext\t\1\127", '"quoted" \\ /' })
      round_trip("héllo")
      round_trip("")
      round_trip("a\0b")
      round_trip(true)
      round_trip(false)
      round_trip({ ["ключ ☃"] = "значение" })
    end)

    it("an empty table is written {} and reads back as an empty table", function()
      assert.are.equal("{}", round_trip({}))
      local text = round_trip({ a = {}, b = { {} } })
      assert.is_truthy(text:find('"a":{}', 1, true) and text:find('"b":[{}]', 1, true), text)
    end)

    it("a top-level integer stays decimal text (the backend's INCR works)", function()
      assert.are.equal("42", round_trip(int(42)))
      assert.are.equal(int(43), cache:increment("v"))
    end)

    it("nests 100 levels deep", function()
      round_trip(nest(100, "leaf"))
    end)
  end)

  describe("refuses at put, naming the path, what JSON cannot carry", function()
    it("an array with a hole", function()
      assert.are.equal("bad argument #2 to 'put' (value has a number key 3 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))", put_error({ [1] = 1, [3] = 3 }))
      assert.are.equal("bad argument #2 to 'put' (value.t has a number key 3 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))", put_error({ t = { [1] = 1, [3] = 3 } }))
    end)

    it("a table mixing array items and string keys", function()
      assert.are.equal("bad argument #2 to 'put' (value has a number key 1 that json cannot carry"
        .. " (an object's keys are all strings))", put_error({ 1, x = 2 }))
      assert.are.equal("bad argument #2 to 'put' (value.a[2] has a number key 1 that json cannot carry"
        .. " (an object's keys are all strings))", put_error({ a = { {}, { 1, x = 2 } } }))
    end)

    it("number keys that are no array's, boolean and table keys", function()
      assert.are.equal("bad argument #2 to 'put' (value.t has a number key 0 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))", put_error({ t = { [0] = "zero" } }))
      assert.are.equal("bad argument #2 to 'put' (value has a number key 1.5 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))", put_error({ [1.5] = 1 }))
      assert.are.equal("bad argument #2 to 'put' (value has a number key -1 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))", put_error({ [-1] = 1 }))
      assert.are.equal("bad argument #2 to 'put' (value has a boolean key true that json cannot carry"
        .. " (an object's keys are all strings))", put_error({ [true] = 1 }))
      assert.are.equal("bad argument #2 to 'put' (value[1] has a table key that json cannot carry"
        .. " (an object's keys are all strings))", put_error({ { [{}] = 1 } }))
    end)

    it("strings that are not UTF-8, as values and as keys; NUL bytes in keys", function()
      assert.are.equal("bad argument #2 to 'put' (value.s is a string that is not UTF-8, which json cannot carry)",
        put_error({ s = "caf\233" }))
      assert.are.equal("bad argument #2 to 'put' (value is a string that is not UTF-8, which json cannot carry)",
        put_error("\255\254"))
      assert.are.equal("bad argument #2 to 'put' (value[2] is a string that is not UTF-8, which json cannot carry)",
        put_error({ "ok", "\237\160\128" }))      -- an encoded surrogate is not UTF-8
      assert.are.equal("bad argument #2 to 'put' (value.m has a string key that is not UTF-8, which json cannot carry)",
        put_error({ m = { ["\200"] = 1 } }))
      assert.are.equal("bad argument #2 to 'put' (value has a string key with a NUL byte, which json cannot carry)",
        put_error({ ["a\0b"] = 1 }))
    end)

    it("inf, -inf and NaN", function()
      assert.are.equal("bad argument #2 to 'put' (value.x is inf, which json cannot carry)",
        put_error({ x = math.huge }))
      assert.are.equal("bad argument #2 to 'put' (value[2] is -inf, which json cannot carry)",
        put_error({ 1, -math.huge }))
      assert.are.equal("bad argument #2 to 'put' (value is NaN, which json cannot carry)", put_error(0 / 0))
    end)

    it("what no serializer can store, in the same words; add and forever raise too", function()
      assert.are.equal("bad argument #2 to 'put' (value.handlers[2] is a function)",
        put_error({ handlers = { 1, function() end } }))
      assert.are.equal("bad argument #2 to 'put' (value[1][1][1][1]...[1][1][1][1] is nested deeper than 100 levels)",
        put_error(nest(101, "leaf")))
      assert.has_error(function() cache:add("k", { [1] = 1, [3] = 3 }) end,
        "bad argument #2 to 'add' (value has a number key 3 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))")
      assert.has_error(function() cache:forever("k", { x = 0 / 0 }) end,
        "bad argument #2 to 'forever' (value.x is NaN, which json cannot carry)")
      assert.has_error(function() cache:put_many({ a = { [1] = 1, [3] = 3 } }) end,
        "bad argument #1 to 'put_many' (value.a has a number key 3 that json cannot carry"
        .. " (an array's keys are 1..n, without holes))")
    end)

    it("on the memory store too, and nothing is written", function()
      assert.are.equal("bad argument #2 to 'put' (value has a number key 1 that json cannot carry"
        .. " (an object's keys are all strings))", put_error({ 1, x = 2 }, memory))
      assert.are.equal(false, memory:has("k"))
      assert.is_nil(backend.data["k"])
    end)
  end)

  describe("reads JSON another client wrote", function()
    it("Python's json.dumps: nested lists, floats, ints, unicode (escaped or not)", function()
      for _, ascii in ipairs({ "True", "False" }) do
        local text = python([[
import json, sys
sys.stdout.write(json.dumps({"name": "Zoë ☃ 𝄞", "list": [1, [2.5, -3], {"deep": [True, False, "x"]}],
                             "float": 0.1, "whole": 2.0, "int": 12345678901, "neg": -7, "empty": {}, "none": [],
                             "big": 2**53}, ensure_ascii=]] .. ascii .. [[))
]])
        backend.data["py"] = text
        local got = cache:get("py")
        assert_strict({ name = "Zoë ☃ 𝄞", list = { int(1), { 2.5, int(-3) }, { deep = { true, false, "x" } } },
          float = 0.1, whole = 2.0, int = int(12345678901), neg = int(-7), empty = {}, none = {},
          big = int(2 ^ 53) }, got)
      end
    end)

    it("Python's json reads what we write as the same values", function()
      assert.are.equal(true, cache:put("w", { f = 0.1 + 0.2, one = 1.0, i = int(7), s = "☃", l = { int(1), "two" },
        e = {} }))
      local out = python([[
import json, sys
got = json.loads(sys.stdin.read())
expected = {"f": 0.1 + 0.2, "one": 1.0, "i": 7, "s": "\u2603", "l": [1, "two"], "e": {}}
ok = got == expected and type(got["one"]) is ]] .. (math_type and "float" or "int") .. [[ and type(got["i"]) is int
print("equal" if ok else "different: %r" % (got,))
]], backend.data["w"])
      assert.are.equal("equal\n", out)
    end)

    it("an object member that is null is left out", function()
      backend.data["n"] = '{"a": null, "b": 1}'
      assert_strict({ b = int(1) }, cache:get("n"))
    end)

    it("integers beyond 2^53: exact on 5.3+, undecodable where numbers are doubles", function()
      backend.data["b"] = "[9007199254740993]"
      local r = pack(cache:get("b"))
      if math_type then
        assert_strict({ int(2 ^ 53) + 1 }, r[1])
      else
        assert.is_nil(r[1])
        assert.are.equal("store 'main' (luatable): value of key 'b' cannot be decoded: value[1] is the integer"
          .. " 9007199254740993, beyond 2^53: not exact in this Lua's numbers", r[2])
        assert.are.equal("corrupt", r[3])
      end
    end)
  end)

  describe("text that is not a value is nil, err, corrupt naming the key", function()
    local function corrupt(text, why)
      backend.data["c"] = text
      local r = pack(cache:get("c"))
      assert.are.equal(3, r.n)
      assert.is_nil(r[1])
      assert.are.equal("store 'main' (luatable): value of key 'c' cannot be decoded: " .. why, r[2])
      assert.are.equal("corrupt", r[3])
      r = pack(cache:has("c"))
      assert.are.equal("corrupt", r[3])
    end

    it("not JSON", function()
      corrupt('{"a": [1, 2', "not JSON: ']' expected near end of file (at byte 11)")
      corrupt("garbage", "not JSON: invalid token near 'garbage' (at byte 7)")
      corrupt("[1] x", "not JSON: end of file expected near 'x' (at byte 5)")
      corrupt("", "not JSON: unexpected token near end of file (at byte 0)")
    end)

    it("null in an array, or as the whole value", function()
      corrupt("[1, null, 3]", "value[2] is null, which a Lua array cannot hold")
      corrupt('{"a b": {"c": [null]}}', 'value["a b"].c[1] is null, which a Lua array cannot hold')
      corrupt("null", "value is null, which is no Lua value")
    end)

    it("integers beyond int64 and reals beyond a double", function()
      corrupt("[18446744073709551616]", "not JSON: too big integer near '18446744073709551616' (at byte 21)")
      corrupt("[1e400]", "not JSON: real number overflow near '1e400' (at byte 6)")
    end)

    it("nesting deeper than 100 levels", function()
      corrupt(string.rep("[", 101) .. string.rep("]", 101),
        "value[1][1][1][1]...[1][1][1][1] is nested deeper than 100 levels")
      backend.data["d"] = string.rep("[", 100) .. string.rep("]", 100)
      assert_strict(nest(99, {}), cache:get("d"))
    end)
  end)
end)
