"""Locust load test of the Authorization service: a realistic mix under the midnight peak.

    .venv/bin/locust -f bench/locustfile.py --host 127.0.0.1:50051            # web UI on :8089
    .venv/bin/locust -f bench/locustfile.py --host 127.0.0.1:50051 --headless --csv var/locust
    (mutual TLS as make run's ACQ-1 when var/tls has its files; --cert/--key/--ca for others,
    --insecure for a plaintext gateway)

Each simulated user is a terminal with its own gRPC channel (so the load spreads over the
processes of `creditgate serve --processes N`, which share the port). It buys for customers
drawn Zipf-skewed (exponent --zipf-exponent, 1.1) from the population bench/seed.py creates
(--population customers, ids lt0000000...), and follows its own purchases: an approved hold
is later captured (partly, then finally, or at once), or voided; a captured one may be
refunded. Every mutating call has an idempotency key unique to this run. A decline is a
protocol success, not a Locust failure; a gRPC error (or a reply that breaks the protocol,
such as an approval without a hold id) is a failure.

MidnightPeak, the load shape: --base-users for --quiet-s, a ramp to --peak-factor times as
many users within --ramp-s (one minute), --hold-s at the peak, a decay back over --decay-s,
then the run ends by itself. Each user starts --user-rate tasks a second (0: no pause).
Every option (OPTIONS below) is a command-line flag (--ramp-s 60) and an environment variable
(CREDITGATE_LOCUST_RAMP_S=60); the CI smoke compresses the shape into seconds with the
variables (tests/bench/test_locust_smoke.py).

The products, channels, MCCs and amounts are those of limits/products.toml and are checked
against it at start-up. Decisions (approved, partial, each decline reason) are logged when
the run stops and written to --decisions-json if given.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import NamedTuple

# Locust has monkey-patched the standard library with gevent by now; grpc must be told to
# cooperate with gevent before any channel exists.
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import LoadTestShape, User, constant_throughput, events, task
from locust.runners import WorkerRunner

grpc_gevent.init_gevent()

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402  bench/common.py: how to reach the gateway
import seed  # noqa: E402  bench/seed.py: the population's ids and defaults

from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc  # noqa: E402
from creditgate.limits import catalog  # noqa: E402

log = logging.getLogger("creditgate.locust")

TARGET_DEFAULT = "127.0.0.1:50051"
# The development switch of `creditgate certs init`, allowed every merchant: the users present
# its certificate (var/tls/ACQ-1.pem) unless --cert/--key/--ca or --insecure say otherwise.
LOCUST_CALLER = "ACQ-1"
OPEN_HOLDS_MAX = 64  # a user's holds awaiting capture or void; older ones are left to expire
CAPTURED_HOLDS_MAX = 64  # a user's captured holds that may still be refunded
MERCHANTS = 20_000
SPAWN_RATE_QUIET_MAX = 100  # users/s; Locust warns that faster spawning can misbehave

_CHANNELS = {"qr_scan": pb.CHANNEL_QR_SCAN, "pos": pb.CHANNEL_POS,
             "ecommerce": pb.CHANNEL_ECOMMERCE, "cash": pb.CHANNEL_CASH}


class Purchase(NamedTuple):
    """One kind of purchase: where, at which kinds of shop, for how much, how often."""

    product_id: str
    channel: str
    mccs: tuple[str, ...]
    # (low, high, weight): the amount is uniform within a band, in minor units.
    amount_bands: tuple[tuple[int, int, int], ...]
    weight: int  # share of the authorizations
    partial_percent: int  # share of requests that accept a partial approval


# Average ticket about 1,500 CNY; cash only at mcc 6011 (the catalog's mcc_allow).
PURCHASES = (
    Purchase("scan_pay", "qr_scan", ("5411", "5812", "5814", "5499", "5912", "5999"),
             ((100, 10_000, 45), (10_000, 100_000, 35), (100_000, 1_000_000, 20)), 40, 10),
    Purchase("scan_pay", "pos", ("5411", "5812", "5311", "5541", "5651", "5732"),
             ((1_000, 50_000, 40), (50_000, 300_000, 40), (300_000, 2_000_000, 20)), 30, 10),
    Purchase("ecommerce", "ecommerce", ("5311", "5732", "5651", "5942", "4722", "5999"),
             ((1_000, 50_000, 35), (50_000, 300_000, 45), (300_000, 2_000_000, 20)), 22, 0),
    Purchase("cash", "cash", ("6011",),
             ((10_000, 200_000, 70), (200_000, 1_000_000, 30)), 8, 0),
)


def check_purchases(products: dict[str, catalog.Product]) -> None:
    """Every purchase is one the catalog allows (else the mix would test the wrong thing)."""
    for purchase in PURCHASES:
        where = f"bench/locustfile.py: {purchase.product_id}/{purchase.channel}"
        product = products.get(purchase.product_id)
        if product is None:
            raise ValueError(f"{where}: no such product in the catalog")
        if purchase.channel not in product.channels:
            raise ValueError(f"{where}: the product's channels are {product.channels}")
        for mcc in purchase.mccs:
            if mcc in product.mcc_deny or (product.mcc_allow and mcc not in product.mcc_allow):
                raise ValueError(f"{where}: mcc {mcc} is not allowed")
        for low, high, _ in purchase.amount_bands:
            if not product.amount_min_minor <= low < high <= product.amount_max_minor:
                raise ValueError(f"{where}: band {low}..{high} outside the product's "
                                 f"{product.amount_min_minor}..{product.amount_max_minor}")
        if purchase.partial_percent and not product.partial_approval:
            raise ValueError(f"{where}: the product has no partial approval")


PRODUCTS = catalog.load()
check_purchases(PRODUCTS)
CURRENCY = {purchase.product_id: PRODUCTS[purchase.product_id].currency
            for purchase in PURCHASES}


# -- options -------------------------------------------------------------------------------------

# name: (type, default, help); each is --name-with-dashes and CREDITGATE_LOCUST_NAME.
OPTIONS = {
    "population": (int, seed.POPULATION_DEFAULT,
                   "customers to draw from (lt0000000...): seed at least as many"),
    "population_seed": (int, seed.SEED_DEFAULT, "seed of the draws (customers, amounts, ...)"),
    "zipf_exponent": (float, 1.1, "skew of the customers' popularity (rank r has weight r^-s)"),
    "user_rate": (float, 2.0, "tasks a user starts per second (0: no pause)"),
    "call_timeout_s": (float, 5.0, "deadline of each call"),
    "base_users": (int, 20, "users in the quiet phase"),
    "peak_factor": (int, 10, "users at the peak, as a multiple of --base-users"),
    "quiet_s": (float, 120.0, "seconds of quiet before the ramp"),
    "ramp_s": (float, 60.0, "seconds of the ramp to the peak"),
    "hold_s": (float, 300.0, "seconds at the peak"),
    "decay_s": (float, 180.0, "seconds of the decay back to --base-users; then the run ends"),
    "decisions_json": (str, "", "write the count of each decision to this file at the end"),
}


@events.init_command_line_parser.add_listener
def _add_options(parser, **_kwargs) -> None:
    group = parser.add_argument_group("creditgate", "bench/locustfile.py's options")
    for name, (kind, default, help_) in OPTIONS.items():
        env = f"CREDITGATE_LOCUST_{name.upper()}"
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, env_var=env,
                           default=default, help=f"{help_} (${env}, default {default})")
    common.add_transport_options(parser, LOCUST_CALLER)


_Defaults = collections.namedtuple("_Defaults", OPTIONS)  # type: ignore[misc]


def _options(environment):
    """The parsed options, or the defaults when Locust runs as a library (no command line)."""
    if environment.parsed_options is None:
        return _Defaults(*(default for _, default, _ in OPTIONS.values()))
    return environment.parsed_options


def transport(environment) -> common.Transport:
    """The users' transport; plaintext when Locust runs as a library (no command line)."""
    if environment.parsed_options is None:
        return common.PLAINTEXT
    return common.transport_of(environment.parsed_options, LOCUST_CALLER)


