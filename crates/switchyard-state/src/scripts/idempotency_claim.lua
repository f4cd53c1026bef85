-- Claims an idempotency key, or takes it over from a dead owner.
-- KEYS[1] fingerprint, KEYS[2] owner, KEYS[3] answer (one hash tag);
-- ARGV[1] fingerprint, ARGV[2] node, ARGV[3] retention in ms, ARGV[4] the dead owner to replace ('' to claim).
-- Returns {'conflict', ''}, {'answered', answer}, {'taken', owner} or {'owned', ''}.
local fp = redis.call('GET', KEYS[1])
if fp and fp ~= ARGV[1] then
  return {'conflict', ''}
end
local answer = redis.call('GET', KEYS[3])
if answer then
  return {'answered', answer}
end
local owner = redis.call('GET', KEYS[2])
if owner and (ARGV[4] == '' or owner ~= ARGV[4]) then
  return {'taken', owner}
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {'owned', ''}
