-- due.lua: the customers of one partition whose earliest open hold has expired by Redis'
-- clock (the sweeper then runs expire.lua for each). Reads only.
--
-- KEYS[1] due               the partition's due set (zset: customer id, earliest expiry ms)
-- ARGV[1] clock_offset_ms   added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline (ignored: no caller waits on this script)
-- ARGV[3] caller            ignored: nothing is written
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] count_max         at most this many customers (1..SWEEP_CUSTOMERS_PER_PARTITION_MAX)
-- Reply: {now_ms, customer_id, ...}
local now = redis_now_ms(tonumber(ARGV[ARG_CLOCK_OFFSET_MS]))
local count_max = int_arg(ARGV[ARG_COUNT_MAX], 1, SWEEP_CUSTOMERS_PER_PARTITION_MAX)
if not count_max then return err(E_BAD_ARGUMENT, 'due', now) end
local reply = redis.call('ZRANGE', KEYS[KEY_DUE], '-inf', now, 'BYSCORE', 'LIMIT', 0, count_max)
table.insert(reply, 1, fmt(now))
return reply
