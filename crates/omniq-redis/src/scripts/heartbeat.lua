-- heartbeat.lua: extends held leases, and stores a handler's progress on them.
--
-- Atomic because the token check and the extension must be one step: a lease recovered and
-- re-claimed between them would otherwise be extended for the wrong holder.
--
-- ARGV[4] = lease length from now (micros, added to the server's clock),
-- ARGV[5] = progress (JSON) to store on each held lease's task, '' for none,
-- ARGV[6..] = pairs of task id, lease token.
-- Reply: one of 'held', 'cancel' (held, cancellation requested), 'lost' per lease.

local deadline = int(server_micros() + tonumber(ARGV[4]))
local out = {}
local progress = ARGV[5]
for i = 6, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local tk = task_key(id)
  local h = redis.call('HMGET', tk, 'state', 'token', 'cancel')
  if h[1] == 'running' and h[2] == token then
    redis.call('HSET', tk, 'lease_at', deadline, 'updated_at', NOW_S)
    if progress ~= '' then
      redis.call('HSET', tk, 'progress', progress)
    end
    redis.call('ZADD', LEASES, deadline, id)
    if h[3] == '1' then
      out[#out + 1] = 'cancel'
    else
      out[#out + 1] = 'held'
    end
  else
    out[#out + 1] = 'lost'
  end
end
return out
