-- put_result.lua: stores results, each unless the stored one supersedes it (the attempt
-- fence of `omniq_storage::result_supersedes`): a later attempt wins; at the same attempt a
-- success wins over a failure. Atomic, so a late worker's write can never land over the
-- result of the run that took over, whatever order the two arrive in.
--
-- KEYS[i] = the i-th result's key (one key per call on a cluster, whose result keys lie in
-- different slots; many on a single server, saving a script call per result).
-- ARGV[4i-3 .. 4i] = the i-th result: its encoding (a JSON meta line, a newline, the
-- value), its attempt, '1' when it is a failure, when it expires (Unix ms), '' for never,
-- or 'gone' when it has expired already.
-- Reply: how many were stored (or removed as expired); the others kept the stored result.

-- Whether the result stored as `current` (false for none) outranks one of attempt
-- `attempts` that is a failure or not.
local function kept(current, attempts, failure)
  if not current then
    return false
  end
  local line_end = string.find(current, '\n', 1, true)
  if not line_end then
    return false
  end
  local readable, meta = pcall(cjson.decode, string.sub(current, 1, line_end - 1))
  -- An unreadable stored result is replaced: reads would fail on it anyway.
  if not readable or type(meta) ~= 'table' then
    return false
  end
  local stored_attempts = tonumber(meta.attempts) or 0
  local stored_failure = meta.error ~= nil and meta.error ~= cjson.null
  return stored_attempts > attempts
    or (stored_attempts == attempts and failure and not stored_failure)
end

local stored = 0
for i, key in ipairs(KEYS) do
  local at = (i - 1) * 4
  local value, attempts, failure, expires = ARGV[at + 1], tonumber(ARGV[at + 2]),
    ARGV[at + 3] == '1', ARGV[at + 4]
  if not kept(redis.call('GET', key), attempts, failure) then
    if expires == 'gone' then
      redis.call('DEL', key)
    elseif expires == '' then
      redis.call('SET', key, value)
    else
      redis.call('SET', key, value, 'PXAT', expires)
    end
    stored = stored + 1
  end
end
return stored
