"""Log lines: what every line of a call carries, and the two formats.

REQUEST_ID and TRACE_ID are set for each call by the one wrapper in gateway/errors.py (the
caller's `x-request-id`, or one made; the trace id of its `traceparent`), so that every line
the call produces names them.

`json` (the default) writes one JSON object per line for a log pipeline: time, level,
logger, message, process, request_id and trace_id when set, any `extra` fields, and a
traceback as `exception`. `text` writes the same for a human (`make run`). Every command that
runs for a while calls `setup` once (docs/operations.md, "Logs"). A line never carries a
secret: URLs go through `redacted_url`, and requests' values are never logged.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
import sys
import urllib.parse

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

FORMATS = ("json", "text")
FORMAT_ENV = "CREDITGATE_LOG_FORMAT"
FORMAT_DEFAULT = "json"
# A record's own attributes; anything else on it came from `extra` and becomes a field.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


def _call_ids(record: logging.LogRecord) -> dict[str, str]:
    """The call's ids, when the line was made inside a call. A record may set them itself
    (`extra={"request_id": ""}`): a summary of many calls names none of them."""
    ids = {}
    for name, variable in (("request_id", REQUEST_ID), ("trace_id", TRACE_ID)):
        value = record.__dict__.get(name, variable.get())
        if value:
            ids[name] = value
    return ids


def _extra(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name, value in record.__dict__.items()
            if name not in _RECORD_ATTRIBUTES and name not in ("request_id", "trace_id")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields whose value JSON cannot hold are written as text."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _utc(record.created), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "process": record.process, **_call_ids(record)}
        for name, value in _extra(record).items():
            line.setdefault(name, value)  # an extra field never hides a standard one
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """`time level process logger message key=value ...`, a traceback on the lines after."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        fields = {**_call_ids(record), **_extra(record)}
        tail = "".join(f" {name}={value}" for name, value in fields.items())
        return super().formatMessage(record) + tail


def _utc(created_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(created_s, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the line, not at set-up."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass  # the base class sets it; the property always answers sys.stderr


def formatter(format_: str) -> logging.Formatter:
    if format_ not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format_!r}")
    return JsonFormatter() if format_ == "json" else TextFormatter()


def format_from_environment() -> str:
    return os.environ.get(FORMAT_ENV, "") or FORMAT_DEFAULT


def setup(format_: str = "", level: int = logging.INFO) -> None:
    """Log `format_` lines (default: $CREDITGATE_LOG_FORMAT, else json) at `level` and above
    to stderr. Called again, it replaces its own handler. Like logging.basicConfig, it leaves
    a process whose logging someone else configured (a test harness) as it is."""
    chosen = formatter(format_ or format_from_environment())
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    if root.handlers:
        return
    handler = _Stderr()
    handler.setFormatter(chosen)
    root.addHandler(handler)
    root.setLevel(level)


def redacted_url(url: str) -> str:
    """A URL or DSN without its user, password and query (which may hold a password), for
    logs: `redis://***@host:6379/0`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.split("?")[0]  # a path (sqlite:///var/ledger.sqlite3 has no netloc)
    hidden = "***@" if parts.username or parts.password else ""
    if "," in parts.netloc:  # several hosts (a Redis Cluster's seeds): kept as given
        return f"{parts.scheme}://{hidden}{parts.netloc.rpartition('@')[2]}{parts.path}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: leave it out rather than fail a log
        port = ""
    return f"{parts.scheme}://{hidden}{host}{port}{parts.path}"
