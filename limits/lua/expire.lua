-- expire.lua: release the customer's holds whose TTL has passed (the gateway's sweeper calls
-- it for the customers the partition's due set names; every other script does the same
-- lazily for the customer it touches). A hold is released exactly once: only an open hold is
-- released, and it is closed in the same step.
--
-- KEYS[1] customer_holds    the customer's open holds (zset)
-- KEYS[2] due               the partition's due set
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline (ignored: no caller waits on this script)
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- Reply: released|now_ms (released: how many holds were released)
local now = redis_now_ms(tonumber(ARGV[ARG_CLOCK_OFFSET_MS]))
local released = release_expired(ARGV[ARG_BASE], ARGV[ARG_CUSTOMER_ID], KEYS[KEY_DUE],
  KEYS[KEY_OUTBOX], now)
if released == 0 then
  -- Nothing was due: the due entry was early (the hold was captured or voided meanwhile).
  update_due(KEYS[KEY_CUSTOMER_HOLDS], KEYS[KEY_DUE], ARGV[ARG_CUSTOMER_ID])
end
return fmt(released) .. '|' .. fmt(now)
