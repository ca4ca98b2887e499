"""The Grafana dashboard (deploy/grafana/creditgate.json) loads, is ready for provisioning,
answers the peak's questions, and every query names only metrics and labels creditgate
exports; Prometheus parses every query (promtool, where installed)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy.promql import (
    DEPLOY,
    GRAFANA_VARIABLES,
    SERIES,
    metric_names,
    run_promtool,
    unknown_names,
)

DASHBOARD = DEPLOY / "grafana" / "creditgate.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
GRID_COLUMNS = 24


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels(dashboard)
            for target in panel["targets"]]


def test_the_dashboard_is_ready_for_provisioning(dashboard):
    assert dashboard["uid"] == "creditgate" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and "id" not in dashboard
    # The data source is a variable: provisioned or imported, it binds to the local one.
    variable, = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel
    for panel in panels(dashboard):
        assert panel["title"] and panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_names_only_exported_metrics_and_labels(dashboard):
    for title, expr in queries(dashboard):
        assert metric_names(expr), f"{title}: {expr} names no metric"
        assert unknown_names(expr) == [], f"{title}: {expr}"


def test_the_panels_answer_the_peaks_questions(dashboard):
    """Each question of the peak has a panel whose queries read the metrics that answer it."""
    named = {title: set().union(*(metric_names(expr) for t, expr in queries(dashboard)
                                  if t == title)) for title, _ in queries(dashboard)}
    questions = {
        "Authorizations per second": {"creditgate_decisions_total", "creditgate_calls_total"},
        "Approval rate": {"creditgate_decisions_total"},
        "Declines by reason": {"creditgate_decisions_total"},
        "Latency p50 by method": {"creditgate_call_duration_seconds_bucket"},
        "Latency p99 by method": {"creditgate_call_duration_seconds_bucket"},
        "Latency p99.9 by method": {"creditgate_call_duration_seconds_bucket"},
        "Shed calls by cause": {"creditgate_shed_calls_total"},
        "Refused calls by status": {"creditgate_calls_total"},
        "Redis round trip p50 / p99": {"creditgate_redis_round_trip_seconds_bucket"},
        "Redis batch size": {"creditgate_redis_batch_size_sum",
                             "creditgate_redis_batch_size_count"},
        "Redis errors and reachability": {"creditgate_redis_errors_total",
                                          "creditgate_redis_up"},
        "In flight and admission limit": {"creditgate_in_flight_calls",
                                          "creditgate_admission_limit"},
        "Outbox backlog and consumer lag": {"creditgate_outbox_backlog_events",
                                            "creditgate_ledger_consumer_lag_events"},
        "Ledger posting rate by type": {"creditgate_ledger_events_posted_total"},
        "Dead letters in the range": {"creditgate_ledger_dead_letters_total"},
        "Reconcile drifts": {"creditgate_reconcile_drifts"},
        "Catalog version in use": {"creditgate_catalog_info", "creditgate_catalog_reloads_total"},
        "Shadow catalog: calls compared and differences": {
            "creditgate_shadow_calls_total", "creditgate_shadow_differences_total",
            "creditgate_shadow_catalog_info"},
        "Build": {"creditgate_build_info"},
    }
    for title, metrics in questions.items():
        assert metrics <= named.get(title, set()), title
    # The quantiles the issue asks for, read from the latency histogram by method.
    latency = [expr for title, expr in queries(dashboard) if title.startswith("Latency p")]
    for level in ("0.5", "0.99", "0.999"):
        assert any(f"histogram_quantile({level}," in expr and "method" in expr
                   for expr in latency), level


def test_every_exported_metric_is_on_the_dashboard(dashboard):
    shown = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    families = {name.rsplit("_", 1)[0] if name.endswith(("_bucket", "_sum", "_count"))
                else name for name in shown}
    missing = [name for name in SERIES if name not in shown and name.rsplit("_", 1)[0]
               not in families]
    assert missing == []


def test_provisioning_files_load_the_dashboard_and_name_a_prometheus():
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "creditgate.yml").read_text())
    assert providers["apiVersion"] == 1
    provider, = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    source, = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")


def test_prometheus_parses_every_query(tmp_path, dashboard):
    """Each query as a recording rule, Grafana's variables filled in: promtool parses them."""
    rules = []
    for number, (_, expr) in enumerate(queries(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"creditgate:dashboard_query:{number}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
