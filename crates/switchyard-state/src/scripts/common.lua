-- Shared prelude of every switchyard breaker script (prepended by the Rust side before the script's own body).
--
-- Time is always Redis TIME in Unix milliseconds, plus ARGV[1], an offset that is 0 in production and that only
-- the test harness moves (so the conformance suite can advance time on a real Redis). Every script returns the
-- same reply: {effect, now_ms, state, epoch, opens, open_until_ms, probe_owner, probe_until_ms, misconfigured}.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
end

local function load_breaker(key)
  local v = redis.call('HMGET', key, 'state', 'epoch', 'opens', 'open_until_ms', 'probe_owner', 'probe_until_ms',
    'misconfigured')
  return {
    state = v[1] or 'closed',
    epoch = tonumber(v[2] or '0'),
    opens = tonumber(v[3] or '0'),
    open_until_ms = tonumber(v[4] or '0'),
    probe_owner = v[5] or '',
    probe_until_ms = tonumber(v[6] or '0'),
    misconfigured = tonumber(v[7] or '0'),
  }
end

local function save_breaker(key, b)
  redis.call('HSET', key, 'state', b.state, 'epoch', b.epoch, 'opens', b.opens, 'open_until_ms', b.open_until_ms,
    'probe_owner', b.probe_owner, 'probe_until_ms', b.probe_until_ms, 'misconfigured', b.misconfigured)
end

local function reply(effect, now, b)
  return {effect, now, b.state, b.epoch, b.opens, b.open_until_ms, b.probe_owner, b.probe_until_ms, b.misconfigured}
end

-- Moves to `state`, bumping the epoch.
local function transition(b, state)
  b.state = state
  b.epoch = b.epoch + 1
end

local function clear_probe(b)
  b.probe_owner = ''
  b.probe_until_ms = 0
end

-- min(base * 2^(opens - 1), max) + jitter, exactly as `types::wait_ms`.
local function wait_ms(base, max, jitter, opens)
  local wait = base
  for _ = 2, opens do
    if wait >= max then
      break
    end
    wait = wait * 2
  end
  if wait > max then
    wait = max
  end
  return wait + jitter
end

-- Opens for the next consecutive open's wait.
local function open_for_next(b, now, base, max, jitter)
  b.opens = b.opens + 1
  transition(b, 'open')
  b.open_until_ms = now + wait_ms(base, max, jitter, b.opens)
  clear_probe(b)
end

-- Deletes the outcome buckets and node sets that can still exist: buckets expire `window + 1 s` after their last
-- write, and the last report stored its window in the breaker hash. All these keys share the provider's hash tag.
local function clear_buckets(key, now)
  local window = tonumber(redis.call('HGET', key, 'window_s') or '0')
  local second = math.floor(now / 1000)
  for i = 0, window + 1 do
    redis.call('DEL', key .. ':b:' .. (second - i), key .. ':nodes:' .. (second - i))
  end
end
