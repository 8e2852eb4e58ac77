-- A running job holds a slot (member = job id, score = when the slot lapses) until it ends; slots of
-- workers that died lapse after the lock duration. KEYS[1]: the tenant's running set. ARGV: now, until,
-- job id, the tenant's cap, the set's TTL (ms). 1 when the slot is held, 0 when the tenant is at its cap.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
