-- spec/nginx/compare.lua: deep equality of values, for the nginx cases
-- (busted's assertions are not loaded there).
local M = {}

function M.same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not M.same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

return M
