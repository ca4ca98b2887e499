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
local new_caps, caps_text, named = {}, {}, {}
for i = ARG_NODE, #ARGV, 2 do
  local cap = int_arg(ARGV[i + 1], 0, CAP_MINOR_MAX)
  if not cap then return err(E_BAD_ARGUMENT, 'caps_minor', now) end
  if not new_caps[ARGV[i]] then named[#named + 1] = ARGV[i] end
  new_caps[ARGV[i]] = fmt(cap)
  caps_text[#caps_text + 1] = ARGV[i] .. '=' .. fmt(cap)
end

ensure_layout(KEYS[KEY_CUSTOMER])
local fields = redis.call('HGETALL', KEYS[KEY_CUSTOMER])
local status_before, caps_before, kept, writes, dropped = '', {}, {}, {}, {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == F_STATUS then status_before = fields[i + 1] end
  if string.sub(field, 1, #F_LEVEL) == F_LEVEL then
    -- A level keeps its usage and raise under its new cap; a level left without a cap goes
    -- once nothing else is in it.
    local node = string.sub(field, #F_LEVEL + 1)
    local cap, held, used, raise = level_texts(fields[i + 1])
    if cap ~= '' then caps_before[#caps_before + 1] = node .. '=' .. cap end
    local new_cap = new_caps[node] or ''
    kept[node] = true
    if new_cap == '' and held == '0' and used == '0' and raise == '' then
      dropped[#dropped + 1] = field
    elseif new_cap ~= cap then
      writes[#writes + 1] = field
      writes[#writes + 1] = new_cap .. ':' .. held .. ':' .. used .. raise
    end
  end
end
table.sort(caps_before, bytes_less)
for _, node in ipairs(named) do
  if not kept[node] then
    writes[#writes + 1] = F_LEVEL .. node
    writes[#writes + 1] = new_caps[node] .. ':0:0'
  end
end

if #dropped > 0 then redis.call('HDEL', KEYS[KEY_CUSTOMER], unpack(dropped)) end
local seq = redis.call('HINCRBY', KEYS[KEY_CUSTOMER], F_EVENT_SEQ, 1)
redis.call('HSET', KEYS[KEY_CUSTOMER], F_STATUS, status, F_TIMEZONE, ARGV[ARG_TIMEZONE],
  F_LAYOUT, CUSTOMER_LAYOUT, unpack(writes))
redis.call('HSET', KEYS[KEY_TIMEZONES], ARGV[ARG_TIMEZONE], ARGV[ARG_SCHEDULE])
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'customer_put',
  'event_id', 'c:' .. ARGV[ARG_CUSTOMER_ID] .. ':' .. fmt(seq),
  'customer_id', ARGV[ARG_CUSTOMER_ID], 'status', status,
  'timezone', ARGV[ARG_TIMEZONE], 'caps', table.concat(caps_text, ','), 'at_ms', fmt(now),
  'caller', ARGV[ARG_CALLER])
return 'OK|' .. fmt(now) .. '|' .. status_before .. '|' .. table.concat(caps_before, ',')
