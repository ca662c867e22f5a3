"""manifests/monitoring: the alerts pass `promtool check rules` and their unit tests,
every alert has one, and every metric the rules and the dashboard read is exported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client.metrics_core import Metric

import keyledger.main  # noqa: F401  # registers every metric the operator exports

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
UNIT_TESTS = MONITORING / "tests" / "alerts.test.yaml"
DASHBOARD = MONITORING / "keyledger-dashboard.json"
METRIC_NAME = re.compile(r"\bkeyledger_[a-z0-9_]+")


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `bash hack/install-deps.sh system` installs it"
    return found


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULE.read_text())
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rule file, beside the unit tests."""
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules(rule_dir: Path) -> None:
    _run("check", "rules", "rules.yaml", cwd=rule_dir)


def test_promtool_unit_tests_pass(rule_dir: Path) -> None:
    _run("test", "rules", UNIT_TESTS.name, cwd=rule_dir)


def test_every_alert_has_a_unit_test_that_sees_it_fire_and_stay_quiet() -> None:
    alerts = {rule["alert"] for rule in _rules()}
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"
    assert alerts == quiet, f"alerts without a quiet test: {sorted(alerts - quiet)}"
    assert {
        "KeyledgerKeyNotReady",
        "KeyledgerRotationOverdue",
        "KeyledgerKeyExpiringSoon",
        "KeyledgerKeyDrifted",
        "KeyledgerCompromisedVersionInUse",
        "KeyledgerKmsErrorsHigh",
        "KeyledgerKmsLatencyHigh",
        "KeyledgerProviderNotReady",
        "KeyledgerLedgerUnavailable",
    } <= alerts


SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def sample_names(families: Iterable[Metric]) -> set[str]:
    """The sample names a scrape of these metric families can show."""
    return {
        family.name + suffix
        for family in families
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
    }


def _exported_sample_names() -> set[str]:
    return sample_names(prometheus_client.REGISTRY.collect())


def used_names() -> dict[str, set[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        "rules": {n for rule in _rules() for n in METRIC_NAME.findall(rule["expr"])},
        "dashboard": {
            n
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for n in METRIC_NAME.findall(target["expr"])
        },
    }


def test_every_metric_the_rules_and_dashboard_read_is_exported() -> None:
    exported = _exported_sample_names()
    for where, names in used_names().items():
        assert names, f"no keyledger metric found in the {where}"
        missing = sorted(names - exported)
        assert not missing, f"the {where} read metrics the operator does not export: {missing}"


def test_the_dashboard_shows_the_new_series() -> None:
    used = used_names()["dashboard"]
    for name in (
        "keyledger_reconcile_duration_seconds_bucket",
        "keyledger_reconcile_failures_total",
        "keyledger_ledger_query_seconds_bucket",
        "keyledger_ledger_errors_total",
        "keyledger_provider_ready",
        "keyledger_kms_calls_total",
    ):
        assert name in used, f"the dashboard has no panel on {name}"
