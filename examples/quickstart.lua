-- quickstart.lua: cachy on its default embedded store, in a few lines each.
-- Run it with `make demo`.
local cachy = require("cachy")

local cache = cachy.new()   -- one in-process "memory" store, the default

-- put / get, with a lifetime in minutes
assert(cache:put("greeting", "hello", 10))
print("get greeting          ->", cache:get("greeting"))
print("get missing, default  ->", cache:get("missing", "fallback"))

-- a default function is called only on a miss, and its result is not stored
local computed = 0
local function expensive() computed = computed + 1 return "computed" end
print("get with default fn   ->", cache:get("missing", expensive), "(calls: " .. computed .. ")")

-- tables come back as fresh copies, with their key types
cache:put("user:1", { name = "Ada", langs = { "lua", "c" }, admin = false })
local user = cache:get("user:1")
print("table value           ->", user.name, table.concat(user.langs, ","), user.admin)

-- remember: computed once, then served from the cache
local loads = 0
for _ = 1, 3 do
  cache:remember("report", 5, function() loads = loads + 1 return "report #" .. loads end)
end
print("remember x3           ->", cache:get("report"), "(loads: " .. loads .. ")")

-- counters are atomic and start at 0
cache:increment("visits")
cache:increment("visits", 10)
print("increment             ->", cache:decrement("visits", 2))

-- the manager is a memoizing decorator: every return value is cached
local queries = 0
local find_user = cache(function(id)
  queries = queries + 1
  if id == 0 then return nil end          -- "not found" is cached too
  return { id = id, name = "user " .. id }, "from db"
end, { key = "users", minutes = 30 })

for _ = 1, 3 do find_user(7) end
local u, source = find_user(7)
print("decorator x4, id 7    ->", u.name, source, "(queries: " .. queries .. ")")
find_user(0)
find_user(0)
print("decorator nil cached  ->", find_user(0), "(queries: " .. queries .. ")")

-- add stores only when the key is absent; forget removes
print("add existing key      ->", cache:add("greeting", "bonjour"))
print("forget                ->", cache:forget("greeting"), cache:has("greeting"))

-- a failing backend is a value, not a crash: nil, err
local broken = cachy.new({ stores = { main = { driver = "flaky" } } })
broken:extend("flaky", function()
  return setmetatable({}, { __index = function() return function() return nil, "backend down" end end })
end)
print("failing store         ->", broken:get("anything"))
