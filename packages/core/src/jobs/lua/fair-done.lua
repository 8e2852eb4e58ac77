-- A tenant's job is done for good: once as many are done as were enqueued, the tenant has nothing
-- pending and its next job starts again from position 1. KEYS[1]: the fair hash; ARGV[1]: its TTL (ms).
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
if done >= last then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return last - done
