-- Claims an idempotency key: KEYS[1] owner, KEYS[2] answer; ARGV[1] node, ARGV[2] ttl in ms.
-- Returns {'answered', answer}, {'owned', ''} or {'taken', owner}.
local answer = redis.call('GET', KEYS[2])
if answer then
  return {'answered', answer}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'owned', ''}
end
return {'taken', redis.call('GET', KEYS[1]) or ''}
