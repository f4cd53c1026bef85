-- KEYS[1] breaker hash (KEYS[2] and KEYS[3] unused, see common.lua). ARGV: offset.
--
-- Reads the breaker and Redis TIME together, so the remaining open time is exact.
return reply('read', now_ms(), load_breaker(KEYS[1]))
