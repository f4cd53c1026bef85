-- KEYS[1] escalation counters of one cascade stage (a hash). ARGV: offset, bucket_s, bucket_count.
--
-- Sums the newest `bucket_count` buckets, the current one included.
local now = now_ms()
local width = tonumber(ARGV[2])
local second = math.floor(now / 1000)
local current = second - second % width
local total, escalated = 0, 0
for i = 0, tonumber(ARGV[3]) - 1 do
  local start = current - i * width
  if start < 0 then
    break
  end
  local v = redis.call('HMGET', KEYS[1], start .. ':t', start .. ':e')
  total = total + tonumber(v[1] or '0')
  escalated = escalated + tonumber(v[2] or '0')
end
return {total, escalated}
