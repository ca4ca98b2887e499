-- expire.lua: release the customer's holds whose TTL has passed (the gateway's sweeper calls
-- it for the customers the partition's due set names; every other script does the same
-- lazily for the customer it touches). A hold is released exactly once: only an open hold is
-- released, and it is closed in the same step.
--
-- KEYS[1] customer's open holds (zset)   KEYS[2] partition due set   KEYS[3] partition outbox
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base   ARGV[3] customer id
-- Returns "released count|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local released = release_expired(ARGV[2], ARGV[3], KEYS[2], KEYS[3], now)
if released == 0 then
  -- Nothing was due: the due entry was early (the hold was captured or voided meanwhile).
  update_due(KEYS[1], KEYS[2], ARGV[3])
end
return fmt(released) .. '|' .. fmt(now)
