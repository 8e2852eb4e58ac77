-- The tenant's next fair position, into the local `p` (ADR 0013): 1 when the tenant has nothing pending,
-- else one more than its last position, capped at `keelMax`. One hash per tenant: `last` counts the
-- tenant's enqueues and `done` its finished jobs since it last had nothing pending (fair-done.lua deletes
-- the hash when they meet), so taking a position is one command. The hash expires `keelTtl` ms after the
-- start of a busy period or the last finished job, so a count that drifted (a worker died before counting
-- its job done) heals once the tenant is idle.
-- A block, not a script: its includer sets the locals `rcall`, `keelFair`, `keelMax` and `keelTtl`.
local p = rcall('HINCRBY', keelFair, 'last', 1)
if p == 1 then rcall('PEXPIRE', keelFair, keelTtl) end
if p > tonumber(keelMax) then p = tonumber(keelMax) end
