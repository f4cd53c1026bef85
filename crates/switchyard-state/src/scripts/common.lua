-- Shared prelude of every switchyard breaker script (prepended by the Rust side before the script's own body).
--
-- Every breaker script gets the same three keys, all under the provider's hash tag, so Redis Cluster routes the
-- script to one slot and no key name is ever built inside Lua: KEYS[1] the breaker hash `cb:{p}`, KEYS[2] the
-- outcome buckets `cb:{p}:b` (one hash, fields `<second>:s|f|slow|h`), KEYS[3] the nodes that reported trouble
-- `cb:{p}:n` (a sorted set, score = the last second the node reported a bad outcome).
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

-- Deletes the outcome buckets and the reporting nodes (KEYS[2] and KEYS[3]).
local function clear_buckets()
  redis.call('DEL', KEYS[2], KEYS[3])
end
