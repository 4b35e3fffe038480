-- spec/nginx/runner.lua (content_by_lua_file): runs the nginx suite's cases
-- (spec/nginx/cases.lua), one per request, so that a case that breaks its
-- request cannot take the others with it.
--   /?list            "N name" for every case
--   /?n=N             "ok N name" or "not ok N name: reason"
--   /?concurrent=I&run=R   one of the three parallel requests (cases.concurrent)
--   /?interop=put|get|mcput|mcget  the nginx half of the interop with plain Lua
--                     (cases.interop; mc: the memcached store on three servers)
--   /?mcplace=1       300 keys on a cosocket over three memcached servers (cases.mc_place)
local cases = require("cases")
local args = ngx.req.get_uri_args()

local function one_line(s)
  return (tostring(s):gsub("%s*\n%s*", " | "))
end

if args.list then
  for i, c in ipairs(cases.list) do ngx.say(i, " ", c.name) end
  return
end

if args.concurrent then
  local ok, line = pcall(cases.concurrent, tonumber(args.concurrent), args.run or "0")
  ngx.say(ok and line or (args.concurrent .. " raised " .. one_line(line)))
  return
end

if args.mcplace then
  local ok, line = pcall(cases.mc_place)
  ngx.say(ok and line or ("raised " .. one_line(line)))
  return
end

if args.interop then
  local ok, line = pcall(cases.interop, args.interop)
  ngx.say(ok and line or ("raised " .. one_line(line)))
  return
end

local n = tonumber(args.n)
local c = n and cases.list[n]
if not c then
  ngx.status = 404
  ngx.say("no case ", tostring(args.n))
  return
end
local ok, err = pcall(c.fn)
if ok and type(err) == "string" then       -- a pending case: why it is skipped
  ngx.say("ok ", n, " ", c.name, " # SKIP ", one_line(err))
elseif ok then
  ngx.say("ok ", n, " ", c.name)
else
  ngx.say("not ok ", n, " ", c.name, ": ", one_line(err))
end
