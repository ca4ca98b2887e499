-- dead_letter.lua: move an outbox entry the ledger cannot book to the partition's dead-letter
-- stream: acknowledge it and, only if that acknowledgement took it off the pending list,
-- append it with the reason. Two workers holding the same entry write one letter.
--
-- KEYS[1] the partition's outbox stream   KEYS[2] its dead-letter stream (same hash tag)
-- ARGV[1] consumer group   ARGV[2] entry id   ARGV[3..] field, value, ... of the letter
-- Returns 1 if moved, 0 if another worker had already acknowledged it.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return 1
