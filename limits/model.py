"""The pure-Python model of the Lua scripts: the same KEYS and ARGV, the same replies, the same
writes, over an in-memory picture of the Redis keys. It is the readable specification of the
scripts; tests run one table of cases against both and, with hypothesis, compare the whole
Redis state with the model's after every step.

State layout (as Redis would hold it): a hash is dict[str, str], a sorted set dict[str, int],
a string str, a stream list[dict[str, str]]. Key expiry (PEXPIRE/EX) is not modelled: it only
forgets closed holds and old idempotency records long after they matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from limits import calendar, constants, installments, keys
from limits.reasons import DeclineReason as R
from limits.reasons import ScriptError as E

HOLD_TTL_MS_MAX = constants.HOLD_TTL_S_MAX * 1000


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
        released = int(h["a"]) - int(h["cp"])
        for node in h["n"].split(","):
            self._hincrby(keys.customer(base, customer_id), keys.FIELD_HELD + node, -released)
        seq = int(h["sq"]) + 1
        self._close_hold(hold_key, "expired", seq, now)
        self._xadd(outbox_key, type="expired", event_id=f"{hold_id}:{seq}",
                   customer_id=customer_id, hold_id=hold_id, product_id=h["p"],
                   merchant_id=h["m"], currency=h["cur"], nodes=h["n"],
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
        base, customer_id, hold_id, fingerprint, product_id = a[0], a[1], a[2], a[3], a[4]
        amount = _int_arg(a[5], 1, constants.AMOUNT_MINOR_MAX)
        ttl_ms = _int_arg(a[6], 1, HOLD_TTL_MS_MAX)
        rule_decline = _int_arg(a[7], 0, R.AMOUNT_ABOVE_MAXIMUM)
        limits = [_int_arg(v, 0, constants.VELOCITY_AMOUNT_MINOR_MAX) for v in a[12:16]]
        nodes = a[16:]
        if amount is None or ttl_ms is None or rule_decline is None or None in limits \
                or not nodes:
            return _err(E.BAD_ARGUMENT, "reserve", now)
        day_amount_max, day_count_max, month_amount_max, month_count_max = limits  # type: ignore
        replay = self._replay(k[4], fingerprint, now)
        if replay is not None:
            return replay

        def decline(reason: R, level: str, available: int, levels: str) -> str:
            return self._remember(k[4], fingerprint,
                                  f"OK|{int(reason)}|{level}||{available}|{now}|0{levels}")

        customer = self.state.get(k[0])
        if customer is None:
            return decline(R.CUSTOMER_UNKNOWN, "", 0, "")
        status = customer[keys.FIELD_STATUS]  # type: ignore[index]
        self._release_expired(base, customer_id, k[2], k[3], now)
        c: dict[str, str] = self.state[k[0]]  # type: ignore[assignment]
        caps = [int(c.get(keys.FIELD_CAP + node, 0)) for node in nodes]
        helds = [int(c.get(keys.FIELD_HELD + node, 0)) for node in nodes]
        useds = [int(c.get(keys.FIELD_USED + node, 0)) for node in nodes]
        rows = list(zip(nodes, caps, helds, useds, strict=True))
        frees = [max(0, cap - held - used) for _, cap, held, used in rows]
        available = min(frees)
        short_level = next((row[0] for row, free in zip(rows, frees, strict=True)
                            if amount > free), None)

        def levels_text(extra: int) -> str:
            return "".join(f"|{node}|{cap}|{held + extra}|{used}" for node, cap, held, used in rows)

        if status == "frozen":
            return decline(R.CUSTOMER_FROZEN, "", available, levels_text(0))
        if status == "closed":
            return decline(R.CUSTOMER_CLOSED, "", available, levels_text(0))
        if status == "overdue":
            return decline(R.CUSTOMER_OVERDUE, "", available, levels_text(0))
        if rule_decline:
            return decline(R(rule_decline), "", available, levels_text(0))
        has_velocity = any(limits)
        if has_velocity:
            day, month = calendar.window_numbers(c[keys.FIELD_TZ_SCHEDULE], now)
            day_amount, day_count = _window_usage(c.get(keys.FIELD_VELOCITY_DAY + product_id), day)
            month_amount, month_count = _window_usage(
                c.get(keys.FIELD_VELOCITY_MONTH + product_id), month)
            if (day_count_max and day_count + 1 > day_count_max) or (
                    month_count_max and month_count + 1 > month_count_max):
                return decline(R.VELOCITY_COUNT_EXCEEDED, "", available, levels_text(0))
            if (day_amount_max and day_amount + amount > day_amount_max) or (
                    month_amount_max and month_amount + amount > month_amount_max):
                return decline(R.VELOCITY_AMOUNT_EXCEEDED, "", available, levels_text(0))
        if short_level is not None:
            return decline(R.INSUFFICIENT_CREDIT, short_level, available, levels_text(0))

        # After this point the reservation must succeed.
        node_list = ",".join(nodes)
        expires = now + ttl_ms
        for node in nodes:
            self._hincrby(k[0], keys.FIELD_HELD + node, amount)
        if has_velocity:
            c[keys.FIELD_VELOCITY_DAY + product_id] = \
                f"{day}:{day_amount + amount}:{day_count + 1}"
            c[keys.FIELD_VELOCITY_MONTH + product_id] = \
                f"{month}:{month_amount + amount}:{month_count + 1}"
        self.state[k[5]] = {"st": "open", "c": customer_id, "p": product_id, "a": str(amount),
                            "cp": "0", "n": node_list, "x": str(expires), "sq": "1",
                            "m": a[8], "cur": a[11], "t": str(now)}
        self._zset(k[1])[hold_id] = expires
        due = self._zset(k[2])
        if customer_id not in due or expires < due[customer_id]:
            due[customer_id] = expires
        self._xadd(k[3], type="authorized", event_id=f"{hold_id}:1", customer_id=customer_id,
                   hold_id=hold_id, product_id=product_id, merchant_id=a[8], mcc=a[9],
                   channel=a[10], currency=a[11], nodes=node_list, amount_minor=str(amount),
                   expires_at_ms=str(expires), at_ms=str(now))
        return self._remember(k[4], fingerprint, f"OK|0||{hold_id}|{available - amount}|{now}"
                              f"|{expires}{levels_text(amount)}")

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
        held = int(h["a"]) - int(h["cp"])
        if amount > held:
            return _err(E.CAPTURE_EXCEEDS_HELD, str(held), now)

        # After this point the capture must succeed.
        released = held - amount if final else 0
        captured_total = int(h["cp"]) + amount
        customer_id = h["c"]
        customer_key = keys.customer(base, customer_id)
        for node in h["n"].split(","):
            self._hincrby(customer_key, keys.FIELD_HELD + node, -(amount + released))
            self._hincrby(customer_key, keys.FIELD_USED + node, amount)
        seq = int(h["sq"]) + 1
        state = "open"
        h.update(cp=str(captured_total), sq=str(seq))
        if held - amount - released == 0:
            state = "captured"
            self._close_hold(k[0], state, seq, now)
            holds_key = keys.customer_holds(base, customer_id)
            self._zrem(holds_key, hold_id)
            self._update_due(holds_key, k[2], customer_id)
        self._xadd(k[3], type="captured", event_id=f"{hold_id}:{seq}", customer_id=customer_id,
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=h["n"], amount_minor=str(amount), released_minor=str(released),
                   captured_total_minor=str(captured_total), final=str(final), at_ms=str(now))
        return self._remember(k[1], fingerprint, f"OK|{state}|{amount}|{captured_total}"
                              f"|{released}|{held - amount - released}|{now}")

    def void(self, k: list[str], a: list[str], now: int) -> str:
        base, hold_id, fingerprint = a[0], a[1], a[2]
        replay = self._replay(k[1], fingerprint, now)
        if replay is not None:
            return replay
        h, refusal = self._open_hold(k, base, hold_id, now)
        if refusal:
            return refusal

        # After this point the void must succeed.
        released = int(h["a"]) - int(h["cp"])
        customer_id = h["c"]
        customer_key = keys.customer(base, customer_id)
        for node in h["n"].split(","):
            self._hincrby(customer_key, keys.FIELD_HELD + node, -released)
        seq = int(h["sq"]) + 1
        self._close_hold(k[0], "voided", seq, now)
        holds_key = keys.customer_holds(base, customer_id)
        self._zrem(holds_key, hold_id)
        self._update_due(holds_key, k[2], customer_id)
        self._xadd(k[3], type="voided", event_id=f"{hold_id}:{seq}", customer_id=customer_id,
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=h["n"], released_minor=str(released), captured_total_minor=h["cp"],
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
        refunded = int(h.get("rf", 0))
        refundable = int(h["cp"]) - refunded
        if amount > refundable:
            return _err(E.REFUND_EXCEEDS_CAPTURED, str(refundable), now)

        # After this point the refund must succeed.
        customer_key = keys.customer(base, h["c"])
        for node in h["n"].split(","):
            self._hincrby(customer_key, keys.FIELD_USED + node, -amount)
        seq = int(h["sq"]) + 1
        h.update(rf=str(refunded + amount), sq=str(seq))
        self._xadd(k[2], type="refunded", event_id=f"{hold_id}:{seq}", customer_id=h["c"],
                   hold_id=hold_id, product_id=h["p"], merchant_id=h["m"], currency=h["cur"],
                   nodes=h["n"], amount_minor=str(amount),
                   refunded_total_minor=str(refunded + amount), at_ms=str(now))
        return self._remember(k[1], fingerprint, f"OK|{amount}|{refunded + amount}"
                              f"|{refundable - amount}|{now}")

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
        for field, value in self.state[k[0]].items():  # type: ignore[union-attr]
            reply += [field, value]
        return reply

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
        c.update({keys.FIELD_STATUS: status, keys.FIELD_TIMEZONE: timezone,
                  keys.FIELD_TZ_SCHEDULE: schedule}, **new_caps)
        self._xadd(k[1], type="customer_put", event_id=f"c:{customer_id}:{seq}",
                   customer_id=customer_id, status=status, timezone=timezone,
                   caps=",".join(caps_text), at_ms=str(now))
        return f"OK|{now}"


def effective_cap(cap: int, raise_text: str | None, now: int) -> int:
    """A level's cap plus its temporary raise while the raise lasts ("<raise>:<expires ms>")."""
    if not raise_text:
        return cap
    amount, expires = raise_text.split(":")
    return cap + int(amount) if int(expires) > now else cap


def installment_plan_text(principal: int, months: int, fee_bps: int) -> str:
    return installments.plan(principal, months, fee_bps).text()


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
