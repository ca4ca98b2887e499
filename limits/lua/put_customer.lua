-- put_customer.lua: create or replace a customer's status, timezone and caps. Usage (held
-- and used) is kept, so replacing the limits of a customer with open holds loses nothing;
-- caps that the new set does not name are removed (no cap: nothing to spend there).
--
-- KEYS[1] customer hash   KEYS[2] partition outbox
-- KEYS[3] the partition's timezone schedules (hash: zone -> schedule, shared by its customers)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] customer id   ARGV[3] status
-- ARGV[4] IANA timezone   ARGV[5] UTC-offset schedule (limits/calendar.py)
-- ARGV[6..] node, cap minor, node, cap minor, ...
-- Returns "OK|now ms" or "ERR|code|detail|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local status = ARGV[3]
if status ~= 'active' and status ~= 'frozen' and status ~= 'closed' and status ~= 'overdue' then
  return err(E_BAD_ARGUMENT, 'status', now)
end
local new_caps, caps_text, pairs_ = {}, {}, {}
for i = 6, #ARGV, 2 do
  local cap = int_arg(ARGV[i + 1], 0, CAP_MINOR_MAX)
  if not cap then return err(E_BAD_ARGUMENT, 'caps_minor', now) end
  new_caps[F_CAP .. ARGV[i]] = true
  caps_text[#caps_text + 1] = ARGV[i] .. '=' .. fmt(cap)
  pairs_[#pairs_ + 1] = F_CAP .. ARGV[i]
  pairs_[#pairs_ + 1] = fmt(cap)
end

-- After this point the change must succeed.
local fields = redis.call('HKEYS', KEYS[1])
for _, field in ipairs(fields) do
  if string.sub(field, 1, #F_CAP) == F_CAP and not new_caps[field] then
    redis.call('HDEL', KEYS[1], field)
  end
end
local seq = redis.call('HINCRBY', KEYS[1], F_EVENT_SEQ, 1)
redis.call('HSET', KEYS[1], F_STATUS, status, F_TIMEZONE, ARGV[4])
-- The newest schedule of a zone replaces the older: both start two days before their put.
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
if #pairs_ > 0 then redis.call('HSET', KEYS[1], unpack(pairs_)) end
redis.call('XADD', KEYS[2], '*', 'type', 'customer_put',
  'event_id', 'c:' .. ARGV[2] .. ':' .. fmt(seq), 'customer_id', ARGV[2], 'status', status,
  'timezone', ARGV[4], 'caps', table.concat(caps_text, ','), 'at_ms', fmt(now))
return 'OK|' .. fmt(now)
