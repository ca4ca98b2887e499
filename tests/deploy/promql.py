"""What creditgate exports (the metric names and labels of the interfaces it promises) and a
small reader of PromQL that finds the metrics and labels an expression names, so the
dashboard and the alert rules can be held to them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Every metric creditgate exports, with its labels: gateway/metrics.py and ledger/metrics.py
# define them, and test_exported_names_are_the_registries_names holds this list to theirs.
COUNTERS = {
    "creditgate_calls_total": {"method", "code"},
    "creditgate_decisions_total": {"reason", "product", "channel"},
    "creditgate_approved_amount_minor_total": {"product", "channel"},
    "creditgate_script_calls_total": {"redis", "script"},
    "creditgate_redis_errors_total": {"redis", "kind"},
    "creditgate_shed_calls_total": {"method", "cause"},
    "creditgate_sweeper_released_holds_total": set(),
    "creditgate_catalog_reloads_total": {"result"},
    "creditgate_shadow_calls_total": {"result"},
    "creditgate_shadow_differences_total": {"product", "kind"},
    "creditgate_redis_cluster_map_changes_total": set(),
    "creditgate_ledger_events_posted_total": {"type"},
    "creditgate_ledger_dead_letters_total": set(),
}
HISTOGRAMS = {
    "creditgate_call_duration_seconds": {"method"},
    "creditgate_redis_round_trip_seconds": {"redis"},
    "creditgate_redis_batch_size": {"redis"},
    "creditgate_ledger_batch_duration_seconds": set(),
}
GAUGES = {
    "creditgate_redis_up": {"redis"},
    "creditgate_redis_cluster_masters": set(),
    "creditgate_in_flight_calls": set(),
    "creditgate_admission_limit": set(),
    "creditgate_catalog_info": {"version"},
    "creditgate_shadow_catalog_info": {"version"},
    "creditgate_build_info": {"version", "python", "grpc"},
    "creditgate_outbox_backlog_events": set(),
    "creditgate_ledger_consumer_lag_events": set(),
    "creditgate_reconcile_drifts": set(),
    "creditgate_reconcile_undrained_streams": set(),
    "creditgate_reconcile_last_run_timestamp_seconds": set(),
}
# The series a query may name, with the labels each carries; every series also has the labels
# Prometheus adds when it scrapes.
SERIES: dict[str, set[str]] = {
    **COUNTERS, **GAUGES,
    **{f"{name}_{suffix}": labels | ({"le"} if suffix == "bucket" else set())
       for name, labels in HISTOGRAMS.items() for suffix in ("bucket", "sum", "count")},
}
TARGET_LABELS = {"instance", "job"}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_NAME = re.compile(r"(?<![\w.$])[a-zA-Z_:][\w:]*")
# Grafana's variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: every name that is not a function, an aggregation,
    a keyword, a label or a number."""
    text = without_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        if text[match.end():].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, the labels its matchers name) of every `metric{...}` in the expression."""
    text = without_strings(expr)
    return [(name, set(_MATCHER.findall(matchers))) for name, matchers in _SELECTOR.findall(text)]


def grouping_labels(expr: str) -> set[str]:
    """The labels of its by/without/on/ignoring/group_* clauses."""
    return {label.strip() for labels in _GROUPING.findall(without_strings(expr))
            for label in labels.split(",") if label.strip()}


def unknown_names(expr: str) -> list[str]:
    """What in the expression does not match what creditgate exports: a metric it does not
    export, a label a metric lacks, a grouping label no metric of the expression has."""
    found = [f"metric {name}" for name in sorted(metric_names(expr)) if name not in SERIES]
    for name, labels in selector_labels(expr):
        found += [f"label {label} of {name}" for label in sorted(labels)
                  if name in SERIES and label not in SERIES[name] | TARGET_LABELS]
    known = set().union(*(SERIES.get(name, set()) for name in metric_names(expr))) | \
        TARGET_LABELS
    found += [f"grouping label {label}" for label in sorted(grouping_labels(expr) - known)]
    return found


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); the "
                    "structural checks of this file ran without it")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
