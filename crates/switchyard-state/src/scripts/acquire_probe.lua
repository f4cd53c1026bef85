-- KEYS[1] breaker hash (KEYS[2] and KEYS[3] unused, see common.lua). ARGV: offset, node, lease_ms.
--
-- The half-open probe lease: granted to exactly one node when the breaker is open past its deadline, or
-- half-open with an expired lease (epoch bump, new owner). The owner asking again within its lease gets the
-- same grant back. Everyone else is refused.
local key = KEYS[1]
local now = now_ms()
local node = ARGV[2]
local b = load_breaker(key)

local grant = false
if b.state == 'open' then
  grant = now >= b.open_until_ms
elseif b.state == 'half_open' then
  if b.probe_owner == node and now < b.probe_until_ms then
    return reply('granted', now, b)
  end
  grant = now >= b.probe_until_ms
end
if not grant then
  return reply('refused', now, b)
end

transition(b, 'half_open')
b.probe_owner = node
b.probe_until_ms = now + tonumber(ARGV[3])
save_breaker(key, b)
return reply('granted', now, b)
