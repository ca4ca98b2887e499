"""Random sequences of put/authorize/capture/void/expire/credit run on the Lua scripts (real
Redis) and on the pure-Python model: every reply and the whole Redis state equal the model's
after every step. Time moves too, so holds expire lazily and by the sweeper's script. The
caller changes too, and with it the merchant scope the hold scripts check holds against.

The model runs each step at the time the script reported (every reply carries it), so the two
agree to the millisecond without a shared clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import redis.asyncio as redis_asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath.plans import (
    plan_force_capture,
    plan_refund,
    plan_repay,
    plan_reverse,
    repayment_order,
)
from creditgate.limits import catalog, keys
from creditgate.limits import cluster as limits_cluster
from creditgate.limits.contracts import call_header
from creditgate.limits.levels import effective_cap
from creditgate.limits.model import Model
from tests.support import ELEMENTS_CATALOG_TEXT, PARTITIONS, PRODUCTS, RULES, authorize_request

CUSTOMERS = ("alice", "bob", "carol")
PRODUCT_CHANNELS = [("scan_pay", "pos", "5411"), ("scan_pay", "qr_scan", "5812"),
                    ("ecommerce", "ecommerce", "5999"), ("cash", "cash", "6011")]
DAY_MS = 86_400_000
CHANNELS = {"qr_scan": pb.CHANNEL_QR_SCAN, "pos": pb.CHANNEL_POS,
            "ecommerce": pb.CHANNEL_ECOMMERCE, "cash": pb.CHANNEL_CASH}
REPAYMENT_ORDER = repayment_order(PRODUCTS)


def _stamp(s: int) -> str:
    return dt.datetime.fromtimestamp(s, dt.UTC).isoformat()


# The products of tests/catalog-elements.toml (hours of the customer's day, merchant lists,
# channel bounds, a first-purchase maximum, dates long past and far ahead), one that takes
# effect an hour from now for two days, which advance_time crosses, and one open an hour a
# day (mostly closed, whatever the time the test runs at).
_NOW_S = int(time.time())
ELEMENT_RULES = hotpath.compile_products(catalog.parse(ELEMENTS_CATALOG_TEXT + f"""
[products.windowed]
extends = "launch_elements"
name = "Windowed"
effective_from = {_stamp(_NOW_S + 3_600)}
effective_until = {_stamp(_NOW_S + 2 * 86_400)}

