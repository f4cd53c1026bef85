-- KEYS[1] breaker hash, KEYS[2] outcome buckets, KEYS[3] reporting nodes (see common.lua).
-- ARGV: offset, node, epoch, successes, failures, slow_calls, hard_errors, window_s, failure_rate_threshold,
-- slow_call_rate_threshold (-1: off), minimum_calls, min_reporting_nodes, hard_error_minimum, wait_base_ms,
-- wait_max_ms, jitter_ms.
--
-- Adds the batch to the current second's fields of the bucket hash (`<second>:s|f|slow|h`) and, when it has bad
-- outcomes, makes the current second the node's score in the reporting set; then, if the breaker is closed and
-- the batch has bad outcomes, decides a trip over the window (see `TripPolicy`). A batch of successes only is counted
-- and nothing more: the trip is decided when failures arrive (they are reported every flush interval while they
-- happen), so a healthy provider's reports stay cheap.
local key = KEYS[1]
local now = now_ms()
local node = ARGV[2]
local epoch = tonumber(ARGV[3])
local s, f, slow, h = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window = tonumber(ARGV[8])

local b = load_breaker(key)
if epoch < b.epoch then
  return reply('stale', now, b)
end
if b.state == 'open' or b.state == 'half_open' or b.state == 'forced_open' then
  return reply('ignored', now, b)
end

local buckets, reporters = KEYS[2], KEYS[3]
local second = math.floor(now / 1000)
local ttl = (window + 1) * 1000
local bad = f > 0 or slow > 0 or h > 0
local prefix = second .. ':'
redis.call('HINCRBY', buckets, prefix .. 's', s)
if bad then
  redis.call('HINCRBY', buckets, prefix .. 'f', f)
  redis.call('HINCRBY', buckets, prefix .. 'slow', slow)
  redis.call('HINCRBY', buckets, prefix .. 'h', h)
end
redis.call('PEXPIRE', buckets, ttl)
-- Seconds older than the window are dropped once the hash holds about twice the fields the window needs, so the
-- work is constant per report on average and the hash stays bounded.
if redis.call('HLEN', buckets) > 8 * (window + 1) then
  local oldest = second - window
  for _, field in ipairs(redis.call('HKEYS', buckets)) do
    local at = tonumber(string.match(field, '^(%-?%d+):'))
    if at == nil or at < oldest then
      redis.call('HDEL', buckets, field)
    end
  end
end
if bad then
  redis.call('ZADD', reporters, 'GT', second, node)
  redis.call('ZREMRANGEBYSCORE', reporters, '-inf', '(' .. (second - window + 1))
  redis.call('PEXPIRE', reporters, ttl)
end
if b.state ~= 'closed' or not bad then
  return reply('counted', now, b)
end

local S, F, SLOW, H = 0, 0, 0, 0
for i = 0, window - 1 do
  local at = (second - i) .. ':'
  local v = redis.call('HMGET', buckets, at .. 's', at .. 'f', at .. 'slow', at .. 'h')
  S = S + tonumber(v[1] or '0')
  F = F + tonumber(v[2] or '0')
  SLOW = SLOW + tonumber(v[3] or '0')
  H = H + tonumber(v[4] or '0')
end
-- A node counts when its last bad report falls in the window's seconds.
local nodes = redis.call('ZCOUNT', reporters, second - window + 1, '+inf')

local threshold, slow_threshold = tonumber(ARGV[9]), tonumber(ARGV[10])
local minimum_calls, min_nodes, hard_minimum = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local trip, hard = false, false
if hard_minimum > 0 and H >= hard_minimum then
  trip, hard = true, true
else
  local calls = S + F + H
  if calls >= minimum_calls and nodes >= min_nodes then
    if F + H >= threshold * calls then
      trip = true
    elseif slow_threshold > 0 and SLOW >= slow_threshold * calls then
      trip = true
    end
  end
end
if not trip then
  return reply('counted', now, b)
end

open_for_next(b, now, tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16]))
if hard then
  b.misconfigured = 1
end
save_breaker(key, b)
if hard then
  return reply('tripped_hard', now, b)
end
return reply('tripped', now, b)
