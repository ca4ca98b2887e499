-- put_customer.lua: create or replace a customer's status, timezone and caps. Usage (held
-- and used) is kept, so replacing the limits of a customer with open holds loses nothing;
-- caps that the new set does not name are removed (no cap: nothing to spend there).
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] outbox            the partition's outbox (stream)
-- KEYS[3] timezones         the partition's timezone schedules (hash: zone -> schedule,
--                           shared by its customers)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] customer_id       the customer id
-- ARGV[6] status            active, frozen, closed or overdue
-- ARGV[7] timezone          the IANA timezone
-- ARGV[8] schedule          its UTC-offset schedule (limits/calendar.py)
-- ARGV[9..] node            node, cap minor (0..CAP_MINOR_MAX), node, cap minor, ...
-- Reply: OK|decided_at_ms|status_before|caps_before, or ERR|code|detail|at_ms
--   (the customer before the change, for the audit log: its status, "" if it is new, and its
--   caps as "node=cap" joined by ',' in byte order)
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local status = ARGV[ARG_STATUS]
if status ~= 'active' and status ~= 'frozen' and status ~= 'closed' and status ~= 'overdue' then
  return err(E_BAD_ARGUMENT, 'status', now)
end
local new_caps, caps_text, pairs_ = {}, {}, {}
for i = ARG_NODE, #ARGV, 2 do
  local cap = int_arg(ARGV[i + 1], 0, CAP_MINOR_MAX)
  if not cap then return err(E_BAD_ARGUMENT, 'caps_minor', now) end
  new_caps[F_CAP .. ARGV[i]] = true
  caps_text[#caps_text + 1] = ARGV[i] .. '=' .. fmt(cap)
  pairs_[#pairs_ + 1] = F_CAP .. ARGV[i]
  pairs_[#pairs_ + 1] = fmt(cap)
end

local fields = redis.call('HGETALL', KEYS[KEY_CUSTOMER])
local status_before, caps_before, dropped = '', {}, {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == F_STATUS then status_before = fields[i + 1] end
  if string.sub(field, 1, #F_CAP) == F_CAP then
    caps_before[#caps_before + 1] = string.sub(field, #F_CAP + 1) .. '=' .. fields[i + 1]
    if not new_caps[field] then dropped[#dropped + 1] = field end
  end
end
table.sort(caps_before, bytes_less)

-- After this point the change must succeed.
if #dropped > 0 then redis.call('HDEL', KEYS[KEY_CUSTOMER], unpack(dropped)) end
local seq = redis.call('HINCRBY', KEYS[KEY_CUSTOMER], F_EVENT_SEQ, 1)
redis.call('HSET', KEYS[KEY_CUSTOMER], F_STATUS, status, F_TIMEZONE, ARGV[ARG_TIMEZONE])
-- The newest schedule of a zone replaces the older: both start two days before their put.
redis.call('HSET', KEYS[KEY_TIMEZONES], ARGV[ARG_TIMEZONE], ARGV[ARG_SCHEDULE])
if #pairs_ > 0 then redis.call('HSET', KEYS[KEY_CUSTOMER], unpack(pairs_)) end
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'customer_put',
  'event_id', 'c:' .. ARGV[ARG_CUSTOMER_ID] .. ':' .. fmt(seq),
  'customer_id', ARGV[ARG_CUSTOMER_ID], 'status', status,
  'timezone', ARGV[ARG_TIMEZONE], 'caps', table.concat(caps_text, ','), 'at_ms', fmt(now),
  'caller', ARGV[ARG_CALLER])
return 'OK|' .. fmt(now) .. '|' .. status_before .. '|' .. table.concat(caps_before, ',')
