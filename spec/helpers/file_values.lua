-- spec/helpers/file_values.lua: 64 KB values for the file store's
-- multi-process specs. Each value says which write it is ("writer:seq:")
-- and its body follows from that, so a reader can tell a whole value from
-- one mixed from two writes.
local M = {}

M.SIZE = 64 * 1024

function M.make(writer, seq)
  local head = string.format("%d:%d:", writer, seq)
  local token = string.format("<%d.%d>", writer, seq)
  local body = string.rep(token, math.ceil((M.SIZE - #head) / #token))
  return head .. body:sub(1, M.SIZE - #head)
end

-- The writer and seq of v if v is exactly one value `make` gives, else nil.
function M.parse(v)
  if type(v) ~= "string" then return nil end
  local writer, seq = v:match("^(%d+):(%d+):")
  if not writer then return nil end
  writer, seq = tonumber(writer), tonumber(seq)
  if v ~= M.make(writer, seq) then return nil end
  return writer, seq
end

return M
