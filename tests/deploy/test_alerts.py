"""The Prometheus alert rules (deploy/prometheus/alerts.yml): the structure Prometheus needs,
one rule for each condition the peak must page on, expressions that name only exported
metrics and labels; promtool, where installed, checks the rules and the example configuration
and runs the rules on made-up series. The list of exported names is held to the registries
that define them, and the PromQL reader to what it must catch."""

from __future__ import annotations

import re
import textwrap

import yaml

from creditgate.ledger import metrics as ledger_metrics
from tests.deploy.promql import (
    DEPLOY,
    SERIES,
    metric_names,
    run_promtool,
    unknown_names,
)

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning"}
# Each condition of the issue, the alert that pages on it, and a metric its expression reads.
REQUIRED = {
    "CreditgateApprovalRateDrop": "creditgate_decisions_total",
    "CreditgateLatencyP99OverBudget": "creditgate_call_duration_seconds_bucket",
    "CreditgateRedisErrors": "creditgate_redis_errors_total",
    "CreditgateShedRate": "creditgate_shed_calls_total",
    "CreditgateOutboxLag": "creditgate_outbox_backlog_events",
    "CreditgateDeadLetters": "creditgate_ledger_dead_letters_total",
    "CreditgateReconcileDrift": "creditgate_reconcile_drifts",
}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]]


def test_the_rules_file_has_the_structure_prometheus_needs():
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"} and document["groups"]
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group["name"]
        for rule in group["rules"]:
            name = rule.get("alert")
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
            assert re.fullmatch(r"Creditgate[A-Z][A-Za-z0-9]+", name or ""), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            assert DURATION.match(rule["for"]), (name, rule["for"])
            assert rule["labels"]["severity"] in SEVERITIES, name
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))


def test_each_condition_of_the_peak_has_its_alert():
    by_name = {rule["alert"]: rule for rule in rules()}
    for name, metric in REQUIRED.items():
        assert name in by_name, name
        assert metric in metric_names(by_name[name]["expr"]), name


def test_every_expression_names_only_exported_metrics_and_labels():
    for rule in rules():
        assert metric_names(rule["expr"]), rule["alert"]
        assert unknown_names(rule["expr"]) == [], rule["alert"]


def test_the_promql_reader_catches_what_it_must():
    expr = ('sum by (reason, bogus) (rate(creditgate_decisions_total{reason!="approved", '
            'nope=~"x"}[5m])) / on (instance) creditgate_calls_totl offset 1h > bool 0')
    assert metric_names(expr) == {"creditgate_decisions_total", "creditgate_calls_totl"}
    assert unknown_names(expr) == ["metric creditgate_calls_totl",
                                   "label nope of creditgate_decisions_total",
                                   "grouping label bogus"]
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate('
                        'creditgate_redis_batch_size_bucket{redis="a:1"}[$__rate_interval])))'
                        ' and time() - 1e3 > 0') == {"creditgate_redis_batch_size_bucket"}


def sample_names(registry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples
            if not sample.name.endswith("_created")}


def creditgate_names(registry) -> set[str]:
    return {name for name in sample_names(registry) if name.startswith("creditgate_")}


def test_exported_names_are_the_registries_names():
    """The list the dashboard and rules are held to is what the registries define."""
    worker = ledger_metrics.LedgerMetrics()
    worker.batch_duration.observe(0.01)  # a histogram shows its samples once observed
    ledger = creditgate_names(worker.registry) | creditgate_names(
        ledger_metrics.reconcile_registry(0, 0))
    assert ledger == {name for name in SERIES if name.startswith(
        ("creditgate_ledger_", "creditgate_outbox_", "creditgate_reconcile_"))}
    assert gateway_names() == {name for name in SERIES if name not in ledger}


def gateway_names() -> set[str]:
    """The creditgate_ names of a gateway process's registry (gateway/metrics.py), a family
    with no series yet (labelled, nothing recorded) by the names its series will have."""
    from creditgate.gateway.metrics import GatewayMetrics

    registry = GatewayMetrics().registry
    names = creditgate_names(registry)
    for family in registry.collect():
        if family.name.startswith("creditgate_") and not family.samples:
            names |= ({f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
                      if family.type == "histogram" else
                      {family.name + ("_total" if family.type == "counter" else "")})
    return names


def test_promtool_checks_the_rules_and_the_example_configuration():
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout
    result = run_promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


UNIT_TESTS = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: creditgate_ledger_dead_letters_total{{job="ledger"}}
        values: "0 0 0 1 1 1"
      - series: creditgate_reconcile_drifts{{job="pushgateway"}}
        values: "3 3 3 3 3 3"
      - series: creditgate_reconcile_undrained_streams{{job="pushgateway"}}
        values: "2 2 2 0 0 0"
      - series: creditgate_redis_up{{redis="10.0.0.1:6379", instance="g1"}}
        values: "1 0 0 0 0 0"
      - series: creditgate_ledger_consumer_lag_events{{job="ledger"}}
        values: "0 0 0 0 0 0"
    alert_rule_test:
      - eval_time: 2m
        alertname: CreditgateDeadLetters
        exp_alerts: []
      - eval_time: 4m
        alertname: CreditgateDeadLetters
        exp_alerts:
          - exp_labels: {{severity: critical}}
      - eval_time: 2m
        alertname: CreditgateReconcileDrift
        exp_alerts: []
      - eval_time: 4m
        alertname: CreditgateReconcileDrift
        exp_alerts:
          - exp_labels: {{severity: critical}}
      - eval_time: 1m
        alertname: CreditgateRedisDown
        exp_alerts: []
      - eval_time: 3m
        alertname: CreditgateRedisDown
        exp_alerts:
          - exp_labels: {{severity: critical, redis: "10.0.0.1:6379"}}
      - eval_time: 5m
        alertname: CreditgateLedgerWorkerDown
        exp_alerts: []
"""


def test_the_rules_fire_on_made_up_series(tmp_path):
    """Dead letters page at once; a drift pages only once every stream was drained; an
    unreachable Redis pages after its 30 s; a reporting worker is not 'down'."""
    # The expressions and durations are under test, not the annotations' prose.
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    bare = tmp_path / "alerts.yml"
    bare.write_text(yaml.safe_dump(document))
    path = tmp_path / "alerts_test.yml"
    path.write_text(textwrap.dedent(UNIT_TESTS.format(alerts=bare)))
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
