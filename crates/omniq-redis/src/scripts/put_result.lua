-- put_result.lua: stores a result unless the stored one supersedes it (the attempt fence of
-- `omniq_storage::result_supersedes`): a later attempt wins; at the same attempt a success
-- wins over a failure. Atomic, so a late worker's write can never land over the result of
-- the run that took over, whatever order the two arrive in.
--
-- KEYS[1] = the result key.
-- ARGV[1] = the encoded result (a JSON meta line, a newline, the value), ARGV[2] = its
-- attempt, ARGV[3] = '1' when it is a failure, ARGV[4] = when it expires (Unix ms), '' for
-- never, or 'gone' when it has expired already.
-- Reply: 1 when stored (or removed as expired), 0 when the stored result was kept.

local current = redis.call('GET', KEYS[1])
if current then
  local line_end = string.find(current, '\n', 1, true)
  if line_end then
    local readable, meta = pcall(cjson.decode, string.sub(current, 1, line_end - 1))
    -- An unreadable stored result is replaced: reads would fail on it anyway.
    if readable and type(meta) == 'table' then
      local attempts = tonumber(meta.attempts) or 0
      local failed = meta.error ~= nil and meta.error ~= cjson.null
      local new_attempts, new_failed = tonumber(ARGV[2]), ARGV[3] == '1'
      if attempts > new_attempts or (attempts == new_attempts and new_failed and not failed) then
        return 0
      end
    end
  end
end
if ARGV[4] == 'gone' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[4])
end
return 1
