-- credit.lua: the customer's limits as they stand now, after releasing expired holds.
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] due               the partition's due set
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       ignored: a read (the expired holds it releases, any later call would)
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- Reply: {now_ms, field, value, ...} (the customer hash, then F_TZ_SCHEDULE and the schedule
--   of the customer's zone from the partition's shared `tz` hash), or {now_ms} if the
--   customer is unknown.
local now = redis_now_ms(tonumber(ARGV[ARG_CLOCK_OFFSET_MS]))
if redis.call('EXISTS', KEYS[KEY_CUSTOMER]) == 0 then return {fmt(now)} end
release_expired(ARGV[ARG_BASE], ARGV[ARG_CUSTOMER_ID], KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
ensure_layout(KEYS[KEY_CUSTOMER])
local reply = redis.call('HGETALL', KEYS[KEY_CUSTOMER])
table.insert(reply, 1, fmt(now))
reply[#reply + 1] = F_TZ_SCHEDULE
reply[#reply + 1] = zone_schedule(ARGV[ARG_BASE],
  redis.call('HGET', KEYS[KEY_CUSTOMER], F_TIMEZONE))
return reply
