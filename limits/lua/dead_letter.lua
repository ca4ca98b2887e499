-- dead_letter.lua: move an outbox entry the ledger cannot book to the partition's dead-letter
-- stream: acknowledge it and, only if that acknowledgement took it off the pending list,
-- append it with the reason. Two workers holding the same entry write one letter.
--
-- KEYS[1] outbox            the partition's outbox stream
-- KEYS[2] dead_letter       its dead-letter stream (same hash tag)
-- ARGV[1] group             the consumer group
-- ARGV[2] entry_id          the entry id
-- ARGV[3..] field           field, value, ... of the letter
-- Reply: moved: 1 if moved, 0 if another worker had already acknowledged it.
if redis.call('XACK', KEYS[KEY_OUTBOX], ARGV[ARG_GROUP], ARGV[ARG_ENTRY_ID]) == 0 then return 0 end
redis.call('XADD', KEYS[KEY_DEAD_LETTER], '*', unpack(ARGV, ARG_FIELD))
return 1