# -- the population ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def population(size: int, exponent: float, seed_: int) -> seed.Population:
    return seed.Population(size, exponent, seed_)


# -- decisions, summed over the run (and over the workers of a distributed run) -----------------

DECISIONS: collections.Counter[str] = collections.Counter()


def _decision(reply: pb.AuthorizeResponse) -> str:
    if reply.approved:
        return "PARTIAL" if reply.partial else "APPROVED"
    return pb.DeclineReason.Name(reply.decline_reason).removeprefix("DECLINE_REASON_")


@events.report_to_master.add_listener
def _report_decisions(client_id, data, **_kwargs) -> None:
    data["creditgate_decisions"] = dict(DECISIONS)
    DECISIONS.clear()


@events.worker_report.add_listener
def _sum_decisions(client_id, data, **_kwargs) -> None:
    DECISIONS.update(data.get("creditgate_decisions", {}))


@events.test_start.add_listener
def _reset_decisions(environment, **_kwargs) -> None:
    DECISIONS.clear()


@events.quitting.add_listener
def _write_decisions(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # its counts went to the master
    total = sum(DECISIONS.values())
    summary = ", ".join(f"{name} {count}" for name, count in DECISIONS.most_common())
    log.info("Authorize decisions (%d): %s", total, summary or "none")
    path = _options(environment).decisions_json
    if path:
        Path(path).write_text(json.dumps(dict(DECISIONS), indent=2, sort_keys=True) + "\n")


# -- the user --------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """A reply that breaks the contract: counted as a failure, like a gRPC error."""


class OpenHold(NamedTuple):
    hold_id: str
    held_minor: int  # what the hold still holds


class CapturedHold(NamedTuple):
    hold_id: str
    refundable_minor: int


_run_token = os.urandom(4).hex()  # idempotency keys never repeat across runs
_user_serials = itertools.count()


class AuthorizationUser(User):
    """A terminal: buys for customers of the population and settles its own purchases."""

    host = os.environ.get("CREDITGATE_TARGET", TARGET_DEFAULT)

    def wait_time(self) -> float:
        return self._pace(self) if self._pace else 0.0

    def on_start(self) -> None:
        options = _options(self.environment)
        worker = getattr(self.environment.runner, "worker_index", 0)
        serial = next(_user_serials)
        self.population = population(options.population, options.zipf_exponent,
                                     options.population_seed)
        self.rng = random.Random(f"{options.population_seed}:{worker}:{serial}")
        self.key_prefix = f"{_run_token}-{worker}-{serial}-"
        self.keys = itertools.count()
        self.timeout_s = options.call_timeout_s
        self._pace = constant_throughput(options.user_rate) if options.user_rate > 0 else None
        target = self.host or TARGET_DEFAULT
        for scheme in ("http://", "grpc://"):
            target = target.removeprefix(scheme)
        self.channel = transport(self.environment).channel(target.rstrip("/"))
        self.stub = pb_grpc.AuthorizationStub(self.channel)
        self.open_holds: collections.deque[OpenHold] = collections.deque(maxlen=OPEN_HOLDS_MAX)
        self.captured: collections.deque[CapturedHold] = collections.deque(
            maxlen=CAPTURED_HOLDS_MAX)
        self.purchase_weights = [purchase.weight for purchase in PURCHASES]

    def on_stop(self) -> None:
        self.channel.close()

    def _key(self) -> str:
        return f"{self.key_prefix}{next(self.keys)}"

    def _call(self, name: str, method, request, check=None):
        """One RPC, reported to Locust; the reply, or None after a failure."""
        started = time.perf_counter()
        reply, error = None, None
        try:
            reply = method(request, timeout=self.timeout_s)
            if check is not None:
                check(reply)
        except (grpc.RpcError, ProtocolError) as caught:
            error = caught
        self.environment.events.request.fire(
            request_type="grpc", name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=reply.ByteSize() if reply is not None else 0,
            exception=error, context={})
        return None if error else reply

    # -- tasks ------------------------------------------------------------------------------------

    @task(60)
    def authorize(self) -> None:
        rng = self.rng
        purchase = rng.choices(PURCHASES, self.purchase_weights)[0]
        low, high, _ = rng.choices(purchase.amount_bands,
                                   [band[2] for band in purchase.amount_bands])[0]
        request = pb.AuthorizeRequest(
            idempotency_key=self._key(), customer_id=self.population.draw(rng),
            product_id=purchase.product_id, channel=_CHANNELS[purchase.channel],
            merchant_id=f"m{rng.randrange(MERCHANTS):05d}", mcc=rng.choice(purchase.mccs),
            amount_minor=rng.randrange(low, high), currency=CURRENCY[purchase.product_id],
            allow_partial=rng.randrange(100) < purchase.partial_percent)
        reply = self._call("Authorize", self.stub.Authorize, request, _check_authorize)
        if reply is None:
            return
        DECISIONS[_decision(reply)] += 1
        if reply.approved:
            held = reply.approved_amount_minor or request.amount_minor
            self.open_holds.append(OpenHold(reply.hold_id, held))

    @task(16)
    def capture(self) -> None:
        """Capture the oldest open hold: a third of the time part of it (the hold stays open
        for the rest), otherwise a final capture of all of it or, sometimes, less (the rest is
        released)."""
        if not self.open_holds:
            return self.authorize()
        hold = self.open_holds.popleft()
        rng = self.rng
        partial = hold.held_minor >= 2 and rng.randrange(3) == 0
        if partial:
            amount = max(1, hold.held_minor * rng.randrange(20, 80) // 100)
        elif hold.held_minor >= 2 and rng.randrange(5) == 0:
            amount = max(1, hold.held_minor * rng.randrange(50, 100) // 100)
        else:
            amount = hold.held_minor
        request = pb.CaptureRequest(idempotency_key=self._key(), hold_id=hold.hold_id,
                                    amount_minor=amount, final=not partial)
        reply = self._call("Capture partial" if partial else "Capture final", self.stub.Capture,
                           request, functools.partial(_check_capture, amount))
        if reply is None:
            return
        if partial and reply.held_minor > 0:
            self.open_holds.append(OpenHold(hold.hold_id, reply.held_minor))
        else:
            self.captured.append(CapturedHold(hold.hold_id, reply.captured_total_minor))

    @task(6)
    def void(self) -> None:
        """Void the newest open hold (a cancelled order; what it captured stays captured)."""
        if not self.open_holds:
            return self.authorize()
        hold = self.open_holds.pop()
        request = pb.VoidRequest(idempotency_key=self._key(), hold_id=hold.hold_id)
        reply = self._call("Void", self.stub.Void, request)
        if reply is not None and reply.captured_total_minor > 0:
            self.captured.append(CapturedHold(hold.hold_id, reply.captured_total_minor))

    @task(6)
    def refund(self) -> None:
        """Refund a captured hold: all of what is refundable, or part of it."""
        if not self.captured:
            return self.capture()
        hold = self.captured.popleft()
        rng = self.rng
        amount = hold.refundable_minor
        if amount >= 2 and rng.randrange(2) == 0:
            amount = max(1, amount * rng.randrange(10, 90) // 100)
        request = pb.RefundRequest(idempotency_key=self._key(), hold_id=hold.hold_id,
                                   amount_minor=amount)
        reply = self._call("Refund", self.stub.Refund, request)
        if reply is not None and reply.refundable_minor > 0:
            self.captured.append(CapturedHold(hold.hold_id, reply.refundable_minor))

    @task(12)
    def get_credit(self) -> None:
        """A customer's app or the merchant asks what is left, half the time for a product."""
        rng = self.rng
        product_id = rng.choice(PURCHASES).product_id if rng.randrange(2) else ""
        request = pb.GetCreditRequest(customer_id=self.population.draw(rng),
                                      product_id=product_id)
        self._call("GetCredit", self.stub.GetCredit, request)


def _check_authorize(reply: pb.AuthorizeResponse) -> None:
    if reply.approved and not reply.hold_id:
        raise ProtocolError("approved without a hold_id")
    if reply.approved == bool(reply.decline_reason):
        raise ProtocolError(f"approved={reply.approved} with decline_reason "
                            f"{reply.decline_reason}")


def _check_capture(amount_minor: int, reply: pb.CaptureResponse) -> None:
    if reply.captured_minor != amount_minor:
        raise ProtocolError(f"captured {reply.captured_minor}, asked {amount_minor}")


# -- the load shape ------------------------------------------------------------------------------


class MidnightPeak(LoadTestShape):
    """Quiet, a ramp to the peak within a minute, a hold at the peak, a decay; then the end.

    The user count moves in steps of one tick (a second), spawned fast enough to be in place
    within half a tick; with --user-rate r, the offered load is about r x users tasks/s.
    """

    def stages(self) -> tuple[int, int, float, float, float, float]:
        options = _options(self.runner.environment)
        base = max(1, options.base_users)
        return (base, base * max(1, options.peak_factor), options.quiet_s, options.ramp_s,
                options.hold_s, options.decay_s)

    def tick(self):
        base, peak, quiet_s, ramp_s, hold_s, decay_s = self.stages()
        t = self.get_run_time()
        if t < quiet_s:
            return base, float(min(base, SPAWN_RATE_QUIET_MAX))
        t -= quiet_s
        if t < ramp_s:
            return base + round((peak - base) * t / ramp_s), _spawn_rate(peak - base, ramp_s)
        t -= ramp_s
        if t < hold_s:  # the users are in place: the rate only matters if some died
            return peak, _spawn_rate(peak - base, ramp_s)
        t -= hold_s
        if t < decay_s:
            return peak - round((peak - base) * t / decay_s), _spawn_rate(peak - base, decay_s)
        return None


def _spawn_rate(users: int, seconds: float) -> float:
    """Twice the ramp's slope: each tick's step is in place within half a tick."""
    return max(1.0, 2.0 * users / max(seconds, 1.0))
