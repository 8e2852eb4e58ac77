-- The position alone (the two-round-trip fallback, ADR 0019). KEYS: the tenant's fair hash, then with a
-- claim the job's key and the claim's key. ARGV: position cap, fair hash TTL (ms), claim TTL (ms).
-- Returns the position, or 0 (nothing counted) when the job exists or another call claimed its id:
-- `Queue.add` comes after this script, so concurrent callers need the claim to take one position
-- between them.
local rcall = redis.call
if KEYS[2] and (rcall('EXISTS', KEYS[2]) == 1
  or not rcall('SET', KEYS[3], '1', 'PX', ARGV[3], 'NX')) then return 0 end
local keelFair, keelMax, keelTtl = KEYS[1], ARGV[1], ARGV[2]
--[[keel:fair-position]]
return p
