"""The operations docs stay true: README links, metric names in the dashboard and alerts."""

from __future__ import annotations

import json
import re

from tests.servers import ROOT
from ws4redis_channels.metrics import METRICS

DOCS = ROOT / "docs"
SUFFIXES = ("_bucket", "_count", "_sum")
# Names in the texts that are not metrics: the app, the commands.
NOT_METRICS = {"ws4redis_channels", "ws4redis_status", "ws4redis_publish"}


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in METRICS:
            return name.removesuffix(suffix)
    return name


def _metric_names(text: str) -> set[str]:
    names = set(re.findall(r"\bws4redis_[a-z_]+\b", text)) - NOT_METRICS
    return {_base(name) for name in names}


def test_every_relative_link_of_the_readme_points_at_a_file() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links its documentation"
    missing = [link for link in relative if not (ROOT / link).exists()]
    assert not missing, missing


def test_the_grafana_dashboard_uses_only_real_metrics() -> None:
    dashboard = json.loads((DOCS / "_static/ws4redis-grafana.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    used = _metric_names(exprs)
    assert used <= set(METRICS), used - set(METRICS)
    assert len(used) >= 10


def test_the_alerts_use_only_real_metrics() -> None:
    used = _metric_names((DOCS / "_static/ws4redis-alerts.yml").read_text())
    assert used <= set(METRICS), used - set(METRICS)


def test_the_monitoring_page_lists_every_metric_with_its_type() -> None:
    page = (DOCS / "howto/monitor.rst").read_text()
    for name, (kind, _) in METRICS.items():
        row = re.search(rf"\* - ``{name}``.*?\n     - (\w+)", page)
        assert row, f"{name} is not in the table of docs/howto/monitor.rst"
        assert row.group(1) == kind, name
