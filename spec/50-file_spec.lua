-- spec/50-file_spec.lua: the file store. The shared behaviour suite on a
-- fresh directory, then what only a store on disk shared by processes must
-- show: safe file names, modes, damaged and foreign files, flush and prune
-- that touch nothing foreign, a full disk, and races between processes.
local cachy = require("cachy")
local system = require("system")
local behaviour = require("behaviour")
local values = require("helpers.file_values")
local util = require("helpers.util")

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local q, sh, succeeds, exists = util.q, util.sh, util.succeeds, util.exists
local readfile, writefile = util.readfile, util.writefile

-- Workers run under the interpreter that runs busted, with its module paths.
local launch = util.worker_command(here .. "/helpers/file_worker.lua")

local base = sh("mktemp -d " .. q((os.getenv("CACHY_TMP") or "/tmp") .. "/cachy-file.XXXXXX"))
base = (sh("realpath " .. q((base:gsub("%s+$", ""))))):gsub("%s+$", "")
assert(base:match("^/.+/cachy%-file%."), "mktemp failed: " .. base)

local count = 0
local function fresh_dir()
  count = count + 1
  return base .. "/" .. count
end

local function open_store(dir, fields, prefix)
  local store = { driver = "file", path = dir }
  for k, v in pairs(fields or {}) do store[k] = v end
  return cachy.new({ prefix = prefix, stores = { main = store } })
end

