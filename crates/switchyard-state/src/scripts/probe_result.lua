-- KEYS[1] breaker hash, KEYS[2] outcome buckets, KEYS[3] reporting nodes (see common.lua).
-- ARGV: offset, node, epoch, success (1/0), wait_base_ms, wait_max_ms, jitter_ms.
--
-- Applied only when the breaker is half-open, `node` owns the lease and `epoch` is the grant's. Success closes
-- (opens, misconfigured and buckets cleared; `closed_epoch` records the close, so older 429 cooldowns are stale);
-- failure re-opens for the next, longer wait.
local key = KEYS[1]
local now = now_ms()
local b = load_breaker(key)

if b.state ~= 'half_open' or b.probe_owner ~= ARGV[2] or b.epoch ~= tonumber(ARGV[3]) then
  return reply('unchanged', now, b)
end
if ARGV[4] == '1' then
  transition(b, 'closed')
  b.opens = 0
  b.open_until_ms = 0
  b.misconfigured = 0
  clear_probe(b)
  clear_buckets()
  redis.call('HSET', key, 'closed_epoch', b.epoch)
else
  open_for_next(b, now, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
end
save_breaker(key, b)
return reply('changed', now, b)
