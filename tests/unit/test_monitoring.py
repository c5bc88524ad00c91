"""ops/monitoring/, checked: the alert rules pass promtool (and fire on the series their
tests give), the scrape example is a valid configuration, and every expression of the
rules and of the Grafana dashboard names a metric Fleetline serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from fleetline.producer import fleet_gauges
from fleetline.shared.metrics import Families

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "ops" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian's prometheus; .ci/run installs it)"
)
# How a family's samples are named in the exposition format.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def served_names() -> set[str]:
    """Every sample name a node endpoint or the exporter serves."""
    names: set[str] = set()
    for metric in Families(CollectorRegistry()).__dict__.values():
        family = metric.describe()[0]
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    source = Path(fleet_gauges.__file__).read_text()
    names |= set(re.findall(r'GaugeMetricFamily\(\s*"(fleetline_\w+)"', source))
    return names


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    rules = sorted(str(p.relative_to(ROOT)) for p in MONITORING.glob("*.yml"))
    assert rules == ["ops/monitoring/alerts.yml"]
    done = promtool("check", "rules", *rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_the_alerts_fire_on_their_test_series() -> None:
    done = promtool("test", "rules", "ops/monitoring/alerts_test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_scrape_example_is_a_valid_configuration() -> None:
    done = promtool("check", "config", "ops/monitoring/prometheus.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_cover_what_operators_are_paged_for() -> None:
    spec = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for g in spec["groups"] for rule in g["rules"]}
    wanted = {
        "FleetlineQueueBacklog": "fleetline_queue_depth",
        "FleetlineBreakerOpen": "fleetline_breaker_state",
        "FleetlineSpendNearLimit": "fleetline_spend_limit_usd",
        "FleetlineStepErrorRate": "fleetline_step_outcomes_total",
        "FleetlineDeadlineMisses": "fleetline_deadline_misses_total",
    }
    for alert, metric in wanted.items():
        assert metric in alerts[alert], alert


def dashboard_exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [t["expr"] for t in panel.get("targets", [])]
        found += dashboard_exprs(panel.get("panels", []))
    return found


def test_every_expression_names_a_served_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard["panels"])
    assert len(exprs) >= 15
    spec = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    exprs += [rule["expr"] for g in spec["groups"] for rule in g["rules"]]
    served = served_names()
    for expr in exprs:
        named = set(re.findall(r"\bfleetline_\w+", expr))
        assert named, f"names no Fleetline metric: {expr}"
        assert named <= served, f"{sorted(named - served)} in {expr!r} are not served"


def test_the_dashboard_shows_every_family() -> None:
    text = DASHBOARD.read_text()
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in served_names()}
    families.discard("fleetline_exporter_redis_up")  # an alert's, not a chart's
    missing = sorted(f for f in families if f not in text)
    assert not missing, missing


def test_the_dashboard_asks_for_its_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
