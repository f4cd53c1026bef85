-- KEYS[1] escalation counters of one cascade stage (a hash). ARGV: offset, total, escalated, bucket_s, ttl_ms.
--
-- Adds to the current time bucket, fields `<bucket start second>:t` and `:e` of KEYS[1]. The hash expires `ttl_ms`
-- after its last write; buckets older than that are dropped once the hash holds about twice the fields it needs.
local now = now_ms()
local width = tonumber(ARGV[4])
local ttl_ms = tonumber(ARGV[5])
local second = math.floor(now / 1000)
local start = second - second % width
redis.call('HINCRBY', KEYS[1], start .. ':t', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], start .. ':e', tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
local buckets = math.ceil(ttl_ms / 1000 / width)
if redis.call('HLEN', KEYS[1]) > 4 * (buckets + 1) then
  local oldest = second - math.floor(ttl_ms / 1000)
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    local at = tonumber(string.match(field, '^(%-?%d+):'))
    if at == nil or at < oldest then
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
return now
