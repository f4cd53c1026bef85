-- Stores the answer of an idempotency key and keeps its fingerprint and owner as long.
-- KEYS[1] fingerprint, KEYS[2] owner, KEYS[3] answer (one hash tag); ARGV[1] answer, ARGV[2] retention in ms.
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
