"""Log lines: the JSON format (one object per line, the call's ids inside a call and only
there, `extra` fields, tracebacks as a field), the text format, `setup` and its option and
variable, URLs without credentials, and refusals of bad input sampled: thousands of bad
requests make a handful of lines."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import grpc
import pytest

from creditgate.gateway import errors, logs
from creditgate.gateway.errors import FailureLog
from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.conftest import CUSTOMER_CAPS

LOGGER = "creditgate.gateway"
BAD_CALLS = 2_000


def record(message: str = "hello %s", *args, exc_info=None, **extra) -> logging.LogRecord:
    if not args and "%s" in message:
        args = ("world",)
    return logging.getLogger("creditgate.test").makeRecord(
        "creditgate.test", logging.WARNING, __file__, 1, message, args, exc_info,
        extra=extra or None)


def as_json(made: logging.LogRecord) -> dict:
    line = logs.JsonFormatter().format(made)
    assert "\n" not in line  # one line, whatever the message or traceback holds
    return json.loads(line)


def test_a_json_line_has_the_fields_and_no_call_ids_outside_a_call():
    line = as_json(record(port=50051, path="var/ledger.sqlite3", level="not this"))
    assert line.pop("time").endswith("Z")
    assert line == {"level": "WARNING", "logger": "creditgate.test", "message": "hello world",
                    "process": line["process"], "port": 50051, "path": "var/ledger.sqlite3"}


def test_a_line_made_inside_a_call_names_its_request_and_trace():
    def inside_a_call() -> dict:
        logs.REQUEST_ID.set("req-1")
        logs.TRACE_ID.set("4bf92f3577b34da6a3ce929d0e0e4736")
        return as_json(record())

    import contextvars

    line = contextvars.copy_context().run(inside_a_call)
    assert (line["request_id"], line["trace_id"]) == ("req-1", "4bf92f3577b34da6a3ce929d0e0e4736")
    assert "request_id" not in as_json(record())  # the call's context ended with it

    def text_inside_a_call() -> str:
        logs.REQUEST_ID.set("req-2")
        return logs.TextFormatter().format(record(node="total"))

    text = contextvars.copy_context().run(text_inside_a_call)
    assert text.endswith("creditgate.test hello world request_id=req-2 node=total")


def test_an_exception_is_one_field_and_odd_values_are_text():
    try:
        raise ValueError("the script said no")
    except ValueError:
        line = as_json(record("failed", exc_info=sys.exc_info(), value=object(),
                              multi="a\nb"))
    assert line["message"] == "failed"
    assert line["exception"].startswith("Traceback") and \
        "ValueError: the script said no" in line["exception"]
    assert line["value"].startswith("<object object") and line["multi"] == "a\nb"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@redis-1:6379/0", "redis://***@redis-1:6379/0"),
    ("rediss://app:s3cret@[::1]:6380/2?ssl_cert_reqs=none", "rediss://***@[::1]:6380/2"),
    ("postgresql://ledger:s3cret@db/ledger?sslmode=require", "postgresql://***@db/ledger"),
    ("postgresql://db/ledger?password=s3cret", "postgresql://db/ledger"),
    ("redis://127.0.0.1:6399/0", "redis://127.0.0.1:6399/0"),
    ("sqlite:///var/ledger.sqlite3", "sqlite:///var/ledger.sqlite3"),
])
def test_urls_in_logs_keep_no_credentials(url, shown):
    assert logs.redacted_url(url) == shown


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


SETUP = ("import logging, sys; from creditgate.gateway import logs; logs.setup(sys.argv[1] "
         "if len(sys.argv) > 1 else ''); logging.getLogger('creditgate.x').info("
         "'started', extra={'port': 1}); logging.getLogger('creditgate.x').debug('no')")


def test_setup_writes_json_by_default_text_when_asked():
    default = run_python(SETUP, CREDITGATE_LOG_FORMAT="")
    line, = default.stderr.splitlines()
    assert json.loads(line)["port"] == 1 and json.loads(line)["message"] == "started"
    text = run_python(SETUP, CREDITGATE_LOG_FORMAT="text")
    assert text.stderr.strip().endswith(" INFO " + text.stderr.split()[3] +
                                        " creditgate.x started port=1")
    wrong = run_python(SETUP, CREDITGATE_LOG_FORMAT="xml")
    assert "log format must be one of json, text, not 'xml'" in wrong.stderr


def test_serve_takes_log_format_and_hands_it_to_its_processes():
    from creditgate.gateway import cli

    args = cli._parser().parse_args(["serve", "--log-format", "text"])
    assert args.log_format == "text"
    for command in (["ledger"], ["reconcile"], ["bills"], ["journal"]):
        extra = ["close", "--cycle", "2026-11"] if command == ["bills"] else []
        parsed = cli._parser().parse_args([*command, "--log-format", "json", *extra])
        assert parsed.log_format == "json"


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


class Lines(logging.Handler):
    """The gateway's lines as the JSON formatter writes them, at the moment they are made
    (inside the call, with its context)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, made: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(made)))


