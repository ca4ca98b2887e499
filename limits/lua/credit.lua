-- credit.lua: the customer's limits as they stand now, after releasing expired holds.
--
-- KEYS[1] customer hash   KEYS[2] partition due set   KEYS[3] partition outbox
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base   ARGV[3] customer id
-- Returns {now ms, field, value, field, value, ...} (the customer hash, then F_TZ_SCHEDULE
-- and the schedule of the customer's zone from the partition's shared `tz` hash), or {now ms}
-- if the customer is unknown.
local now = redis_now_ms(tonumber(ARGV[1]))
if redis.call('EXISTS', KEYS[1]) == 0 then return {fmt(now)} end
release_expired(ARGV[2], ARGV[3], KEYS[2], KEYS[3], now)
local reply = redis.call('HGETALL', KEYS[1])
table.insert(reply, 1, fmt(now))
reply[#reply + 1] = F_TZ_SCHEDULE
reply[#reply + 1] = zone_schedule(ARGV[2], redis.call('HGET', KEYS[1], F_TIMEZONE))
return reply
