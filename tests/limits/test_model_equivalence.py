"""Random sequences of put/authorize/capture/void/expire/credit run on the Lua scripts (real
Redis) and on the pure-Python model: every reply and the whole Redis state equal the model's
after every step. Time moves too, so holds expire lazily and by the sweeper's script.

The model runs each step at the time the script reported (every reply carries it), so the two
agree to the millisecond without a shared clock.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as redis_asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

import hotpath
from gateway.pb import creditgate_pb2 as pb
from gateway.service import plan_refund
from limits import keys
from limits.model import Model
from limits.scripts import ScriptRunner
from tests.support import PARTITIONS, RULES, authorize_request

CUSTOMERS = ("alice", "bob", "carol")
PRODUCT_CHANNELS = [("scan_pay", "pos", "5411"), ("scan_pay", "qr_scan", "5812"),
                    ("ecommerce", "ecommerce", "5999"), ("cash", "cash", "6011")]
DAY_MS = 86_400_000


def reply_now(reply) -> int:
    """The Redis time (ms) a script reply reports."""
    if isinstance(reply, list):
        return int(reply[0])
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    parts = text.split("|")
    if parts[0] == "ERR":
        return int(parts[3])
    if parts[0] == "OK" and len(parts) == 2:  # put_customer
        return int(parts[1])
    if parts[0] == "OK" and parts[1] in ("open", "captured", "voided"):  # capture/void
        return int(parts[-1])
    if parts[0] == "OK" and len(parts) == 5:  # refund
        return int(parts[4])
    if parts[0] == "OK":  # reserve
        return int(parts[5])
    return int(parts[1])  # expire: "released|now"


def normalise(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


async def redis_state(client: redis_asyncio.Redis) -> dict:
    state = {}
    async for key in client.scan_iter(count=1000):
        name = key.decode()
        kind = (await client.type(key)).decode()
        if kind == "hash":
            state[name] = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            state[name] = {m.decode(): int(s) for m, s in
                           await client.zrange(key, 0, -1, withscores=True)}
        elif kind == "string":
            state[name] = (await client.get(key)).decode()
        elif kind == "stream":
            state[name] = [{k.decode(): v.decode() for k, v in fields.items()}
                           for _, fields in await client.xrange(key)]
    return state


class ScriptsVersusModel(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = redis_asyncio.Redis.from_url(self.redis_url)
        self.run(self.redis.flushall())
        self.runner = ScriptRunner(self.redis)
        self.model_now = 0
        self.model = Model(lambda: self.model_now)
        self.offset_ms = 0
        self.tokens = 0
        self.keys_used = 0

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def teardown(self):
        self.run(self.redis.aclose())
        self.loop.close()

    def both(self, name: str, keys_, args):
        """Run one script on Redis, then on the model at the time Redis reported."""
        args = [str(self.offset_ms), *args]
        async def call():
            return await self.runner.call(name, keys_, args)

        real = normalise(self.run(call()))
        self.model_now = reply_now(real) - self.offset_ms
        modelled = self.model.call(name, keys_, args)
        if name == "credit":  # a hash's field order is Redis' own: compare as mappings
            assert real[0] == modelled[0]
            assert dict(zip(real[1::2], real[2::2], strict=True)) == dict(
                zip(modelled[1::2], modelled[2::2], strict=True))
        else:
            assert real == modelled, (name, real, modelled)
        return real

    def token(self) -> str:
        self.tokens += 1
        return f"{self.tokens:016d}".translate(str.maketrans("0123456789", "ABCDEFGHJK"))

    @initialize()
    def put_customers(self):
        from limits import calendar

        for index, customer_id in enumerate(CUSTOMERS):
            base = keys.base(keys.partition_of(customer_id, PARTITIONS))
            caps = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 900_000,
                    "consumer.scan_pay.pos": 700_000, "consumer.scan_pay.qr": 600_000,
                    "consumer.online": 800_000, "cash": 400_000 + index}
            timezone = ("Asia/Shanghai", "America/New_York", "Europe/London")[index]
            args = [customer_id, "active", timezone,
                    calendar.offset_schedule(timezone, 1_795_600_000)]
            for node, cap in sorted(caps.items()):
                args += [node, str(cap)]
            self.both("put_customer", [keys.customer(base, customer_id), keys.outbox(base)],
                      args)

    @rule(target=holds, customer=st.sampled_from(CUSTOMERS),
          product=st.sampled_from(PRODUCT_CHANNELS),
          amount=st.integers(1, 700_000) | st.sampled_from([100, 10_000, 2_000_000]),
          reuse_key=st.booleans())
    def authorize(self, customer, product, amount, reuse_key):
        product_id, channel, mcc = product
        if not reuse_key or self.keys_used == 0:
            self.keys_used += 1
        request = authorize_request(f"k{self.keys_used}", customer, amount,
                                    product_id=product_id, channel=channel, mcc=mcc)
        keys_, args = hotpath.plan_authorize(request, RULES, PARTITIONS, self.token())
        reply = self.both("reserve", keys_, args)
        parts = reply.split("|")
        return parts[3] if parts[0] == "OK" and parts[3] else "000-AAAAAAAAAAAAAAAA"

    def _hold(self, hold_id: str) -> dict:
        base = keys.base(keys.partition_of_hold(hold_id, PARTITIONS) or 0)
        return self.model.state.get(keys.hold(base, hold_id)) or {}

    @rule(hold_id=holds, percent=st.integers(1, 110), final=st.booleans(),
          key=st.integers(0, 3))
    def capture(self, hold_id, percent, final, key):
        # A share of what the hold still holds (over 100%: refused), so captures succeed often.
        hold = self._hold(hold_id)
        held = int(hold.get("a", 0)) - int(hold.get("cp", 0))
        amount = max(1, held * percent // 100)
        keys_, args = hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key=f"c{key}", hold_id=hold_id, amount_minor=amount, final=final),
            PARTITIONS)
        self.both("capture", keys_, args)

    @rule(hold_id=holds, key=st.integers(0, 2))
    def void(self, hold_id, key):
        keys_, args = hotpath.plan_void(pb.VoidRequest(idempotency_key=f"v{key}",
                                                       hold_id=hold_id), PARTITIONS)
        self.both("void", keys_, args)

    @rule(hold_id=holds, percent=st.integers(1, 110), key=st.integers(0, 3))
    def refund(self, hold_id, percent, key):
        # A share of what was captured and not refunded (over 100%: refused).
        hold = self._hold(hold_id)
        refundable = int(hold.get("cp", 0)) - int(hold.get("rf", 0))
        self.both("refund", *plan_refund(pb.RefundRequest(
            idempotency_key=f"r{key}", hold_id=hold_id,
            amount_minor=max(1, refundable * percent // 100)), PARTITIONS))

    @rule(ms=st.sampled_from([1, 1_000, 3_600_000, DAY_MS, 7 * DAY_MS, 15 * DAY_MS]))
    def advance_time(self, ms):
        self.offset_ms += ms

    @rule(customer=st.sampled_from(CUSTOMERS))
    def sweep(self, customer):
        base = keys.base(keys.partition_of(customer, PARTITIONS))
        self.both("expire", [keys.customer_holds(base, customer), keys.due(base),
                             keys.outbox(base)], [base, customer])

    @rule(customer=st.sampled_from(CUSTOMERS))
    def credit(self, customer):
        base = keys.base(keys.partition_of(customer, PARTITIONS))
        self.both("credit", [keys.customer(base, customer), keys.due(base), keys.outbox(base)],
                  [base, customer])

    @invariant()
    def same_state(self):
        real = self.run(redis_state(self.redis))
        modelled = {key: value for key, value in self.model.state.items() if value != {}}
        assert real == modelled

    @invariant()
    def usage_never_exceeds_caps(self):
        # Invariant 1: a level's held + used never exceeds its cap, and never goes negative.
        for key, value in self.model.state.items():
            if isinstance(value, dict) and keys.FIELD_STATUS in value:
                for field, cap in value.items():
                    if field.startswith(keys.FIELD_CAP):
                        node = field[len(keys.FIELD_CAP):]
                        held = int(value.get(keys.FIELD_HELD + node, 0))
                        used = int(value.get(keys.FIELD_USED + node, 0))
                        assert held >= 0 and used >= 0 and held + used <= int(cap), (key, node)

    @invariant()
    def conservation(self):
        # Invariant 2: a level's held equals the sum of its open holds' remainders, and its
        # used equals what was captured less what was refunded, over the holds that drew on it.
        expected: dict[tuple[str, str], list[int]] = {}
        for value in self.model.state.values():
            if isinstance(value, dict) and "st" in value and "c" in value:
                remainder = int(value["a"]) - int(value["cp"]) if value["st"] == "open" else 0
                for node in value["n"].split(","):
                    sums = expected.setdefault((value["c"], node), [0, 0])
                    sums[0] += remainder
                    sums[1] += int(value["cp"]) - int(value.get("rf", 0))
        for customer_id in CUSTOMERS:
            base = keys.base(keys.partition_of(customer_id, PARTITIONS))
            record = self.model.state[keys.customer(base, customer_id)]
            for (owner, node), (held, used) in expected.items():
                if owner == customer_id:
                    assert int(record.get(keys.FIELD_HELD + node, 0)) == held
                    assert int(record.get(keys.FIELD_USED + node, 0)) == used


def test_scripts_equal_the_model(redis_server):
    ScriptsVersusModel.redis_url = redis_server.url
    runner = ScriptsVersusModel.TestCase()
    runner.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner.runTest()
