"""The hot path's per-request CPU cost, Python twin against compiled twin.

Run with `make bench` (pytest bench --benchmark-enable), or only these with
`.venv/bin/python -m pytest bench/test_hotpath_bench.py --benchmark-enable`; pytest-benchmark
groups the twins side by side, and the last test prints each twin's median and how many times
faster the compiled twin is.

Both twins are measured alike: the same request and rules, warm-up first, and rounds of at
least ROUND_S_MIN (several calls per round, so the timer's own cost is spread thin).
"""

from __future__ import annotations

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import _plan_py
from creditgate.limits import catalog as limits_catalog
from creditgate.limits import contracts
from creditgate.limits.contracts import RESERVE

try:
    from creditgate.hotpath import _plan_c
except ImportError:  # not built: only the Python twin is measured
    _plan_c = None

PARTITIONS = 256
REQUEST = pb.AuthorizeRequest(
    idempotency_key="pos-0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77",
    customer_id="cust-8842017731",
    product_id="scan_pay",
    channel=pb.CHANNEL_QR_SCAN,
    merchant_id="mer-310115-000482",
    mcc="5411",
    amount_minor=12_850,
    currency="CNY",
    allow_partial=True,
    installment_months=3,
)
CAPTURE = pb.CaptureRequest(
    idempotency_key="cap-0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77",
    hold_id="117-K7QZ2M4XRB6TN3PV",
    amount_minor=12_850,
    final=True,
)
VOID = pb.VoidRequest(
    idempotency_key="void-0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77", hold_id="117-K7QZ2M4XRB6TN3PV"
)
ROUND_S_MIN = 20e-6
SETTINGS = {"warmup": True, "warmup_iterations": 10_000, "min_time": ROUND_S_MIN}
TWINS = [
    pytest.param(_plan_py, id="py"),
    pytest.param(
        _plan_c,
        id="c",
        marks=pytest.mark.skipif(_plan_c is None, reason="hotpath._plan_c is not built"),
    ),
]
# Median seconds per call, by (group, twin), for the ratio printed at the end.
MEDIANS: dict[tuple[str, str], float] = {}


def record(benchmark, group: str, impl) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None when benchmarks are disabled
        MEDIANS[(group, impl.__name__.rsplit(".", 1)[-1])] = stats.stats.median


@pytest.mark.benchmark(group="plan_authorize", **SETTINGS)
@pytest.mark.parametrize("impl", TWINS)
def test_plan_authorize(benchmark, impl):
    rules = impl.compile_products(limits_catalog.load())
    keys, args = benchmark(impl.plan_authorize, REQUEST, rules, PARTITIONS)
    assert len(keys) == len(RESERVE.keys) and args[RESERVE.args.rule_decline] == "0"
    # Partial approval asked and allowed; 3 months.
    assert args[RESERVE.args.partial_approval] == "1"
    assert args[RESERVE.args.installment_months] == "3"
    record(benchmark, "plan_authorize", impl)


@pytest.mark.benchmark(group="plan_capture", **SETTINGS)
@pytest.mark.parametrize("impl", TWINS)
def test_plan_capture(benchmark, impl):
    keys, args = benchmark(impl.plan_capture, CAPTURE, PARTITIONS)
    assert len(keys) == len(contracts.CAPTURE.keys)
    assert args[contracts.CAPTURE.args.hold_id] == CAPTURE.hold_id
    record(benchmark, "plan_capture", impl)


@pytest.mark.benchmark(group="plan_void", **SETTINGS)
@pytest.mark.parametrize("impl", TWINS)
def test_plan_void(benchmark, impl):
    keys, args = benchmark(impl.plan_void, VOID, PARTITIONS)
    assert len(keys) == len(contracts.VOID.keys)
    assert args[contracts.VOID.args.hold_id] == VOID.hold_id
    record(benchmark, "plan_void", impl)


@pytest.mark.benchmark(group="check_id", **SETTINGS)
@pytest.mark.parametrize("impl", TWINS)
def test_check_id(benchmark, impl):
    benchmark(impl.check_id, "idempotency_key", REQUEST.idempotency_key)
    record(benchmark, "check_id", impl)


def test_ratio(capsys):
    """Prints py/c medians per group (after the benchmarks above; skipped if they did not run)."""
    lines = []
    for group in ("plan_authorize", "plan_capture", "plan_void", "check_id"):
        if (group, "_plan_py") in MEDIANS and (group, "_plan_c") in MEDIANS:
            py_s, c_s = MEDIANS[group, "_plan_py"], MEDIANS[group, "_plan_c"]
            lines.append(
                f"{group} (median): py {py_s * 1e6:.3f} us, c {c_s * 1e6:.3f} us, "
                f"c {py_s / c_s:.2f}x faster"
            )
    if not lines:
        pytest.skip("no py/c pair measured (benchmarks disabled or the extension not built)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
