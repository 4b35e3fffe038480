-- spec/61-interop_spec.lua: values written through the Redis store are read
-- by another language's own libraries (Debian's python3-msgpack and
-- python3-redis): MessagePack is standard, JSON is plain JSON text.
local cachy = require("cachy")
local servers = require("helpers.servers")
local util = require("helpers.util")

local PYTHON = "/usr/bin/python3"   -- Debian's, which has python3-msgpack and python3-redis

-- Runs a Python program with the port as its argument; returns its stdout.
local function python(program, port)
  local path = os.tmpname()
  util.writefile(path, program)
  local out = util.sh(string.format("%s %s %d 2>&1", PYTHON, path, port))
  os.remove(path)
  return out
end

local value = {
  name = "Ada", langs = { "lua", "c" }, admin = false, score = 1.5,
  nested = { deep = { 1, { x = "y" } } }, n = 42,
}

describe("interoperability through redis", function()
  local server

  lazy_setup(function() server = servers.start("redis") end)
  lazy_teardown(function() server:stop() end)

  local function manager(serializer)
    return cachy.new({ prefix = "interop:", serializer = serializer,
      stores = { redis = { driver = "redis", port = server.port } } })
  end

  -- serializer -> what it is called in the test's name, and Python's decoding of the bytes
  for _, case in ipairs({
    { "msgpack", "standard MessagePack that Python's msgpack", "msgpack.unpackb(raw, raw=False)" },
    { "json", "JSON that Python's json", "json.loads(raw)" },
  }) do
    local serializer, what, decode = case[1], case[2], case[3]
    it("writes " .. what .. " reads as an equal dict", function()
      local cache = manager(serializer)
      assert.are.equal(true, cache:put("user", value, 10))
      local out = python([[
import sys, json, msgpack, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
raw = r.get("interop:user")
got = ]] .. decode .. [[

expected = {"name": "Ada", "langs": ["lua", "c"], "admin": False, "score": 1.5,
            "nested": {"deep": [1, {"x": "y"}]}, "n": 42}
print("equal" if got == expected else "different: %r" % (got,))
]], server.port)
      assert.are.equal("equal\n", out)
    end)
  end

  it("reads what Python writes with msgpack", function()
    local out = python([[
import sys, msgpack, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
r.set("interop:from-python", msgpack.packb({"a": [1, 2.5, "three"], "b": True}))
print("ok")
]], server.port)
    assert.are.equal("ok\n", out)
    assert.are.same({ a = { 1, 2.5, "three" }, b = true }, manager("msgpack"):get("from-python"))
  end)
end)
