"""The pure-Python model of the Lua scripts: the same KEYS and ARGV, the same replies, the same
writes, over an in-memory picture of the Redis keys. It is the readable specification of the
scripts; tests run one table of cases against both and, with hypothesis, compare the whole
Redis state with the model's after every step.

State layout (as Redis would hold it): a hash is dict[str, str], a sorted set dict[str, int],
a string str, a stream list[dict[str, str]]. Key expiry (PEXPIRE/EX) is not modelled: it only
forgets closed holds and old idempotency records long after they matter.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence

from creditgate.limits import calendar, constants, installments, keys
from creditgate.limits.levels import effective_cap
from creditgate.limits.reasons import DeclineReason as R
from creditgate.limits.reasons import ScriptError as E

HOLD_TTL_MS_MAX = constants.HOLD_TTL_S_MAX * 1000
# The fingerprint of every reversal: it has no payload of its own (limits/lua/reverse.lua).
_REVERSAL = "reverse"
RAISE_DURATION_MS_MAX = constants.RAISE_DURATION_S_MAX * 1000


def _int_arg(value: str, low: int, high: int) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


def _err(code: E, detail: str, now: int) -> str:
    return f"ERR|{int(code)}|{detail}|{now}"


class Model:
    """Runs the scripts' logic; `clock` returns the time Redis' TIME would (ms)."""

    def __init__(self, clock: Callable[[], int]):
        self.clock = clock
        self.state: dict[str, object] = {}

    # -- Redis primitives over the picture ------------------------------------------------
    def _hash(self, key: str) -> dict[str, str]:
        return self.state.setdefault(key, {})  # type: ignore[return-value]

    def _zset(self, key: str) -> dict[str, int]:
        return self.state.setdefault(key, {})  # type: ignore[return-value]

    def _hincrby(self, key: str, field: str, by: int) -> int:
        h = self._hash(key)
        h[field] = str(int(h.get(field, "0")) + by)
        return int(h[field])

    def _zrem(self, key: str, member: str) -> None:
        zset = self.state.get(key)
        if isinstance(zset, dict):
            zset.pop(member, None)
            if not zset:
                del self.state[key]

    def _xadd(self, key: str, **fields: str) -> None:
        self.state.setdefault(key, []).append(fields)  # type: ignore[union-attr]

    # -- the prelude (limits/lua/_lib.lua) --------------------------------------------------
    def _update_due(self, holds_key: str, due_key: str, customer_id: str) -> None:
        holds = self.state.get(holds_key) or {}
        if holds:
            first = min(holds.items(), key=lambda item: (item[1], item[0]))  # type: ignore
            self._zset(due_key)[customer_id] = first[1]
        else:
            self._zrem(due_key, customer_id)

    def _zone_schedule(self, base: str, zone: str) -> str:
        """The partition's shared UTC-offset schedule of a timezone (put_customer writes it)."""
        return self._hash(keys.timezones(base)).get(zone, "0")

    def _approval_hold(self, base: str, record_key: str, now: int) -> tuple[str, bool]:
        """approval_hold of limits/lua/_lib.lua: the approval's hold in this idempotency epoch
        or the one before, if it exists; else the id a new approval takes now."""
        epoch = keys.hold_epoch(now)
        for candidate in (epoch, epoch - 1):
            hold_id = keys.derived_hold_id(base, record_key, candidate)
            if keys.hold(base, hold_id) in self.state:
                return hold_id, True
        return keys.derived_hold_id(base, record_key, epoch), False

    def _path_id(self, base: str, node_list: str) -> str:
        """The short id a hold stores for its nodes, kept in the partition's `paths` hash; the
        list itself if the id is taken by another list."""
        path_id = keys.PATH_ID_MARK + hashlib.sha1(node_list.encode()).hexdigest()[:10]
        known = self._hash(keys.paths(base)).setdefault(path_id, node_list)
        return path_id if known == node_list else node_list

    def _hold_nodes(self, base: str, stored: str) -> str:
        """A hold's nodes, comma-joined, from its `n` field (a path id or the list)."""
        if not stored.startswith(keys.PATH_ID_MARK):
            return stored
        return self._hash(keys.paths(base))[stored]

    def _add_balance(self, customer_key: str, path: str, amount: int) -> None:
        """The balance drawn on one path (captured, not refunded or repaid); zero goes."""
        if amount == 0:
            return
        if self._hincrby(customer_key, keys.FIELD_BALANCE + path, amount) == 0:
            del self._hash(customer_key)[keys.FIELD_BALANCE + path]

    def _close_hold(self, hold_key: str, state: str, seq: int, now: int) -> None:
        self._hash(hold_key).update(st=state, sq=str(seq), cl=str(now))

    def _expire_hold(self, base: str, customer_id: str, hold_id: str, outbox_key: str,
                     now: int) -> int:
        hold_key = keys.hold(base, hold_id)
        h = self._hash(hold_key)
        if h.get("st") != "open":
            return 0
        path = self._hold_nodes(base, h["n"])  # a path id or the list
        released = int(h["a"]) - int(h["cp"])
        for node in path.split(","):
            self._hincrby(keys.customer(base, customer_id), keys.FIELD_HELD + node, -released)
        seq = int(h["sq"]) + 1
        self._close_hold(hold_key, "expired", seq, now)
        self._xadd(outbox_key, type="expired", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=customer_id, hold_id=hold_id, product_id=h["p"],
                   merchant_id=h["m"], currency=h["cur"], nodes=path,
                   released_minor=str(released), captured_total_minor=h["cp"], at_ms=str(now))
        return 1

    def _release_expired(self, base: str, customer_id: str, due_key: str, outbox_key: str,
                         now: int) -> int:
        holds_key = keys.customer_holds(base, customer_id)
        holds: dict[str, int] = self.state.get(holds_key) or {}  # type: ignore[assignment]
        due = sorted((score, hold_id) for hold_id, score in holds.items() if score <= now)
        due = due[: constants.EXPIRE_PER_CALL_MAX]
        released = 0
        for _, hold_id in due:
            released += self._expire_hold(base, customer_id, hold_id, outbox_key, now)
            self._zrem(holds_key, hold_id)
        if due:
            self._update_due(holds_key, due_key, customer_id)
        return released

    def _release_if_due(self, base: str, customer_id: str, hold_id: str, due_key: str,
                        outbox_key: str, now: int) -> None:
        h = self._hash(keys.hold(base, hold_id))
        if h.get("st") == "open" and int(h["x"]) <= now:
            self._expire_hold(base, customer_id, hold_id, outbox_key, now)
            holds_key = keys.customer_holds(base, customer_id)
            self._zrem(holds_key, hold_id)
            self._update_due(holds_key, due_key, customer_id)

    def _replay(self, record_key: str, fingerprint: str, now: int) -> str | None:
        prior = self.state.get(record_key)
        if prior is None:
            return None
        stored_fingerprint, _, reply = prior.partition("\n")  # type: ignore[union-attr]
        # A reversal's tombstone answers every payload with its stored REVERSED decline.
        if stored_fingerprint not in (fingerprint, keys.TOMBSTONE):
            return _err(E.IDEMPOTENCY_MISMATCH, "", now)
        return reply

    def _remember(self, record_key: str, fingerprint: str, reply: str) -> str:
        self.state[record_key] = fingerprint + "\n" + reply
        return reply

    # -- the scripts ------------------------------------------------------------------------
    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]):
        offset, *rest = args
        now = self.clock() + int(offset)
        return getattr(self, name)(list(keys_), rest, now)

    def reserve(self, k: list[str], a: list[str], now: int) -> str:
        base, customer_id, fingerprint, product_id = a[0], a[1], a[2], a[3]
        amount = _int_arg(a[4], 1, constants.AMOUNT_MINOR_MAX)
        ttl_ms = _int_arg(a[5], 1, HOLD_TTL_MS_MAX)
        rule_decline = _int_arg(a[6], 0, R.AMOUNT_ABOVE_MAXIMUM)
        limits = [_int_arg(v, 0, constants.VELOCITY_AMOUNT_MINOR_MAX) for v in a[11:15]]
        amount_min = _int_arg(a[15], 0, constants.AMOUNT_MINOR_MAX)
        amount_max = _int_arg(a[16], 0, constants.AMOUNT_MINOR_MAX)
        allow_partial = _int_arg(a[17], 0, 1)
        tolerance_bps = _int_arg(a[18], 0, constants.CAPTURE_TOLERANCE_BPS_MAX)
        incremental = _int_arg(a[19], 0, 1)
        months = _int_arg(a[20], 0, constants.INSTALLMENT_MONTHS_MAX)
        fee_bps = _int_arg(a[21], 0, constants.INSTALLMENT_FEE_BPS_MAX)
        nodes = a[22:]
        if amount is None or ttl_ms is None or rule_decline is None or None in limits \
                or amount_min is None or amount_max is None or allow_partial is None \
                or tolerance_bps is None or incremental is None or months is None \
                or months == 1 or fee_bps is None or not nodes:
            return _err(E.BAD_ARGUMENT, "reserve", now)
        day_amount_max, day_count_max, month_amount_max, month_count_max = limits  # type: ignore
        replay = self._replay(k[4], fingerprint, now)
        if replay is not None:
            return replay
        # An approval keeps no record: its hold (id derived from the record's key) holds the
        # fingerprint.
        hold_id, _ = self._approval_hold(base, k[4], now)
        hold_key = keys.hold(base, hold_id)
        prior: dict[str, str] | None = self.state.get(hold_key)  # type: ignore[assignment]
        if prior is not None and prior.get("fp") != fingerprint:
            return _err(E.IDEMPOTENCY_MISMATCH, "", now)

        def decline(reason: R, level: str, available: int, offer: int, offer_level: str,
                    levels: str) -> str:
            return self._remember(k[4], fingerprint, authorization_reply(
                reason, level, "", available, now, 0, 0, False, offer, offer_level, "", levels))

        if prior is None:
            # A new purchase: holds whose TTL has passed are released before the customer is
            # read (reserve.lua reads status and levels in one HMGET after the release).
            self._release_expired(base, customer_id, k[2], k[3], now)
        customer = self.state.get(k[0])
        status = customer.get(keys.FIELD_STATUS) if customer else None  # type: ignore[union-attr]
        if status is None:
            return decline(R.CUSTOMER_UNKNOWN, "", 0, 0, "", "")
        c: dict[str, str] = self.state[k[0]]  # type: ignore[assignment]

        def read_levels():
            # The effective cap: the cap plus the node's temporary raise while it lasts.
            caps = [effective_cap(int(c.get(keys.FIELD_CAP + node, 0)),
                                  c.get(keys.FIELD_RAISE + node), now) for node in nodes]
            helds = [int(c.get(keys.FIELD_HELD + node, 0)) for node in nodes]
            useds = [int(c.get(keys.FIELD_USED + node, 0)) for node in nodes]
            return list(zip(nodes, caps, helds, useds, strict=True))

        def levels_text(extra: int) -> str:
            return "".join(f"|{node}|{cap}|{held + extra}|{used}" for node, cap, held, used in rows)

        if prior is not None:
            # A retry of an approval: the first decision, the levels of now.
            rows = read_levels()
            approved_first = int(prior.get("a0", prior["a"]))
            plan_first = ""
            if "im" in prior:
                terms = prior["im"].split(":")
                plan_first = installment_plan_text(approved_first, int(terms[0]), int(terms[4]))
            return authorization_reply(
                R.NONE, "", hold_id, min(max(0, cap - held - used) for _, cap, held, used in rows),
                int(prior["x"]) - ttl_ms, int(prior["x"]), approved_first, "pa" in prior, 0,
                prior.get("pa", ""), plan_first, levels_text(0))
        rows = read_levels()
        frees = [max(0, cap - held - used) for _, cap, held, used in rows]
        available = min(frees)
        short_level = next((row[0] for row, free in zip(rows, frees, strict=True)
                            if amount > free), None)

        status_decline = {"frozen": R.CUSTOMER_FROZEN, "closed": R.CUSTOMER_CLOSED,
                          "overdue": R.CUSTOMER_OVERDUE}.get(status)  # type: ignore[call-overload]
        if status_decline is not None:
            return decline(status_decline, "", available, 0, "", levels_text(0))
        if rule_decline:
            return decline(R(rule_decline), "", available, 0, "", levels_text(0))
        has_velocity = any(limits)
        amount_reason = R.NONE  # VELOCITY_AMOUNT_EXCEEDED or INSUFFICIENT_CREDIT, if either
        day_amount = month_amount = 0
        if has_velocity:
            day, month = calendar.window_numbers(self._zone_schedule(base, c[keys.FIELD_TIMEZONE]),
                                                 now)
            day_amount, day_count = _window_usage(c.get(keys.FIELD_VELOCITY_DAY + product_id), day)
            month_amount, month_count = _window_usage(
                c.get(keys.FIELD_VELOCITY_MONTH + product_id), month)
            if (day_count_max and day_count + 1 > day_count_max) or (
                    month_count_max and month_count + 1 > month_count_max):
                return decline(R.VELOCITY_COUNT_EXCEEDED, "", available, 0, "", levels_text(0))
            if (day_amount_max and day_amount + amount > day_amount_max) or (
                    month_amount_max and month_amount + amount > month_amount_max):
                amount_reason = R.VELOCITY_AMOUNT_EXCEEDED
        if amount_reason == R.NONE and short_level is not None:
            amount_reason = R.INSUFFICIENT_CREDIT

        approved, partial, offer_level = amount, False, ""
        if amount_reason != R.NONE:
            offer, offer_level = counter_offer(counter_offer_candidates(
                nodes, frees, day_amount_max, day_amount, month_amount_max, month_amount))
            if offer < max(1, amount_min):
                offer = 0
            if not allow_partial or offer == 0:
                level = short_level if amount_reason == R.INSUFFICIENT_CREDIT else ""
                return decline(amount_reason, level or "", available, offer, offer_level,
                               levels_text(0))
            approved, partial = offer, True

        # After this point the reservation must succeed.
        node_list = ",".join(nodes)
        expires = now + ttl_ms
        plan = installment_plan_text(approved, months, fee_bps) if months else ""
        for node in nodes:
            self._hincrby(k[0], keys.FIELD_HELD + node, approved)
        if has_velocity:
            c[keys.FIELD_VELOCITY_DAY + product_id] = \
                f"{day}:{day_amount + approved}:{day_count + 1}"
            c[keys.FIELD_VELOCITY_MONTH + product_id] = \
                f"{month}:{month_amount + approved}:{month_count + 1}"
        hold = {"st": "open", "c": customer_id, "p": product_id, "a": str(approved), "cp": "0",
                "n": self._path_id(base, node_list), "x": str(expires), "sq": "1", "m": a[7],
                "cur": a[10], "fp": fingerprint}
        if partial:
            hold["pa"] = offer_level
        # The optional fields are written only when they apply: an open hold stays small.
        if tolerance_bps:
            hold["tb"] = str(tolerance_bps)
        if incremental:
            hold["ix"] = str(amount_max)
            hold["vx"] = f"{day_amount_max}:{month_amount_max}"
        if plan:
            hold["im"] = plan
        self.state[hold_key] = hold
        self._zset(k[1])[hold_id] = expires
        due = self._zset(k[2])
        if customer_id not in due or expires < due[customer_id]:
            due[customer_id] = expires
        extra = {"requested_minor": str(amount), "partial": "1"} if partial else {}
        if plan:
            extra["installment_plan"] = plan
        self._xadd(k[3], type="authorized", event_id=hold_event_id(hold_id, hold, 1),
                   customer_id=customer_id,
                   hold_id=hold_id, product_id=product_id, merchant_id=a[7], mcc=a[8],
                   channel=a[9], currency=a[10], nodes=node_list, amount_minor=str(approved),
                   expires_at_ms=str(expires), at_ms=str(now), **extra)
        # A partial approval names its binding level in the counter-offer level (amount 0).
        return authorization_reply(R.NONE, "", hold_id, available - approved, now, expires,
                                   approved, partial, 0, offer_level, plan,
                                   levels_text(approved))

    def increment(self, k: list[str], a: list[str], now: int) -> str:
        base, hold_id, fingerprint = a[0], a[1], a[2]
        increment = _int_arg(a[3], 1, constants.AMOUNT_MINOR_MAX)
        if increment is None:
            return _err(E.BAD_ARGUMENT, "increment", now)
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        # Refusals (nothing is remembered): the hold is unknown, closed, or not incremental.
        h, refusal = self._open_hold(k, base, hold_id, now)
        if refusal:
            return refusal
        path = self._hold_nodes(base, h["n"])  # a path id or the list
        if "ix" not in h:
            return _err(E.INCREMENT_NOT_ALLOWED, "", now)
        amount, captured, product_id = int(h["a"]), int(h["cp"]), h["p"]
        amount_max, expires = int(h["ix"]), int(h["x"])
        day_max, month_max = map(int, h["vx"].split(":"))
        customer_key = keys.customer(base, h["c"])
        c = self._hash(customer_key)
        nodes = path.split(",")
        caps = [effective_cap(int(c.get(keys.FIELD_CAP + node, 0)),
                              c.get(keys.FIELD_RAISE + node), now) for node in nodes]
        helds = [int(c.get(keys.FIELD_HELD + node, 0)) for node in nodes]
        useds = [int(c.get(keys.FIELD_USED + node, 0)) for node in nodes]
        rows = list(zip(nodes, caps, helds, useds, strict=True))
        frees = [max(0, cap - held - used) for _, cap, held, used in rows]
        available = min(frees)
        short_level = next((node for node, free in zip(nodes, frees, strict=True)
                            if increment > free), None)
        plan = h.get("im", "")

        def levels_text(extra: int) -> str:
            return "".join(f"|{node}|{cap}|{held + extra}|{used}" for node, cap, held, used in rows)

        def decline(reason: R, level: str, offer: int, offer_level: str) -> str:
            return self._remember(k[1], fingerprint, authorization_reply(
                reason, level, hold_id, available, now, expires, amount, False, offer,
                offer_level, plan, levels_text(0)) + f"|{amount - captured}")

        # Declines, in the documented order; each is remembered for idempotency.
        status = c.get(keys.FIELD_STATUS)
        if status is None:
            return decline(R.CUSTOMER_UNKNOWN, "", 0, "")
        status_decline = {"frozen": R.CUSTOMER_FROZEN, "closed": R.CUSTOMER_CLOSED,
                          "overdue": R.CUSTOMER_OVERDUE}.get(status)
        if status_decline is not None:
            return decline(status_decline, "", 0, "")
        # The windows count the increment's amount (not a purchase) when the product keeps them.
        day_field = keys.FIELD_VELOCITY_DAY + product_id
        month_field = keys.FIELD_VELOCITY_MONTH + product_id
        track = day_max + month_max > 0 or day_field in c or month_field in c
        day_amount = month_amount = 0
        if track:
            day, month = calendar.window_numbers(self._zone_schedule(base, c[keys.FIELD_TIMEZONE]),
                                                 now)
            day_amount, day_count = _window_usage(c.get(day_field), day)
            month_amount, month_count = _window_usage(c.get(month_field), month)
        reason = R.NONE
        if amount + increment > amount_max:
            reason = R.AMOUNT_ABOVE_MAXIMUM
        elif (day_max and day_amount + increment > day_max) or (
                month_max and month_amount + increment > month_max):
            reason = R.VELOCITY_AMOUNT_EXCEEDED
        elif short_level is not None:
            reason = R.INSUFFICIENT_CREDIT
        if reason != R.NONE:
            # The counter-offer: the largest increment that fits, named by its first bound.
            offer, offer_level = counter_offer([
                *counter_offer_candidates(nodes, frees, day_max, day_amount, month_max,
                                          month_amount),
                ("amount_max", max(0, amount_max - amount))])
            level = short_level if reason == R.INSUFFICIENT_CREDIT else ""
            return decline(reason, level or "", offer, offer_level)

        # After this point the increment must succeed.
        total = amount + increment
        for node in nodes:
            self._hincrby(customer_key, keys.FIELD_HELD + node, increment)
        if track:
            c[day_field] = f"{day}:{day_amount + increment}:{day_count}"
            c[month_field] = f"{month}:{month_amount + increment}:{month_count}"
        seq = int(h["sq"]) + 1
        h.setdefault("a0", h["a"])  # the first approved amount, for a retry of the original
        h.update(a=str(total), sq=str(seq))
        extra = {}
        if plan:
            # The plan is recomputed for the new principal, with the same term and fee.
            months, *_, fee_bps = plan.split(":")
            plan = installment_plan_text(total, int(months), int(fee_bps))
            h["im"] = plan
            extra["installment_plan"] = plan
        self._xadd(k[3], type="incremented", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=h["c"],
                   hold_id=hold_id, product_id=product_id, merchant_id=h["m"],
                   currency=h["cur"], nodes=path, amount_minor=str(increment),
                   amount_total_minor=str(total), at_ms=str(now), **extra)
        return self._remember(k[1], fingerprint, authorization_reply(
            R.NONE, "", hold_id, available - increment, now, expires, total, False, 0, "",
            plan, levels_text(increment)) + f"|{total - captured}")

    def set_raise(self, k: list[str], a: list[str], now: int) -> str:
        customer_id, node = a[0], a[1]
        raise_minor = _int_arg(a[2], 0, constants.CAP_MINOR_MAX)
        expires = _int_arg(a[3], 0, 2**63)
        if raise_minor is None or expires is None or not node:
            return _err(E.BAD_ARGUMENT, "set_raise", now)
        c: dict[str, str] | None = self.state.get(k[0])  # type: ignore[assignment]
        if c is None:
            return _err(E.CUSTOMER_UNKNOWN, "", now)
        # Removing a raise (0) needs no expiry; a raise must end in the future, within bounds.
        if raise_minor > 0 and expires <= now:
            return _err(E.RAISE_EXPIRES_IN_PAST, str(now), now)
        if raise_minor > 0 and expires > now + RAISE_DURATION_MS_MAX:
            return _err(E.RAISE_TOO_LONG, str(now + RAISE_DURATION_MS_MAX), now)

        # After this point the change must succeed.
        seq = self._hincrby(k[0], keys.FIELD_EVENT_SEQ, 1)
        if raise_minor > 0:
            c[keys.FIELD_RAISE + node] = f"{raise_minor}:{expires}"
        else:
            expires = 0
            c.pop(keys.FIELD_RAISE + node, None)
        self._xadd(k[1], type="limit_raised", event_id=f"c:{customer_id}:{seq}",
                   customer_id=customer_id, node=node, raise_minor=str(raise_minor),
                   expires_at_ms=str(expires), at_ms=str(now))
        return (f"OK|{c.get(keys.FIELD_CAP + node, '0')}|{raise_minor}"
                f"|{c.get(keys.FIELD_HELD + node, '0')}|{c.get(keys.FIELD_USED + node, '0')}"
                f"|{now}")

    def _open_hold(self, k: list[str], base: str, hold_id: str, now: int):
        """Capture's and void's common start: the hold after releasing expired holds, or the
        refusal (an ERR reply)."""
        hold = self.state.get(k[0])
        if hold is None:
            return None, _err(E.HOLD_NOT_FOUND, "", now)
        customer_id = hold["c"]  # type: ignore[index]
        self._release_expired(base, customer_id, k[2], k[3], now)
        self._release_if_due(base, customer_id, hold_id, k[2], k[3], now)
        h: dict[str, str] = self.state[k[0]]  # type: ignore[assignment]
        closed = {"expired": E.HOLD_EXPIRED, "voided": E.HOLD_VOIDED,
                  "captured": E.HOLD_CAPTURED, "reversed": E.HOLD_REVERSED}.get(h["st"])
        if closed is not None:
            return None, _err(closed, h["cl"], now)
        return h, None

    def capture(self, k: list[str], a: list[str], now: int) -> str:
        base, hold_id, fingerprint = a[0], a[1], a[2]
        amount = _int_arg(a[3], 1, constants.AMOUNT_MINOR_MAX)
        final = _int_arg(a[4], 0, 1)
        if amount is None or final is None:
            return _err(E.BAD_ARGUMENT, "capture", now)
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        h, refusal = self._open_hold(k, base, hold_id, now)
        if refusal:
            return refusal
        path = self._hold_nodes(base, h["n"])  # a path id or the list
        authorized, captured_before = int(h["a"]), int(h["cp"])
        held = authorized - captured_before
        # The product's capture tolerance (tips): captures may total a + floor(a * tb / 10000).
        capturable = authorized + authorized * int(h.get("tb", 0)) // 10_000 - captured_before
        if amount > capturable:
            return _err(E.CAPTURE_EXCEEDS_HELD, str(capturable), now)
        customer_id = h["c"]
        customer_key = keys.customer(base, customer_id)
        customer: dict[str, str] = self.state.get(customer_key) or {}  # type: ignore[assignment]
        nodes = path.split(",")
        excess = max(0, amount - held)
        # The excess is new credit: it adds to held + used and must fit every level.
        for node in nodes if excess else ():
            free = (effective_cap(int(customer.get(keys.FIELD_CAP + node, 0)),
                                  customer.get(keys.FIELD_RAISE + node), now)
                    - int(customer.get(keys.FIELD_HELD + node, 0))
                    - int(customer.get(keys.FIELD_USED + node, 0)))
            if excess > free:
                return _err(E.CAPTURE_EXCEEDS_CREDIT, node, now)

        # After this point the capture must succeed.
        released = held - (amount - excess) if final else 0
        held_after = held - (amount - excess) - released
        captured_total = captured_before + amount
        for node in nodes:
            self._hincrby(customer_key, keys.FIELD_HELD + node, -(amount - excess + released))
            self._hincrby(customer_key, keys.FIELD_USED + node, amount)
        self._add_balance(customer_key, path, amount)
        seq = int(h["sq"]) + 1
        state = "open"
        h.update(cp=str(captured_total), sq=str(seq))
        if held_after == 0:
            state = "captured"
            self._close_hold(k[0], state, seq, now)
            holds_key = keys.customer_holds(base, customer_id)
            self._zrem(holds_key, hold_id)
            self._update_due(holds_key, k[2], customer_id)
        self._xadd(k[3], type="captured", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=customer_id,
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=path, amount_minor=str(amount), released_minor=str(released),
                   excess_minor=str(excess), captured_total_minor=str(captured_total),
                   final=str(final), at_ms=str(now))
        return self._remember(k[1], fingerprint, f"OK|{state}|{amount}|{captured_total}"
                              f"|{released}|{held_after}|{excess}|{now}")

    def void(self, k: list[str], a: list[str], now: int) -> str:
        base, hold_id, fingerprint = a[0], a[1], a[2]
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        h, refusal = self._open_hold(k, base, hold_id, now)
        if refusal:
            return refusal
        path = self._hold_nodes(base, h["n"])  # a path id or the list

        # After this point the void must succeed.
        released = int(h["a"]) - int(h["cp"])
        customer_id = h["c"]
        customer_key = keys.customer(base, customer_id)
        for node in path.split(","):
            self._hincrby(customer_key, keys.FIELD_HELD + node, -released)
        seq = int(h["sq"]) + 1
        self._close_hold(k[0], "voided", seq, now)
        holds_key = keys.customer_holds(base, customer_id)
        self._zrem(holds_key, hold_id)
        self._update_due(holds_key, k[2], customer_id)
        self._xadd(k[3], type="voided", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=customer_id,
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=path, released_minor=str(released), captured_total_minor=h["cp"],
                   at_ms=str(now))
        return self._remember(k[1], fingerprint, f"OK|voided|{released}|{h['cp']}|{now}")

    def refund(self, k: list[str], a: list[str], now: int) -> str:
        base, hold_id, fingerprint = a[0], a[1], a[2]
        amount = _int_arg(a[3], 1, constants.AMOUNT_MINOR_MAX)
        if amount is None:
            return _err(E.BAD_ARGUMENT, "refund", now)
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        h: dict[str, str] | None = self.state.get(k[0])  # type: ignore[assignment]
        if h is None:
            return _err(E.HOLD_NOT_FOUND, "", now)
        path = self._hold_nodes(base, h["n"])  # a path id or the list
        refunded = int(h.get("rf", 0))
        refundable = int(h["cp"]) - refunded
        if amount > refundable:
            return _err(E.REFUND_EXCEEDS_CAPTURED, str(refundable), now)
        customer_key = keys.customer(base, h["c"])
        customer: dict[str, str] = self.state.get(customer_key) or {}  # type: ignore[assignment]
        # What the path still owes is restored; a refund of what was repaid is owed back.
        restored = min(amount, int(customer.get(keys.FIELD_BALANCE + path, 0)))
        overpaid = amount - restored

        # After this point the refund must succeed.
        if restored:
            for node in path.split(","):
                self._hincrby(customer_key, keys.FIELD_USED + node, -restored)
            self._add_balance(customer_key, path, -restored)
        if overpaid:
            self._hincrby(customer_key, keys.FIELD_CREDIT_BALANCE, overpaid)
        seq = int(h["sq"]) + 1
        h.update(rf=str(refunded + amount), sq=str(seq))
        self._xadd(k[2], type="refunded", event_id=hold_event_id(hold_id, h, seq),
                   customer_id=h["c"],
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=path, amount_minor=str(amount), restored_minor=str(restored),
                   overpaid_minor=str(overpaid), refunded_total_minor=str(refunded + amount),
                   at_ms=str(now))
        return self._remember(k[1], fingerprint, f"OK|{amount}|{refunded + amount}"
                              f"|{refundable - amount}|{restored}|{now}")

    def reverse(self, k: list[str], a: list[str], now: int) -> str:
        base, customer_id, original_key = a[0], a[1], a[2]
        replay = self._replay(k[5], _REVERSAL, now)
        if replay is not None:
            return replay
        outcome, hold_id, released = "tombstoned", "", 0
        product_id = merchant_id = currency = nodes = ""
        h: dict[str, str] | None = None
        original: str | None = self.state.get(k[4])  # type: ignore[assignment]
        approved_id, approval_exists = self._approval_hold(base, k[4], now)
        hold_key = keys.hold(base, approved_id)
        if original is not None and not original.startswith(keys.TOMBSTONE + "\n"):
            outcome = "original_declined"  # only declines keep a record
        elif original is None and approval_exists:
            hold_id = approved_id
            # Releases what had expired first; a closed hold is refused.
            h, refusal = self._open_hold([hold_key, "", k[2], k[3]], base, hold_id, now)
            outcome = "already_closed" if refusal else "released"
        # (An earlier reversal's tombstone whose own record has gone answers tombstoned again.)

        # After this point the reversal must succeed.
        if outcome == "tombstoned" and original is None:
            self._remember(k[4], keys.TOMBSTONE, authorization_reply(
                R.REVERSED, "", "", 0, now, 0, 0, False, 0, "", "", ""))
        event_id = f"z:{customer_id}|{original_key}:{now}"
        if outcome == "released":
            assert h is not None
            event_id = hold_event_id(hold_id, h, int(h["sq"]) + 1)
            released = int(h["a"]) - int(h["cp"])
            nodes = self._hold_nodes(base, h["n"])
            product_id, merchant_id, currency = h["p"], h["m"], h["cur"]
            for node in nodes.split(","):
                self._hincrby(k[0], keys.FIELD_HELD + node, -released)
            self._close_hold(hold_key, "reversed", int(h["sq"]) + 1, now)
            self._zrem(k[1], hold_id)
            self._update_due(k[1], k[2], customer_id)
        self._xadd(k[3], type="reversed", event_id=event_id,
                   customer_id=customer_id, hold_id=hold_id, product_id=product_id,
                   merchant_id=merchant_id, currency=currency, nodes=nodes, outcome=outcome,
                   released_minor=str(released), at_ms=str(now))
        return self._remember(k[5], _REVERSAL, f"OK|{outcome}|{hold_id}|{released}|{now}")

    def force_capture(self, k: list[str], a: list[str], now: int) -> str:
        if len(a) < 12:
            return _err(E.BAD_ARGUMENT, "force_capture", now)
        customer_id, hold_id, fingerprint, product_id = a[1], a[2], a[3], a[4]
        amount = _int_arg(a[5], 1, constants.AMOUNT_MINOR_MAX)
        merchant_id, mcc, channel, currency, original_id = a[6], a[7], a[8], a[9], a[10]
        nodes = a[11:]
        if amount is None:
            return _err(E.BAD_ARGUMENT, "force_capture", now)
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        # What had expired is released first (the customer's due holds, and the original if it
        # is the customer's): the original then counts as expired, and held is what it is.
        base = a[0]
        self._release_expired(base, customer_id, k[6], k[2], now)
        original: dict[str, str] = (  # type: ignore[assignment]
            (self.state.get(k[4]) or {}) if original_id else {})
        owner = original.get("c")
        if owner == customer_id:
            self._release_if_due(base, customer_id, original_id, k[6], k[2], now)

        # Refusals, in order. Any status may be force captured: the purchase happened.
        customer: dict[str, str] = self.state.get(k[0]) or {}  # type: ignore[assignment]
        if keys.FIELD_STATUS not in customer:
            return _err(E.CUSTOMER_UNKNOWN, "", now)
        if owner is not None:
            # A missing original is no obstacle; a voided, reversed or expired one may be force
            # captured once; a captured one was posted already.
            if owner != customer_id:
                return _err(E.HOLD_OF_OTHER_CUSTOMER, "", now)
            if original["st"] == "open":
                return _err(E.HOLD_STILL_OPEN, original["x"], now)
            if original["st"] == "captured":
                return _err(E.HOLD_CAPTURED, original["cl"], now)
            if "fx" in original:
                return _err(E.ALREADY_FORCE_CAPTURED, original["fx"], now)
        rows = [(node,
                 effective_cap(int(customer.get(keys.FIELD_CAP + node, 0)),
                               customer.get(keys.FIELD_RAISE + node), now),
                 int(customer.get(keys.FIELD_HELD + node, 0)),
                 int(customer.get(keys.FIELD_USED + node, 0))) for node in nodes]
        over = ",".join(node for node, cap, held, used in rows if held + used + amount > cap)

        # After this point the force capture must succeed.
        node_list = ",".join(nodes)
        for node in nodes:
            self._hincrby(k[0], keys.FIELD_USED + node, amount)
        self._add_balance(k[0], node_list, amount)
        hold = {"c": customer_id, "p": product_id, "a": str(amount), "cp": str(amount),
                "n": node_list, "m": merchant_id, "cur": currency, "t": str(now), "fc": "1"}
        if original_id:
            hold["oh"] = original_id
        self.state[k[3]] = hold
        self._close_hold(k[3], "captured", 1, now)
        if owner is not None:
            original["fx"] = hold_id  # a later force capture naming it is refused
        self._xadd(k[2], type="force_captured", event_id=f"{hold_id}:1",
                   customer_id=customer_id, hold_id=hold_id, product_id=product_id,
                   merchant_id=merchant_id, mcc=mcc, channel=channel, currency=currency,
                   nodes=node_list, amount_minor=str(amount), over_limit=over,
                   original_hold_id=original_id, at_ms=str(now))
        levels = "".join(f"|{node}|{cap}|{held}|{used + amount}" for node, cap, held, used in rows)
        return self._remember(k[1], fingerprint, f"OK|{hold_id}|{over}|{now}{levels}")

    def repay(self, k: list[str], a: list[str], now: int) -> str:
        customer_id, fingerprint = a[1], a[2]
        amount = _int_arg(a[3], 1, constants.AMOUNT_MINOR_MAX)
        order = a[4:]
        if amount is None or len(order) > constants.REPAY_PATHS_MAX:
            return _err(E.BAD_ARGUMENT, "repay", now)
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        customer: dict[str, str] = self.state.get(k[0]) or {}  # type: ignore[assignment]
        if not customer:
            return _err(E.CUSTOMER_UNKNOWN, "", now)
        balances = {field[len(keys.FIELD_BALANCE):]: int(value)
                    for field, value in customer.items() if field.startswith(keys.FIELD_BALANCE)}
        # The gateway's order, then the customer's other paths by name.
        walk = list(dict.fromkeys(order))
        listed = set(walk)
        walk += sorted(path for path in balances if path not in listed)
        left, allocations = amount, []
        for path in walk:
            if left == 0 or len(allocations) == constants.REPAY_PATHS_MAX:
                break
            if balances.get(path, 0) > 0:
                paid = min(left, balances[path])
                allocations.append((path, paid))
                left -= paid

        # After this point the repayment must succeed.
        def event(kind: str, nodes: str, value: int) -> None:
            seq = self._hincrby(k[0], keys.FIELD_EVENT_SEQ, 1)
            self._xadd(k[2], type=kind, event_id=f"c:{customer_id}:{seq}",
                       customer_id=customer_id, nodes=nodes, amount_minor=str(value),
                       at_ms=str(now))

        for path, paid in allocations:
            for node in path.split(","):
                self._hincrby(k[0], keys.FIELD_USED + node, -paid)
            self._add_balance(k[0], path, -paid)
            event("repaid", path, paid)
        if left:
            self._hincrby(k[0], keys.FIELD_CREDIT_BALANCE, left)
            event("overpaid", "", left)
        repaid = amount - left
        paths = "".join(f"|{path}|{paid}" for path, paid in allocations)
        return self._remember(k[1], fingerprint, f"OK|{repaid}|{left}"
                              f"|{sum(balances.values()) - repaid}|{now}{paths}")

    def expire(self, k: list[str], a: list[str], now: int) -> str:
        released = self._release_expired(a[0], a[1], k[1], k[2], now)
        if released == 0:
            self._update_due(k[0], k[1], a[1])
        return f"{released}|{now}"

    def credit(self, k: list[str], a: list[str], now: int) -> list[str]:
        if k[0] not in self.state:
            return [str(now)]
        self._release_expired(a[0], a[1], k[1], k[2], now)
        reply = [str(now)]
        c: dict[str, str] = self.state[k[0]]  # type: ignore[assignment]
        for field, value in c.items():
            reply += [field, value]
        return reply + [keys.FIELD_TZ_SCHEDULE, self._zone_schedule(a[0], c[keys.FIELD_TIMEZONE])]

    def put_customer(self, k: list[str], a: list[str], now: int) -> str:
        customer_id, status, timezone, schedule = a[0], a[1], a[2], a[3]
        if status not in ("active", "frozen", "closed", "overdue"):
            return _err(E.BAD_ARGUMENT, "status", now)
        new_caps: dict[str, str] = {}
        caps_text = []
        for node, value in zip(a[4::2], a[5::2], strict=True):
            cap = _int_arg(value, 0, constants.CAP_MINOR_MAX)
            if cap is None:
                return _err(E.BAD_ARGUMENT, "caps_minor", now)
            new_caps[keys.FIELD_CAP + node] = str(cap)
            caps_text.append(f"{node}={cap}")

        # After this point the change must succeed.
        c = self._hash(k[0])
        for field in [f for f in c if f.startswith(keys.FIELD_CAP) and f not in new_caps]:
            del c[field]
        seq = self._hincrby(k[0], keys.FIELD_EVENT_SEQ, 1)
        c.update({keys.FIELD_STATUS: status, keys.FIELD_TIMEZONE: timezone}, **new_caps)
        self._hash(k[2])[timezone] = schedule
        self._xadd(k[1], type="customer_put", event_id=f"c:{customer_id}:{seq}",
                   customer_id=customer_id, status=status, timezone=timezone,
                   caps=",".join(caps_text), at_ms=str(now))
        return f"OK|{now}"