-- Paths under dir of the given find -type ("f" files, "d" directories), sorted.
local function list(dir, ftype)
  local out = {}
  for line in sh("cd " .. q(dir) .. " && find . -type " .. (ftype or "f") .. " | sort"):gmatch("[^\n]+") do
    if line ~= "." then out[#out + 1] = line:sub(3) end
  end
  return out
end

-- The one entry file under dir (asserting there is exactly one).
local function only_entry(dir)
  local files = list(dir)
  assert.are.equal(1, #files, "expected one file, got: " .. table.concat(files, " "))
  return dir .. "/" .. files[1]
end

local function is_entry_name(rel)
  local a, b, name = rel:match("^(%x%x)/(%x%x)/(%x+)$")
  return name ~= nil and #name == 32 and name:sub(1, 4) == a .. b and name == name:lower()
end

describe("file driver", function()
  teardown(function()
    os.execute("rm -rf " .. q(base))
  end)

  local suite_dir = base .. "/behaviour"
  behaviour("file", { config = function() return { driver = "file", path = suite_dir } end })

  describe("layout", function()
    it("keeps each key in one file named by its hash, two directories down", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      assert.are.equal(true, cache:put("user:1", "x"))
      local files = list(dir)
      assert.are.equal(1, #files)
      assert.is_true(is_entry_name(files[1]), files[1])
      cache:close()
    end)

    it("keeps keys such as ../../etc/passwd inside path", function()
      local outer = fresh_dir()
      local dir = outer .. "/a/b/store"
      local passwd = readfile("/etc/passwd")
      local cache = open_store(dir)
      local keys = { "../../etc/passwd", "../../../../../../../../etc/passwd", "/etc/passwd",
        "a/../../b", "..", ".", "x\0/../y", string.rep("../", 400) .. "tmp/evil" }
      for i, k in ipairs(keys) do assert.are.equal(true, cache:put(k, "v" .. i)) end
      for i, k in ipairs(keys) do assert.are.equal("v" .. i, cache:get(k)) end
      local files = list(outer)
      assert.are.equal(#keys, #files)
      for _, f in ipairs(files) do
        local rel = f:match("^a/b/store/(.*)$")
        assert.is_truthy(rel, f)
        assert.is_true(is_entry_name(rel), f)
      end
      for _, d in ipairs(list(outer, "d")) do
        assert.is_truthy(d == "a" or d == "a/b" or d:match("^a/b/store"), d)
      end
      assert.are.equal(passwd, readfile("/etc/passwd"))
      assert.is_false(exists("/tmp/evil"))
      cache:close()
    end)

    it("creates files 0600 and directories 0700", function()
      local dir = fresh_dir() .. "/store"
      local cache = open_store(dir)
      assert.are.equal(true, cache:put("a", "1"))
      assert.are.equal(true, cache:put("b", "2"))
      assert.are.equal(2, cache:increment("c", 2))
      assert.are.equal("d 700\nf 600\n", sh("find " .. q(dir) .. " -printf '%y %m\\n' | sort -u"))
      cache:close()
    end)

    it("takes other modes from permissions, exactly, whatever the umask", function()
      local dir = fresh_dir() .. "/store"
      local cache = open_store(dir, { permissions = 432 })    -- 0660
      assert.are.equal(true, cache:put("a", "1"))
      assert.are.equal("d 770\nf 660\n",
        sh("umask 077; find " .. q(dir) .. " -printf '%y %m\\n' | sort -u"))
      cache:close()
      dir = fresh_dir()
      cache = open_store(dir, { permissions = 416 })          -- 0640
      assert.are.equal(true, cache:put("a", "1"))
      assert.are.equal("d 750\nf 640\n", sh("find " .. q(dir) .. " -printf '%y %m\\n' | sort -u"))
      cache:close()
    end)

    it("refuses permissions that do not let the owner read and write", function()
      local dir = fresh_dir()
      local cache = open_store(dir, { permissions = 256 })    -- 0400
      local ok, err = cache:put("a", "1")
      assert.is_nil(ok)
      assert.are.equal("store 'main' (file " .. dir .. "): permissions must be a mode from "
        .. "0600 (384) to 0777 (511) that lets the owner read and write", err)
      cache:close()
    end)

    it("reports a path that is not a directory", function()
      local dir = fresh_dir()
      writefile(dir, "a file")
      local cache = open_store(dir)
      local ok, err = cache:put("a", "1")
      assert.is_nil(ok)
      assert.are.equal("store 'main' (file " .. dir .. "): " .. dir .. " is not a directory", err)
      local v, err2 = cache:get("a")
      assert.is_nil(v)
      assert.are.equal(err, err2)
      cache:close()
    end)

    it("shares values with later managers and other processes", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      assert.are.equal(true, cache:put("shared", values.make(3, 4)))
      cache:close()
      local again = open_store(dir)
      assert.are.equal(values.make(3, 4), again:get("shared"))
      again:close()
      assert.are.equal("1 0 0\n", sh(launch .. " read " .. q(dir) .. " shared 1 2>&1"))
    end)
  end)

  describe("damaged and foreign files", function()
    local dir, cache
    before_each(function()
      dir = fresh_dir()
      cache = open_store(dir)
    end)
    after_each(function()
      cache:close()
    end)

    it("reads a truncated file as a miss and removes it", function()
      assert.are.equal(true, cache:put("k", string.rep("v", 1000)))
      local path = only_entry(dir)
      writefile(path, readfile(path):sub(1, 500))
      local v, err = cache:get("k")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.is_false(exists(path))
    end)

    it("reads a file of random bytes as a miss and removes it", function()
      assert.are.equal(true, cache:put("k", "v"))
      local path = only_entry(dir)
      math.randomseed(os.time())
      local bytes = {}
      for i = 1, 4096 do bytes[i] = string.char(math.random(0, 255)) end
      writefile(path, table.concat(bytes))
      local v, err = cache:get("k")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.is_false(exists(path))
    end)

    it("reads an empty file and one byte changed in the value as misses", function()
      assert.are.equal(true, cache:put("k", "some value"))
      local path = only_entry(dir)
      local good = readfile(path)
      writefile(path, "")
      local v, err = cache:get("k")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.is_false(exists(path))
      local flipped = good:sub(1, #good - 10) .. string.char((good:byte(#good - 9) + 1) % 256) .. good:sub(#good - 8)
      writefile(path, flipped)
      assert.is_nil(cache:get("k"))
      assert.is_false(exists(path))
    end)

    it("lets add, increment and forget replace a damaged file", function()
      assert.are.equal(true, cache:put("k", "v"))
      local path = only_entry(dir)
      writefile(path, "garbage")
      assert.are.equal(true, cache:add("k", "new"))
      assert.are.equal("new", cache:get("k"))
      writefile(path, "garbage")
      assert.are.equal(5, cache:increment("k", 5))
      writefile(path, "garbage")
      assert.are.equal(false, cache:forget("k"))
      assert.is_false(exists(path))
    end)

    it("reads another key's file at this key's name as a miss and keeps it", function()
      assert.are.equal(true, cache:put("a", "value of a"))
      local a_path = only_entry(dir)
      assert.are.equal(true, cache:forget("a"))
      assert.are.equal(true, cache:put("b", "value of b"))
      local b_path = only_entry(dir)
      os.execute("mkdir -p " .. q(a_path:match("^(.*)/")))
      writefile(a_path, readfile(b_path))
      assert.is_nil(cache:get("a"))
      assert.is_true(exists(a_path))
      assert.are.equal(false, cache:forget("a"))
      assert.are.equal("value of b", cache:get("b"))
    end)

    it("reads expired files as a miss and removes them", function()
      assert.are.equal(true, cache:put("k", "v", 0.1 / 60))    -- 100 ms
      local path = only_entry(dir)
      system.sleep(0.25)
      assert.is_true(exists(path))
      assert.is_nil(cache:get("k"))
      assert.is_false(exists(path))
    end)

    it("names the key and the store when a value is not an integer or overflows", function()
      local c = open_store(dir, nil, "app:")
      assert.are.equal(true, c:put("text", "abc"))
      assert.are.equal(true, c:put("we\1ird", "abc"))
      assert.are.equal(true, c:put("max", math.maxinteger or 2 ^ 53))
      local n, err = c:increment("text")
      assert.is_nil(n)
      assert.are.equal("store 'main' (file " .. dir .. "): value of key 'text' is not an integer", err)
      n, err = c:increment("we\1ird")
      assert.are.equal("store 'main' (file " .. dir .. "): value of key 'we\\x01ird' is not an integer", err)
      assert.are.equal("abc", c:get("text"))
      if math.maxinteger then
        n, err = c:increment("max")
        assert.is_nil(n)
        assert.are.equal("store 'main' (file " .. dir .. "): increment of key 'max' overflows 64 bits", err)
        assert.are.equal(math.maxinteger, c:get("max"))
      end
      c:close()
    end)
  end)

  describe("flush and prune", function()
    -- Files and directories the store did not write.
    local function plant_foreign(dir)
      os.execute("mkdir -p " .. q(dir .. "/ab/cd") .. " " .. q(dir .. "/notes"))
      writefile(dir .. "/README", "mine")
      writefile(dir .. "/notes/x", "mine")
      writefile(dir .. "/ab/cd/notes.txt", "mine")
      writefile(dir .. "/ab/cd/abcd0123456789abcdef0123456789ab", "not a cachy file")
      return { "README", "ab/cd/abcd0123456789abcdef0123456789ab", "ab/cd/notes.txt", "notes/x" }
    end

    it("flush without a prefix removes every entry and nothing else", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      local other = open_store(dir, nil, "other:")
      for i = 1, 50 do assert.are.equal(true, cache:put("k" .. i, i)) end
      assert.are.equal(true, other:put("o", "x"))
      local foreign = plant_foreign(dir)
      assert.are.equal(true, cache:flush())
      assert.are.same(foreign, list(dir))
      assert.are.same({ "ab", "ab/cd", "notes" }, list(dir, "d"))
      assert.is_nil(other:get("o"))
      cache:close()
      other:close()
    end)

    it("flush with a prefix removes only the entries under it", function()
      local dir = fresh_dir()
      local a = open_store(dir, nil, "a:")
      local b = open_store(dir, nil, "b:")
      for i = 1, 20 do
        assert.are.equal(true, a:put("k" .. i, i))
        assert.are.equal(true, b:put("k" .. i, -i))
      end
      local foreign = plant_foreign(dir)
      assert.are.equal(true, a:flush())
      for i = 1, 20 do
        assert.is_nil(a:get("k" .. i))
        assert.are.equal(-i, b:get("k" .. i))
      end
      local left = list(dir)
      assert.are.equal(20 + #foreign, #left)
      assert.are.equal(true, b:flush())
      assert.are.same(foreign, list(dir))
      a:close()
      b:close()
    end)

    it("prune removes expired entries and crashed writers' temp files, and nothing else", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      for i = 1, 10 do assert.are.equal(true, cache:put("short" .. i, i, 0.1 / 60)) end
      assert.are.equal(true, cache:put("long", "kept", 10))
      assert.are.equal(true, cache:forever("forever", "kept"))
      local entries = list(dir)
      assert.are.equal(12, #entries)
      local foreign = plant_foreign(dir)
      -- A temp file as a writer killed between write and rename leaves it.
      writefile(dir .. "/" .. entries[1] .. ".tmp", "half a value")
      system.sleep(0.25)
      assert.are.equal(true, cache:prune())
      local left = list(dir)
      assert.are.equal(2 + #foreign, #left)
      for _, f in ipairs(left) do assert.is_falsy(f:match("%.tmp$"), f) end
      assert.are.equal("kept", cache:get("long"))
      assert.are.equal("kept", cache:get("forever"))
      cache:close()
    end)
  end)

  describe("symbolic links under path", function()
    -- Links the store did not make: none is followed, nothing outside path
    -- is read as an entry, written, or removed.
    local dir, cache, outside
    before_each(function()
      dir = fresh_dir()
      outside = fresh_dir()
      assert(succeeds("mkdir -p " .. q(outside)))
      cache = open_store(dir)
    end)
    after_each(function()
      cache:close()
    end)

    local function parent(path) return (path:match("^(.*)/[^/]+$")) end
    local function is_link(path) return succeeds("test -L " .. q(path)) end
    local function is_dir(path) return succeeds("test -d " .. q(path) .. " && ! test -L " .. q(path)) end

    -- The key's entry path, learned by writing it once; the store left empty.
    local function entry_of(key)
      assert.are.equal(true, cache:put(key, "probe"))
      local path = only_entry(dir)
      assert.are.equal(true, cache:flush())
      return path
    end

    for _, level in ipairs({ "bucket (ab/cd)", "top (ab)" }) do
      it("never writes through a " .. level .. " directory symlinked outside path", function()
        local entry = entry_of("k")
        local link = parent(entry)
        if level == "top (ab)" then link = parent(link) end
        os.execute("mkdir -p " .. q(parent(link)) .. " && rm -rf " .. q(link)
          .. " && ln -s " .. q(outside) .. " " .. q(link))
        assert.are.equal(true, cache:put("k", "new"))
        assert.are.same({}, list(outside))
        assert.is_true(is_dir(link))
        assert.is_false(is_link(entry))
        assert.are.equal("new", cache:get("k"))
        assert.are.equal(2, cache:increment("n", 2))
        assert.are.equal(true, cache:add("a", 1))
        assert.are.same({}, list(outside))
        assert.are.equal(true, cache:flush())
        assert.is_nil(cache:get("k"))
        assert.are.same({}, list(outside))
      end)
    end

    it("does not read a valid entry through a symlinked bucket; flush leaves it outside", function()
      assert.are.equal(true, cache:put("k", "outside value"))
      local entry = only_entry(dir)
      local name = entry:match("[^/]+$")
      local good = readfile(entry)
      writefile(outside .. "/" .. name, good)
      assert.are.equal(true, cache:flush())
      local bucket = parent(entry)
      os.execute("mkdir -p " .. q(parent(bucket)) .. " && ln -s " .. q(outside) .. " " .. q(bucket))
      local v, err = cache:get("k")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.are.equal(false, cache:has("k"))
      assert.are.equal(false, cache:forget("k"))
      assert.are.equal(good, readfile(outside .. "/" .. name))
      assert.are.equal(true, cache:flush())
      assert.is_nil(cache:get("k"))
      assert.are.same({ name }, list(outside))
      assert.are.equal(good, readfile(outside .. "/" .. name))
      assert.are.equal(1, cache:increment("k"))
      assert.are.equal(1, cache:get("k"))
      assert.are.equal(good, readfile(outside .. "/" .. name))
    end)

    it("does not read an entry file that is a symlink to a valid entry outside", function()
      assert.are.equal(true, cache:put("k", "outside value"))
      local entry = only_entry(dir)
      local target = outside .. "/entry"
      local good = readfile(entry)
      writefile(target, good)
      os.execute("rm " .. q(entry) .. " && ln -s " .. q(target) .. " " .. q(entry))
      local v, err = cache:get("k")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.are.equal(false, cache:has("k"))
      assert.are.equal(good, readfile(target))
      os.execute("ln -sf " .. q(target) .. " " .. q(entry))
      assert.are.equal(true, cache:put("k", "new"))
      assert.is_false(is_link(entry))
      assert.are.equal("new", cache:get("k"))
      assert.are.equal(good, readfile(target))
      local ops = {
        forget = function() return cache:forget("k") end,
        increment = function() return cache:increment("k") end,
        flush = function() return cache:flush() end,
        prune = function() return cache:store("main"):prune() end,
      }
      for _, op in ipairs({ "forget", "increment", "flush", "prune" }) do
        os.execute("mkdir -p " .. q(parent(entry)) .. " && ln -sf " .. q(target) .. " " .. q(entry))
        assert.is_true(is_link(entry), op)
        local want = ({ forget = false, increment = 1, flush = true, prune = true })[op]
        assert.are.equal(want, ops[op](), op)
        assert.are.equal(good, readfile(target), op)
        assert.are_not.equal("outside value", cache:get("k"), op)
      end
      assert.are.same({ "entry" }, list(outside))
    end)

    it("flush and prune with symlinks in the tree touch nothing outside", function()
      for i = 1, 30 do assert.are.equal(true, cache:put("k" .. i, i)) end
      local entries = list(dir)
      local good = readfile(dir .. "/" .. entries[1])
      local a, b = entries[1]:match("^(%x%x)/(%x%x)/")
      local function free(under)
        for i = 0, 255 do
          local t = string.format("%02x", i)
          if not succeeds("test -e " .. q(under .. "/" .. t)) then return t end
        end
      end
      -- Links at a top name, a bucket name, an entry name and a foreign
      -- name, to directories holding entries named as the store names them.
      local t, sub = free(dir), free(dir .. "/" .. a)
      local planted = {
        ["t/00/" .. t .. "00" .. string.rep("0", 28)] = good,
        ["s/" .. a .. sub .. string.rep("0", 28)] = good,
        ["e"] = good,
      }
      os.execute("mkdir -p " .. q(outside .. "/t/00") .. " " .. q(outside .. "/s"))
      for rel, bytes in pairs(planted) do writefile(outside .. "/" .. rel, bytes) end
      os.execute(table.concat({
        "ln -s " .. q(outside .. "/t") .. " " .. q(dir .. "/" .. t),
        "ln -s " .. q(outside .. "/s") .. " " .. q(dir .. "/" .. a .. "/" .. sub),
        "ln -s " .. q(outside .. "/e") .. " " .. q(dir .. "/" .. a .. "/" .. b .. "/" .. a .. b .. string.rep("1", 28)),
        "ln -s " .. q(outside) .. " " .. q(dir .. "/link") }, " && "))
      assert.are.equal(true, cache:store("main"):prune())
      assert.are.equal(true, cache:flush())
      assert.are.equal(true, cache:store("main"):prune())
      local after = list(outside)
      assert.are.equal(3, #after)
      for _, rel in ipairs(after) do assert.are.equal(planted[rel], readfile(outside .. "/" .. rel), rel) end
      for i = 1, 30 do assert.is_nil(cache:get("k" .. i)) end
      -- The links at the store's names are gone, the foreign one stays.
      assert.are.equal("./link\n", sh("cd " .. q(dir) .. " && find . -type l"))
    end)
  end)

  describe("entry files far larger than any entry", function()
    local dir, cache
    before_each(function()
      dir = fresh_dir()
      cache = open_store(dir)
    end)
    after_each(function()
      cache:close()
    end)

    local function status(field)
      local f = assert(io.open("/proc/self/status"))
      local s = f:read("*a")
      f:close()
      return tonumber(s:match(field .. ":%s*(%d+) kB"))
    end

    -- Little-endian bytes of a non-negative integer below 2^53.
    local function le(n, width)
      local out = {}
      for i = 1, width do
        out[i] = string.char(n % 256)
        n = math.floor(n / 256)
      end
      return table.concat(out)
    end

    -- The three kinds of huge file planted at the key's entry name.
    local plant = {
      zeros = function(path, size)
        os.execute("rm -f " .. q(path) .. " && truncate -s " .. size .. " " .. q(path))
      end,
      ["its own entry, extended"] = function(path, size, key)
        assert.are.equal(true, cache:put(key, "small"))
        os.execute("truncate -s " .. size .. " " .. q(path))
      end,
      ["a header declaring the file's size"] = function(path, size, key)
        writefile(path, "cachy\0\1\0" .. le(0, 8) .. le(#key, 4) .. le(size - 36 - #key, 8) .. key)
        os.execute("truncate -s " .. size .. " " .. q(path))
      end,
    }

    local ops = {
      get = function(c, k) local v, err = c:get(k); assert.is_nil(err); return v end,
      has = function(c, k) return c:has(k) end,
      put = function(c, k) return c:put(k, "put") end,
      forget = function(c, k) return c:forget(k) end,
      increment = function(c, k) return c:increment(k, 3) end,
    }
    local want = { get = nil, has = false, put = true, forget = false, increment = 3 }
    local order = { "get", "has", "put", "forget", "increment" }

    for _, gb in ipairs({ 1, 100 }) do
      for _, kind in ipairs({ "zeros", "its own entry, extended", "a header declaring the file's size" }) do
        it(string.format("answers at once on a %d GB sparse file (%s) at an entry's name", gb, kind), function()
          local key = "huge"
          assert.are.equal(true, cache:put(key, "x"))
          local path = only_entry(dir)
          local size = gb * 1024 * 1024 * 1024
          for _, op in ipairs(order) do
            plant[kind](path, size, key)
            collectgarbage()
            local peak_reset = pcall(writefile, "/proc/self/clear_refs", "5")
            local rss = status("VmRSS")
            local t0 = system.monotime()
            local got = ops[op](cache, key)
            local dt = system.monotime() - t0
            local grown = math.max(status("VmRSS"), peak_reset and status("VmHWM") or 0) - rss
            assert.are.equal(want[op], got, op)
            assert.is_true(dt < 0.25 and grown < 50 * 1024,
              string.format("%s took %.3f s and grew resident memory by %d kB", op, dt, grown))
            if op == "put" then assert.are.equal("put", cache:get(key)) end
            if op == "increment" then assert.are.equal(3, cache:get(key)) end
            if op ~= "has" then
              assert.is_true(not exists(path) or #readfile(path) < 4096, op .. " left the huge file")
            end
          end
          assert.are.equal(true, cache:put(key, "normal"))
          assert.are.equal("normal", cache:get(key))
          assert.are.equal(true, cache:forget(key))
          assert.are.equal(5, cache:increment(key, 5))
        end)
      end
    end
  end)

  describe("a full or read-only disk", function()
    it("returns an error naming the file and the cause, and keeps the old value", function()
      local mnt = fresh_dir()
      assert(succeeds("mkdir -p " .. q(mnt)))
      if not succeeds("mount -t tmpfs -o size=256k tmpfs " .. q(mnt) .. " 2>/dev/null") then
        pending("mounting a small tmpfs needs root")
        return
      end
      finally(function() os.execute("umount " .. q(mnt)) end)
      local cache = open_store(mnt)
      assert.are.equal(true, cache:put("k", "old"))
      local entry = only_entry(mnt)
      -- Leave less room than one 64 KB value needs.
      os.execute("dd if=/dev/zero of=" .. q(mnt .. "/filler") .. " bs=4096 count=60 2>/dev/null")
      local ok, err = cache:put("k", values.make(1, 1))
      assert.is_nil(ok)
      assert.are.equal("store 'main' (file " .. mnt .. "): cannot write " .. entry
        .. ": No space left on device", err)
      assert.are.equal("old", cache:get("k"))
      assert.are.same({ entry:sub(#mnt + 2), "filler" }, list(mnt))
      os.execute("rm " .. q(mnt .. "/filler"))
      assert.are.equal(true, cache:put("k", values.make(1, 2)))
      assert.are.equal(values.make(1, 2), cache:get("k"))

      assert(succeeds("mount -o remount,ro " .. q(mnt)))
      ok, err = cache:put("k", "new")
      assert.is_nil(ok)
      assert.are.equal("store 'main' (file " .. mnt .. "): cannot write " .. entry
        .. ": Read-only file system", err)
      assert.are.equal(values.make(1, 2), cache:get("k"))
      cache:close()
    end)
  end)

  describe("between processes", function()
    it("4 processes x 500 increments of one key give exactly 2000", function()
      local dir = fresh_dir()
      local cmd = {}
      for i = 1, 4 do
        cmd[i] = launch .. " incr " .. q(dir) .. " counter 500 >" .. q(dir .. ".out" .. i) .. " 2>&1 &"
      end
      os.execute("mkdir -p " .. q(dir) .. "; " .. table.concat(cmd, " ") .. " wait")
      for i = 1, 4 do assert.are.equal("ok\n", readfile(dir .. ".out" .. i)) end
      local cache = open_store(dir)
      assert.are.equal(2000, cache:get("counter"))
      cache:close()
    end)

    it("8 processes racing add on one key: exactly one gets true", function()
      local dir = fresh_dir()
      for round = 1, 5 do
        local sync = dir .. ".sync" .. round
        local cmd = { "mkdir -p " .. q(sync) .. ";" }
        for i = 1, 8 do
          cmd[#cmd + 1] = launch .. " add " .. q(dir) .. " lock" .. round .. " " .. q(sync) .. " " .. i
            .. " >" .. q(sync .. "/out" .. i) .. " 2>&1 &"
        end
        cmd[#cmd + 1] = "while [ $(ls " .. q(sync) .. " | grep -c ready) -lt 8 ]; do sleep 0.01; done;"
        cmd[#cmd + 1] = "touch " .. q(sync .. "/go") .. "; wait"
        os.execute(table.concat(cmd, " "))
        local results = {}
        for i = 1, 8 do results[#results + 1] = readfile(sync .. "/out" .. i) end
        table.sort(results)
        assert.are.same({ "false\n", "false\n", "false\n", "false\n", "false\n", "false\n",
          "false\n", "true\n" }, results)
        local cache = open_store(dir)
        assert.is_truthy(cache:get("lock" .. round):match("^winner [1-8]$"))
        cache:close()
      end
    end)

    it("a reader never sees a mix of two writers' 64 KB values", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      assert.are.equal(true, cache:put("k", values.make(0, 0)))
      local stop = dir .. ".stop"
      local out = sh(table.concat({
        launch, "write", q(dir), "k 1", q(stop), "- >", q(dir .. ".w1"), "2>&1 &",
        launch, "write", q(dir), "k 2", q(stop), "- >", q(dir .. ".w2"), "2>&1 &",
        launch, "read", q(dir), "k 2000 2>&1;",
        "touch", q(stop) .. "; wait" }, " "))
      assert.are.equal("2000 0 0\n", out)
      local w1 = readfile(dir .. ".w1"):match("^ok (%d+)\n$")
      local w2 = readfile(dir .. ".w2"):match("^ok (%d+)\n$")
      assert.is_truthy(w1, readfile(dir .. ".w1"))
      assert.is_truthy(w2, readfile(dir .. ".w2"))
      -- Both writers really overwrote the key while it was read.
      assert.is_true(tonumber(w1) > 1 and tonumber(w2) > 1)
      assert.is_truthy(values.parse(cache:get("k")))
      cache:close()
    end)

    it("a writer killed with SIGKILL mid-loop leaves only whole values", function()
      local dir = fresh_dir()
      local cache = open_store(dir)
      assert.are.equal(true, cache:put("k", values.make(0, 0)))
      for round = 1, 8 do
        local ready = dir .. ".ready" .. round
        os.execute(table.concat({
          launch, "write", q(dir), "k", tostring(round), "- ", q(ready), ">/dev/null 2>&1 & p=$!;",
          "while [ ! -e " .. q(ready) .. " ]; do sleep 0.01; done;",
          string.format("sleep 0.%02d;", 5 * round), "kill -9 $p; wait $p 2>/dev/null" }, " "))
        local writer, seq = values.parse(cache:get("k"))
        assert.are.equal(round, writer)
        assert.is_true(seq >= 1)
      end
      -- The entry is the only file that is not a temp file, and prune
      -- removes whatever temp file the last kill left.
      local files = list(dir)
      local entries = 0
      for _, f in ipairs(files) do
        if is_entry_name(f) then entries = entries + 1 else assert.is_truthy(f:match("^%x%x/%x%x/%x+%.tmp$"), f) end
      end
      assert.are.equal(1, entries)
      assert.are.equal(true, cache:prune())
      assert.are.equal(1, #list(dir))
      assert.are.equal(8, (values.parse(cache:get("k"))))
      cache:close()
    end)
  end)
end)