[products.brief]
extends = "launch_elements"
name = "Brief"
allowed_hours = ["09:00-10:00"]
"""))
ELEMENT_PRODUCTS = [("launch", "ecommerce"), ("launch", "pos"), ("brief", "ecommerce"),
                    ("windowed", "ecommerce"), ("expired", "ecommerce"), ("upcoming", "pos"),
                    ("plain", "pos")]


# Where the time is in the replies whose length varies (docs/lifecycle.md).
NOW_INDEX = {"reverse": 4, "force_capture": 3, "repay": 4, "reserve": 5, "increment": 5,
             "set_raise": 5, "put_customer": 1}
NODES = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos",
         "consumer.scan_pay.qr", "consumer.online", "cash")
MERCHANTS = ("m-1", "m-2", "shop-9")
# Merchant scopes (limits/keys.merchant_scope): any, exact ids, prefixes, none of ours.
SCOPES = ("", "=m-1", "=m-2 =shop-9", "^m-", "=m-2 ^shop-", "=zz", keys.MERCHANT_SCOPE_NONE)


def reply_now(reply, name: str = "") -> int:
    """The Redis time (ms) a script reply reports."""
    if isinstance(reply, list):
        return int(reply[0])
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    parts = text.split("|")
    if parts[0] == "ERR":
        return int(parts[3])
    if parts[0] == "OK" and name in NOW_INDEX:
        return int(parts[NOW_INDEX[name]])
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
        # One Redis, or a cluster (tests/cluster runs this machine there too).
        self.redis = limits_cluster.connect(self.redis_url)
        self.run(self.redis.flushall())
        self.runner = limits_cluster.runner_for(self.redis)
        self.model_now = 0
        self.model = Model(lambda: self.model_now)
        self.offset_ms = 0
        self.tokens = 0
        self.keys_used = 0
        self.over_limit: set[str] = set()  # customers a force capture took over a cap
        self.caller, self.scope = "", ""
        self.requests: list[pb.AuthorizeRequest] = []  # what authorize sent, for replay

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def teardown(self):
        self.run(self.redis.aclose())
        self.loop.close()

    def both(self, name: str, keys_, args):
        """Run one script on Redis, then on the model at the time Redis reported."""
        args = [*call_header(self.offset_ms, 0, self.caller, self.scope), *args]
        async def call():
            return await self.runner.call(name, keys_, args)

        real = normalise(self.run(call()))
        self.model_now = reply_now(real, name) - self.offset_ms
        if name == "replay" and real.startswith("OK|"):
            # A replayed approval or decline answers its first decision's time, not now; the
            # levels of an approval's are read now (a raise may have ended since): the model
            # runs at Redis' time read right after the call.
            time = self.run(self.redis.time())
            if isinstance(time, dict):  # a cluster answers per node: one machine's clock
                time = next(iter(time.values()))
            seconds, micros = time
            self.model_now = seconds * 1000 + micros // 1000
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
        from creditgate.limits import calendar

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
            self.both("put_customer", [keys.customer(base, customer_id), keys.outbox(base),
                                       keys.timezones(base)], args)

    @rule(target=holds, customer=st.sampled_from(CUSTOMERS),
          product=st.sampled_from(PRODUCT_CHANNELS),
          amount=st.integers(1, 700_000) | st.sampled_from([100, 10_000, 2_000_000]),
          reuse_key=st.booleans(), partial=st.booleans(), term=st.integers(0, 4),
          merchant=st.sampled_from(MERCHANTS))
    def authorize(self, customer, product, amount, reuse_key, partial, term, merchant="m-1"):
        product_id, channel, mcc = product
        if not reuse_key or self.keys_used == 0:
            self.keys_used += 1
        terms = [0, *PRODUCTS[product_id].installments.months]  # 0: pay in full
        request = authorize_request(f"k{self.keys_used}", customer, amount,
                                    product_id=product_id, channel=channel, mcc=mcc,
                                    allow_partial=partial, merchant_id=merchant,
                                    installment_months=terms[term % len(terms)])
        keys_, args = hotpath.plan_authorize(request, RULES, PARTITIONS)
        self.requests.append(request)
        reply = self.both("reserve", keys_, args)
        parts = reply.split("|")
        self._no_double_spend(parts)
        return parts[3] if parts[0] == "OK" and parts[3] else "000-AAAAAAAAAAAAAAAA"

    @rule(pick=st.integers(0, 63), fresh=st.booleans(), other_amount=st.booleans())
    def replay(self, pick, fresh, other_amount):
        # The read-only replay a gateway asks when its catalog refuses a request: of a key
        # authorize used (its decline, its approval's hold, or ERR for another payload), or
        # of a key without a decision (none). It writes nothing (same_state).
        if fresh or not self.requests:
            request = authorize_request(f"k{self.keys_used + 1}", CUSTOMERS[pick % 3], 1_000)
        else:
            request = pb.AuthorizeRequest()
            request.CopyFrom(self.requests[pick % len(self.requests)])
            if other_amount:
                request.amount_minor += 1
        self.both("replay", *hotpath.plan_replay(request, PARTITIONS))

    @rule(target=holds, customer=st.sampled_from(CUSTOMERS),
          product=st.sampled_from(ELEMENT_PRODUCTS),
          amount=st.sampled_from([20_001, 500, 20_000, 30_001]) | st.integers(100, 40_000),
          mcc=st.sampled_from(["5411", "5411", "7995"]), partial=st.booleans(),
          merchant=st.sampled_from(["m-1", "shop-1", "m-1", "m-2", "shop-91", "zz"]))
    def authorize_elements(self, customer, product, amount, mcc, partial, merchant):
        # The elements: effective dates, allowed hours, first purchase (and its marker).
        product_id, channel = product
        self.keys_used += 1
        request = authorize_request(f"k{self.keys_used}", customer, amount,
                                    product_id=product_id, channel=channel, mcc=mcc,
                                    allow_partial=partial, merchant_id=merchant)
        keys_, args = hotpath.plan_authorize(request, ELEMENT_RULES, PARTITIONS)
        parts = self.both("reserve", keys_, args).split("|")
        self._no_double_spend(parts)
        return parts[3] if parts[0] == "OK" and parts[3] else "000-AAAAAAAAAAAAAAAA"

    @staticmethod
    def _no_double_spend(parts: list[str]) -> None:
        """After an approval (of reserve or increment), every level of the reply has
        held + used <= cap + live raise (the reply's cap is the effective one)."""
        if parts[0] == "OK" and parts[1] == "0":
            levels = parts[12:] if len(parts[12:]) % 4 == 0 else parts[12:-1]
            for i in range(0, len(levels), 4):
                assert int(levels[i + 2]) + int(levels[i + 3]) <= int(levels[i + 1]), parts

    def _growable(self) -> list[str]:
        return sorted(key.rsplit(":", 1)[-1] for key, value in self.model.state.items()
                      if isinstance(value, dict) and "ix" in value and value["st"] == "open")

    @rule(hold_id=holds, amount=st.integers(1, 300_000) | st.sampled_from([1, 10_000_000]),
          key=st.integers(0, 3), pick=st.integers(0, 7), customer=st.sampled_from(CUSTOMERS))
    def increment(self, hold_id, amount, key, pick, customer):
        from creditgate.hotpath.plans import plan_increment

        # Mostly an open incremental hold (only those can grow; if there is none, an
        # ecommerce purchase makes one), else any hold of the bundle: refused.
        if pick and not self._growable():
            self.authorize(customer, ("ecommerce", "ecommerce", "5999"), 10_000 * pick,
                           False, False, pick)
        if pick and self._growable():
            hold_id = self._growable()[pick % len(self._growable())]
        reply = self.both("increment", *plan_increment(pb.IncrementAuthorizationRequest(
            idempotency_key=f"i{key}", hold_id=hold_id, amount_minor=amount), PARTITIONS))
        self._no_double_spend(reply.split("|"))

    @rule(customer=st.sampled_from(CUSTOMERS), node=st.sampled_from(NODES),
          raise_minor=st.sampled_from([0, 50_000, 1_000_000]) | st.integers(1, 3_000_000),
          ahead_ms=st.sampled_from([-1_000, 0, 1, 3_600_000, DAY_MS, 367 * DAY_MS]))
    def set_raise(self, customer, node, raise_minor, ahead_ms):
        # The expiry is relative to the last time the scripts reported: it may have passed.
        expires = max(0, self.model_now + self.offset_ms + ahead_ms)
        base = keys.base(keys.partition_of(customer, PARTITIONS))
        reply = self.both("set_raise", [keys.customer(base, customer), keys.outbox(base)],
                          [customer, node, str(raise_minor), str(expires)])
        if reply.startswith("OK") and raise_minor:
            # When the raise lapses its level may stay above the bare cap, on purpose; the
            # approvals' own check (_no_double_spend) still holds for this customer.
            self.over_limit.add(customer)

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

    @rule(target=holds, customer=st.sampled_from(CUSTOMERS), amount=st.integers(100, 700_000),
          percent=st.integers(90, 130))
    def tip(self, customer, amount, percent):
        # A restaurant: a fresh scan-to-pay hold, captured at once with a tip (over-capture).
        self.keys_used += 1
        keys_, args = hotpath.plan_authorize(authorize_request(
            f"k{self.keys_used}", customer, amount), RULES, PARTITIONS)
        reply = self.both("reserve", keys_, args).split("|")
        if reply[0] != "OK" or not reply[3]:
            return "000-AAAAAAAAAAAAAAAA"
        self.over_capture(reply[3], percent, 0)
        return reply[3]

    @rule(hold_id=holds, percent=st.integers(90, 130), key=st.integers(0, 3))
    def over_capture(self, hold_id, percent, key):
        # A share of what the hold may still capture with the product's tolerance (over 100%:
        # refused); above what it holds, the excess must fit every level.
        hold = self._hold(hold_id)
        authorized, captured = int(hold.get("a", 0)), int(hold.get("cp", 0))
        capturable = authorized + authorized * int(hold.get("tb", 0)) // 10_000 - captured
        keys_, args = hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key=f"c{key}", hold_id=hold_id,
            amount_minor=max(1, capturable * percent // 100), final=False), PARTITIONS)
        reply = self.both("capture", keys_, args).split("|")
        if reply[0] == "OK" and int(reply[6]) > 0:  # an excess: no level went over its cap
            customer = self.model.state[keys.customer(keys.base(
                keys.partition_of_hold(hold_id, PARTITIONS)), hold["c"])]
            base = keys.base(keys.partition_of_hold(hold_id, PARTITIONS))
            levels = keys.levels_of(customer)
            for node in self.model._hold_nodes(base, hold["n"]).split(","):
                level = levels[node]
                raise_text = (f"{level.raise_minor}:{level.raise_expires_ms}"
                              if level.raise_minor else None)
                assert level.held + level.used <= effective_cap(
                    level.cap or 0, raise_text, reply_now("|".join(reply)))

    @rule(customer=st.sampled_from(CUSTOMERS), back=st.integers(-1, 3), own=st.booleans())
    def reverse(self, customer, back, own):
        # A key of a recent Authorize, mostly by the customer who sent it (else a tombstone for
        # another customer), or the next key (a tombstone the next Authorize meets).
        index = self.keys_used - back if 0 < self.keys_used - back <= self.keys_used \
            else self.keys_used + 1
        owners = [key.split(keys.KIND_IDEMPOTENCY_AUTHORIZE)[1].split("|")[0]
                  for key in self.model.state
                  if keys.KIND_IDEMPOTENCY_AUTHORIZE in key and key.endswith(f"|k{index}")]
        if own and owners:
            customer = owners[0]
        self.both("reverse", *plan_reverse(pb.ReverseRequest(
            customer_id=customer, original_idempotency_key=f"k{index}"), PARTITIONS))

    @rule(target=holds, customer=st.sampled_from(CUSTOMERS),
          product=st.sampled_from(PRODUCT_CHANNELS),
          amount=st.integers(1, 700_000) | st.sampled_from([2_000_000]),
          original=st.none() | holds, key=st.integers(0, 15),
          merchant=st.sampled_from(MERCHANTS))
    def force_capture(self, customer, product, amount, original, key, merchant):
        product_id, channel, mcc = product
        partition = keys.partition_of(customer, PARTITIONS)
        if original is not None and keys.partition_of_hold(original, PARTITIONS) != partition:
            original = None  # the gateway refuses another partition's hold itself
        request = pb.ForceCaptureRequest(
            idempotency_key=f"f{key}", customer_id=customer, product_id=product_id,
            channel=CHANNELS[channel], merchant_id=merchant, mcc=mcc, amount_minor=amount,
            currency="CNY", original_hold_id=original or "")
        reply = self.both("force_capture", *plan_force_capture(
            request, PRODUCTS, PARTITIONS, self.token())).split("|")
        if reply[0] != "OK":
            return "000-AAAAAAAAAAAAAAAA"
        if reply[2]:
            self.over_limit.add(customer)
        return reply[1]

    @rule(customer=st.sampled_from(CUSTOMERS), percent=st.integers(1, 120),
          key=st.integers(0, 15))
    def repay(self, customer, percent, key):
        # A share of what the customer owes (over 100%: an overpayment).
        record = self.model.state[keys.customer(keys.base(
            keys.partition_of(customer, PARTITIONS)), customer)]
        owed = sum(int(value) for field, value in record.items()
                   if field.startswith(keys.FIELD_BALANCE))
        self.both("repay", *plan_repay(pb.RepayRequest(
            idempotency_key=f"p{key}", customer_id=customer,
            amount_minor=max(1, owed * percent // 100)), REPAYMENT_ORDER, PARTITIONS))

    @rule(caller=st.sampled_from(["", "T-0001", "sweeper"]), scope=st.sampled_from(SCOPES))
    def change_caller(self, caller, scope):
        # The calls that follow are this caller's: their events name it, and the hold scripts
        # see only the holds of its merchants.
        self.caller, self.scope = caller, scope

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
        # A force capture may take levels over on purpose (it says so): not those customers'.
        for key, value in self.model.state.items():
            if isinstance(value, dict) and keys.FIELD_STATUS in value:
                over_limit = key.rsplit(":", 1)[-1] in self.over_limit
                for node, level in keys.levels_of(value).items():
                    assert level.held >= 0 and level.used >= 0, (key, node)
                    if level.cap is not None:
                        assert over_limit or level.held + level.used <= level.cap, (key, node)

    @invariant()
    def conservation(self):
        # Invariant 2 (docs/lifecycle.md): a level's held equals the sum of its open holds'
        # remainders; its used equals the balances of the paths through it; the balances sum
        # to what was captured (force captures included) less what refunds restored less what
        # was repaid; the credit balance is what refunds and repayments overpaid.
        held_by: dict[tuple[str, str], int] = {}
        flows = {customer_id: [0, 0, 0, 0] for customer_id in CUSTOMERS}
        for value in self.model.state.values():
            if isinstance(value, dict) and "st" in value and "c" in value:
                remainder = int(value["a"]) - int(value["cp"]) if value["st"] == "open" else 0
                flows[value["c"]][0] += int(value["cp"])
                base = keys.base(keys.partition_of(value["c"], PARTITIONS))
                for node in self.model._hold_nodes(base, value["n"]).split(","):
                    held_by[value["c"], node] = held_by.get((value["c"], node), 0) + remainder
            if isinstance(value, list):  # an outbox stream: [captured, restored, repaid, cr]
                for event in value:
                    sums = flows.get(event["customer_id"], [0, 0, 0, 0])
                    if event["type"] == "refunded":
                        sums[1] += int(event["restored_minor"])
                        sums[3] += int(event["overpaid_minor"])
                    elif event["type"] in ("repaid", "overpaid"):
                        sums[2 if event["type"] == "repaid" else 3] += int(event["amount_minor"])
        for customer_id in CUSTOMERS:
            base = keys.base(keys.partition_of(customer_id, PARTITIONS))
            record = self.model.state[keys.customer(base, customer_id)]
            levels = keys.levels_of(record)
            for (owner, node), held in held_by.items():
                if owner == customer_id:
                    assert levels.get(node, keys.read_level(None)).held == held
            balances = {field[len(keys.FIELD_BALANCE):]: int(value) for field, value
                        in record.items() if field.startswith(keys.FIELD_BALANCE)}
            assert all(balance > 0 for balance in balances.values())
            for node, level in levels.items():
                assert level.used == sum(balance for path, balance in balances.items()
                                         if node in path.split(",")), (customer_id, node)
            captured, restored, repaid, overpaid = flows[customer_id]
            assert sum(balances.values()) == captured - restored - repaid
            assert int(record.get(keys.FIELD_CREDIT_BALANCE, 0)) == overpaid


def test_scripts_equal_the_model(redis_server):
    ScriptsVersusModel.redis_url = redis_server.url
    runner = ScriptsVersusModel.TestCase()
    runner.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner.runTest()
