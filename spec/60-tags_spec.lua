-- spec/60-tags_spec.lua: tagged items do not pile up. After 10,000 tagged
-- `forever` writes and a flush of their tag, a store holds no more than the
-- tag bookkeeping (a version per tag), measured on each store's own terms.
local cachy = require("cachy")
local util = require("helpers.util")

local N = 10000

local function write_and_flush(cache)
  local t = cache:tags("bulk")
  for i = 1, N do assert(t:forever("item" .. i, i)) end
  assert.are.equal(N, t:get("item" .. N))
  assert.are.equal(true, t:flush())
  assert.is_nil(t:get("item1"))
end

describe("tag flush on stores without eviction", function()
  it("leaves only the tag version on the memory store", function()
    local cache = cachy.new()
    write_and_flush(cache)
    assert.are.equal(1, cache:store():stats().items)
  end)

  it("leaves only the tag version on the file store", function()
    local dir = (os.getenv("CACHY_TMP") or "/tmp") .. "/tags-file-" .. os.time() .. "-" .. math.random(1e6)
    local cache = cachy.new({ stores = { file = { driver = "file", path = dir } } })
    write_and_flush(cache)
    local files = tonumber(util.sh("find '" .. dir .. "' -type f | wc -l"))
    assert.are.equal(1, files)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("tag flush on redis", function()
  local servers = require("helpers.servers")
  local server
  lazy_setup(function() server = servers.start("redis") end)
  lazy_teardown(function() server:stop() end)

  it("leaves only the tag version", function()
    local cache = cachy.new({ stores = { redis = { driver = "redis", port = server.port } } })
    write_and_flush(cache)
    local keys = tonumber(util.sh("redis-cli -p " .. server.port .. " DBSIZE"))
    assert.are.equal(1, keys)
  end)
end)

describe("a write racing a tag flush", function()
  it("does not survive under the old namespace", function()
    -- The flush happens inside the store's put, between the writer's record
    -- and its write: the worst interleaving, made deterministic.
    local data, cache = {}, nil
    local flushing = false
    cache = cachy.new({ stores = { main = { driver = "racy" } } })
    cache:extend("racy", function()
      return {
        get = function(_, k) return data[k] end,
        put = function(_, k, v)
          if not flushing and k:find("^cachy:tagged:") then
            flushing = true
            cache:tags("t"):flush()
          end
          data[k] = v
          return true
        end,
        add = function(_, k, v) if data[k] then return false end data[k] = v return true end,
        forget = function(_, k) local had = data[k] ~= nil data[k] = nil return had end,
        increment = function(_, k, n)
          local v = math.floor(tonumber(data[k] or "0") + n)
          data[k] = string.format("%d", v)
          return v
        end,
        flush = function() data = {} return true end,
      }
    end)
    assert.are.equal(true, cache:tags("t"):forever("k", "v"))
    assert.is_true(flushing)
    assert.is_nil(cache:tags("t"):get("k"))
    for k in pairs(data) do
      assert.is_nil(k:find("^cachy:tagged:"), "an item survived the flush: " .. k)
    end
  end)
end)

describe("several tags", function()
  it("flushing one of them leaves no records under the others", function()
    local cache = cachy.new()
    local both = cache:tags("people", "artists")
    for round = 1, 3 do
      for i = 1, 1000 do assert(both:forever("p" .. round .. ":" .. i, i)) end
      assert.are.equal(true, cache:tags("artists"):flush())
      assert.is_nil(both:get("p" .. round .. ":1"))
      -- left: the two versions and the counter of people's version
      assert.are.equal(3, cache:store():stats().items)
    end
    assert.are.equal(true, cache:tags("people"):flush())
    assert.are.equal(2, cache:store():stats().items)
  end)
end)
