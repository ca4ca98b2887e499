-- reverse.lua: ISO 8583 0400. A terminal that got no answer reverses its authorization by
-- the ORIGINAL request's idempotency key. If the original was approved and its hold is still
-- open, the hold's remainder is released at every level and the hold closes as `reversed`.
-- If the original was never seen, a tombstone takes its idempotency record, so the original
-- arriving late (with any payload) and every retry of it are declined REVERSED. The first
-- answer is stored in the reversal's own record and returned to every repeat.
--
-- A caller bound to merchants sees only its merchants' originals: an approved original whose
-- hold is another merchant's, or a stored answer naming such a hold, is answered as an
-- original never seen (`tombstoned`) and nothing is written: a tombstone or a record here
-- would answer the original's own merchant (docs/lifecycle.md, "Merchant binding").
--
-- KEYS[1] customer                   the customer hash
-- KEYS[2] customer_holds             the customer's open holds (zset)
-- KEYS[3] due                        the partition's due set
-- KEYS[4] outbox                     the partition's outbox (stream)
-- KEYS[5] original_idempotency       the original's authorize idempotency record (`ia:`): a
--                                    decline's, or a tombstone; an approval has none, its
--                                    hold's id derives from this key (derived_hold_id)
-- KEYS[6] reversal                   the reversal's record (`iz:`)
-- ARGV[1] clock_offset_ms            ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms                the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller                     the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope             the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base                       the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id                the customer id
-- ARGV[7] original_idempotency_key   the original's idempotency key
-- Reply: OK|outcome|hold_id|released_minor|decided_at_ms, outcome one of released,
--   already_closed, original_declined, tombstoned.
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, customer_id, original_key =
  ARGV[ARG_BASE], ARGV[ARG_CUSTOMER_ID], ARGV[ARG_ORIGINAL_IDEMPOTENCY_KEY]
-- A reversal has no payload of its own: every repeat is the same request.
local REVERSAL = 'reverse'
local scope = ARGV[ARG_MERCHANT_SCOPE]
local unseen = 'OK|tombstoned||0|' .. fmt(now)

local replay = idempotent_replay(KEYS[KEY_REVERSAL], REVERSAL, now)
if replay then
  local named = string.match(replay, '^OK|[%a_]+|([^|]+)|')
  if scope == '' or not named
      or in_scope(scope, redis.call('HGET', base .. K_HOLD .. named, H_MERCHANT)) then
    return replay
  end
  return unseen
end

local outcome, hold_id, released = 'tombstoned', '', 0
local product_id, merchant_id, currency, nodes = '', '', '', ''
local h = nil
-- A release is an event of the hold's; anything else is named by the reversal and its time.
local event_id = 'z:' .. customer_id .. '|' .. original_key .. ':' .. fmt(now)
local original = redis.call('GET', KEYS[KEY_ORIGINAL_IDEMPOTENCY])
local approved_id, approval_exists = approval_hold(base, KEYS[KEY_ORIGINAL_IDEMPOTENCY], now)
local hold_key = base .. K_HOLD .. approved_id
if original and string.sub(original, 1, #TOMBSTONE + 1) ~= TOMBSTONE .. '\n' then
  outcome = 'original_declined'  -- only declines keep a record
elseif not original and approval_exists then
  local owner, hidden = hold_owner(hold_key, scope, now)
  if hidden then return unseen end
  hold_id = approved_id
  -- Releases what had expired first (each a complete change with its own event); a hold
  -- that is closed is refused, which here means closed.
  local _, open, refusal = open_hold(hold_key, owner, base, hold_id, KEYS[KEY_DUE],
    KEYS[KEY_OUTBOX], now)
  if refusal then outcome = 'already_closed' else outcome, h = 'released', open end
end
-- (An earlier reversal's tombstone whose own record has gone answers tombstoned again.)

-- After this point the reversal must succeed.
if outcome == 'tombstoned' and not original then
  remember(KEYS[KEY_ORIGINAL_IDEMPOTENCY], TOMBSTONE, authorization_reply(R_REVERSED, '', '', 0,
    now, 0, 0, 0, 0, '', '', ''))
elseif outcome == 'released' then
  event_id = hold_event_id(hold_id, h[10], tonumber(h[5]) + 1)
  released = tonumber(h[2]) - tonumber(h[3])
  nodes, product_id, merchant_id, currency = h[4], h[6], h[7], h[8]
  ensure_layout(KEYS[KEY_CUSTOMER])
  change_levels(KEYS[KEY_CUSTOMER], split(nodes, ','), -released, 0)
  close_hold(hold_key, 'reversed', tonumber(h[5]) + 1, now)
  redis.call('ZREM', KEYS[KEY_CUSTOMER_HOLDS], hold_id)
  update_due(KEYS[KEY_CUSTOMER_HOLDS], KEYS[KEY_DUE], customer_id)
end
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'reversed',
  'event_id', event_id, 'customer_id', customer_id,
  'hold_id', hold_id, 'product_id', product_id, 'merchant_id', merchant_id,
  'currency', currency, 'nodes', nodes, 'outcome', outcome,
  'released_minor', fmt(released), 'at_ms', fmt(now), 'caller', ARGV[ARG_CALLER])
local reply = 'OK|' .. outcome .. '|' .. hold_id .. '|' .. fmt(released) .. '|' .. fmt(now)
-- The answer never outlives what it is about: a reversal of a declined original or of a
-- closed hold is forgotten with that record or hold, so a key used again later for a new
-- purchase is reversed afresh.
local about = nil
if outcome == 'original_declined' then about = KEYS[KEY_ORIGINAL_IDEMPOTENCY] end
if outcome == 'already_closed' then about = hold_key end
local left_ms = -1
if about then left_ms = redis.call('PTTL', about) end
if left_ms > 0 then
  redis.call('SET', KEYS[KEY_REVERSAL], REVERSAL .. '\n' .. reply, 'PX', left_ms)
  return reply
end
return remember(KEYS[KEY_REVERSAL], REVERSAL, reply)
