-- KEYS[1] escalation counter base key. ARGV: offset, total, escalated, bucket_s, ttl_ms.
--
-- Adds to the current time bucket `<KEYS[1]>:<bucket start second>` (hash total/escalated, same hash tag).
local now = now_ms()
local width = tonumber(ARGV[4])
local second = math.floor(now / 1000)
local bucket = KEYS[1] .. ':' .. (second - second % width)
redis.call('HINCRBY', bucket, 'total', tonumber(ARGV[2]))
redis.call('HINCRBY', bucket, 'escalated', tonumber(ARGV[3]))
redis.call('PEXPIRE', bucket, tonumber(ARGV[5]))
return now
