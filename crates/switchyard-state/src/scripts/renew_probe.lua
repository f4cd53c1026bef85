-- KEYS[1] breaker hash (KEYS[2] and KEYS[3] unused, see common.lua). ARGV: offset, node, epoch, lease_ms.
--
-- The probe owner keeps its lease while the probe runs: applied only when the breaker is half-open, `node` owns
-- the lease of `epoch` and the lease has not expired. The lease then runs until at least now + lease_ms (never
-- shortened). Not a transition: the epoch stays.
local key = KEYS[1]
local now = now_ms()
local b = load_breaker(key)

if b.state ~= 'half_open' or b.probe_owner ~= ARGV[2] or b.epoch ~= tonumber(ARGV[3]) or now >= b.probe_until_ms then
  return reply('refused', now, b)
end
local until_ms = now + tonumber(ARGV[4])
if until_ms > b.probe_until_ms then
  b.probe_until_ms = until_ms
  redis.call('HSET', key, 'probe_until_ms', until_ms)
end
return reply('granted', now, b)
