-- KEYS[1] breaker hash (KEYS[2] and KEYS[3] unused, see common.lua). ARGV: offset, epoch, retry_after_ms.
--
-- A 429 cooldown observed by a call admitted under `epoch`: open until max(open_until, now + retry_after).
-- Extends, never shortens; changes (and bumps the epoch) only when the state changes or the deadline moves.
-- Forced-open and disabled breakers are left alone. A cooldown observed before the breaker last closed
-- (`epoch` < the `closed_epoch` field, written by a successful probe or a reset) is stale and changes nothing.
local key = KEYS[1]
local now = now_ms()
local b = load_breaker(key)
local epoch = tonumber(ARGV[2])
local until_ms = now + tonumber(ARGV[3])

if epoch < tonumber(redis.call('HGET', key, 'closed_epoch') or '0') then
  return reply('stale', now, b)
end
if b.state == 'forced_open' or b.state == 'disabled' then
  return reply('unchanged', now, b)
end
if b.state == 'open' then
  if until_ms <= b.open_until_ms then
    return reply('unchanged', now, b)
  end
  b.open_until_ms = until_ms
  b.epoch = b.epoch + 1
else
  -- closed or half_open: open (a half-open probe lease is dropped)
  transition(b, 'open')
  b.open_until_ms = math.max(b.open_until_ms, until_ms)
  clear_probe(b)
end
save_breaker(key, b)
return reply('changed', now, b)