@pytest.fixture
def gateway_lines(monkeypatch):
    """A FailureLog with a clock of the test's, and the gateway's lines formatted as JSON."""
    clock = Clock()
    logger = logging.getLogger(LOGGER)
    monkeypatch.setattr(errors, "failures", FailureLog(logger, clock=clock))
    handler = Lines()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield clock, handler.lines
    finally:
        logger.setLevel(previous)
        logger.removeHandler(handler)


async def test_thousands_of_bad_requests_make_a_handful_of_lines(gateway, admin, auth,
                                                                 gateway_lines):
    clock, lines = gateway_lines
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-bad", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))

    async def bad(index: int, metadata=()) -> grpc.StatusCode:
        try:
            await auth.Authorize(pb.AuthorizeRequest(
                idempotency_key=f"bad-{index}", customer_id="c-bad", product_id="scan_pay",
                channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=0,
                currency="CNY"), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    # The first is logged at once, inside its call: the line names the caller's request id.
    codes = [await bad(0, metadata=(("x-request-id", "terminal-req-0001"),))]
    for start in range(1, BAD_CALLS, 250):
        codes += await asyncio.gather(*(bad(i) for i in range(start,
                                                               min(start + 250, BAD_CALLS))))
    assert len(codes) == BAD_CALLS and set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    refusals = [line for line in lines if "INVALID_ARGUMENT" in line["message"]]
    assert [(line["level"], line["message"], line["request_id"]) for line in refusals] == [
        ("INFO", "Authorize failed: INVALID_ARGUMENT (InvalidArgument, field amount_minor)",
         "terminal-req-0001")]
    clock.now_s += errors.FAILURE_LOG_INTERVAL_S
    assert await bad(BAD_CALLS) == grpc.StatusCode.INVALID_ARGUMENT  # ends the interval
    refusals = [line for line in lines if "INVALID_ARGUMENT" in line["message"]]
    assert len(refusals) == 2
    assert refusals[1]["message"] == (
        f"Authorize failed {BAD_CALLS - 1} more times in 10.0 s: INVALID_ARGUMENT "
        "(InvalidArgument, field amount_minor)")
    # The sum covers many calls: it names none of them, even though one call ended it.
    assert "request_id" not in refusals[1]
    assert not any("amount_minor=0" in line["message"] or "c-bad" in json.dumps(line)
                   for line in lines)  # never a request's values


def test_a_failure_line_names_the_call_a_summary_none():
    import contextvars

    clock = Clock()
    handler = Lines()
    logger = logging.getLogger("creditgate.test.failures")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    failures = FailureLog(logger, clock=clock)

    def call(request_id: str) -> None:
        logs.REQUEST_ID.set(request_id)
        failures.failed("Capture", grpc.StatusCode.UNAVAILABLE, ConnectionError("down"))

    try:
        for number in range(5):
            contextvars.copy_context().run(call, f"req-{number}")
        clock.now_s += 10.0
        contextvars.copy_context().run(call, "req-last")
    finally:
        logger.removeHandler(handler)
    first, summary = handler.lines
    assert first["request_id"] == "req-0" and first["level"] == "WARNING"
    assert "request_id" not in summary and "4 more times" in summary["message"]


def test_the_suite_wide_scan_finds_a_customer_id_outside_the_audit_log():
    from tests.conftest import _KeepLines, _naming_customers

    kept = _KeepLines()
    for name, message in [("creditgate.audit", '{"customer_id":"c-w1"}'),
                          ("creditgate.gateway", "Authorize failed for c-w1"),
                          ("creditgate.gateway", "hold 194-c-w12 of c-w12x"),
                          ("creditgate.ledger", "field 'x' is not an amount: 'c-w2'"),
                          ("creditgate.ledger", "event c:c-w1:3 not booked")]:
        kept.emit(logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, message,
                                                     (), None))
    assert _naming_customers(kept, {"c-w1", "c-w2", "ab"}) == [
        "creditgate.gateway INFO Authorize failed for c-w1",
        "creditgate.ledger INFO field 'x' is not an amount: 'c-w2'",
        "creditgate.ledger INFO event c:c-w1:3 not booked"]
