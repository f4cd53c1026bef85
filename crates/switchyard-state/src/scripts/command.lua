-- KEYS[1] breaker hash, KEYS[2] outcome buckets, KEYS[3] reporting nodes (see common.lua).
-- ARGV: offset, command (force_open, disable or reset).
--
-- Operator commands; each always bumps the epoch. Reset also clears consecutive opens, the misconfigured flag
-- and the outcome buckets, and records the close in `closed_epoch` (older 429 cooldowns are then stale).
local key = KEYS[1]
local now = now_ms()
local command = ARGV[2]
local b = load_breaker(key)

if command == 'force_open' then
  transition(b, 'forced_open')
elseif command == 'disable' then
  transition(b, 'disabled')
elseif command == 'reset' then
  transition(b, 'closed')
  b.opens = 0
  b.misconfigured = 0
  clear_buckets()
  redis.call('HSET', key, 'closed_epoch', b.epoch)
else
  return redis.error_reply('unknown switchyard breaker command ' .. command)
end
b.open_until_ms = 0
clear_probe(b)
save_breaker(key, b)
return reply('changed', now, b)