def hold_event_id(hold_id: str, hold: dict[str, str], seq: int) -> str:
    """hold_event_id of limits/lua/_lib.lua: the expiry names the hold's generation."""
    expires = hold.get("x")
    return f"{hold_id}:{expires}:{seq}" if expires is not None else f"{hold_id}:{seq}"


def installment_plan_text(principal: int, months: int, fee_bps: int) -> str:
    return installments.plan(principal, months, fee_bps).text()


def counter_offer_candidates(nodes: list[str], frees: list[int], day_max: int,
                             day_amount: int | None, month_max: int,
                             month_amount: int | None) -> list[tuple[str, int]]:
    """counter_offer of limits/lua/_lib.lua: every node's free credit (root first), then the
    room left in the day's and the month's amount windows (0: not limited)."""
    candidates = list(zip(nodes, frees, strict=True))
    if day_max:
        candidates.append(("velocity.day", max(0, day_max - day_amount)))  # type: ignore[operator]
    if month_max:
        candidates.append(("velocity.month", max(0, month_max - month_amount)))  # type: ignore[operator]
    return candidates


def counter_offer(candidates: list[tuple[str, int]]) -> tuple[int, str]:
    """(offer, level): the least candidate, named by the first that holds it."""
    offer = min(value for _, value in candidates)
    return offer, next(name for name, value in candidates if value == offer)


def authorization_reply(reason: int, level: str, hold_id: str, available: int, now: int,
                        expires: int, approved: int, partial: bool, offer: int,
                        offer_level: str, plan: str, levels: str) -> str:
    """reserve's and increment's reply; see authorization_reply in limits/lua/_lib.lua."""
    return (f"OK|{int(reason)}|{level}|{hold_id}|{available}|{now}|{expires}|{approved}"
            f"|{int(partial)}|{offer}|{offer_level}|{plan}{levels}")


def _window_usage(stored: str | None, window: int) -> tuple[int, int]:
    if not stored:
        return 0, 0
    number, amount, count = stored.split(":")
    if int(number) != window:
        return 0, 0
    return int(amount), int(count)


class ModelRunner:
    """Runs the model behind the interface of limits.transport.ScriptRunner: `call` answers a
    future that is already resolved."""

    def __init__(self, model: Model):
        self.model = model

    def call(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> Awaitable:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.model.call(name, keys_, args))
        return future
