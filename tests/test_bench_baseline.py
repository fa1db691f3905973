"""The benchmark's ``--baseline PATH`` row: another checkout served with the product's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.report import baseline_text
from tests.bench.servers import SERVERS, baseline_spec


def _checkout(root: Path, settings: str) -> Path:
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    (root / "testproject").mkdir()
    (root / "testproject" / "settings.py").write_text(settings)
    return root


def test_the_row_runs_the_other_checkout_with_the_products_settings(tmp_path):
    where = _checkout(tmp_path / "old", "WS4REDIS_EXPIRE = 0\n")
    spec = baseline_spec(where)
    assert spec.name == "baseline"
    assert spec.cwd == where.resolve()
    assert spec.env == SERVERS["product"].env
    assert spec.user_path == SERVERS["product"].user_path
    command = spec.commands(8000, "redis://127.0.0.1:1/0", lambda: tmp_path)["server"]
    assert command[0] == str(where.resolve() / ".venv" / "bin" / "python")
    assert command[-1] == "testproject.asgi:application"
    # A checkout from before the history gets no positions scenarios.
    assert not spec.positions


def test_a_checkout_with_a_history_runs_the_positions_scenarios(tmp_path):
    settings = 'WS4REDIS_HISTORY_SIZE = int(os.environ.get("WS4REDIS_HISTORY_SIZE", "100"))\n'
    assert baseline_spec(_checkout(tmp_path, settings)).positions


def test_a_checkout_without_its_venv_is_refused(tmp_path):
    (tmp_path / "testproject").mkdir()
    (tmp_path / "testproject" / "settings.py").write_text("")
    with pytest.raises(ValueError, match="make install"):
        baseline_spec(tmp_path)


def test_the_ratios_pair_the_repeats_that_ran_in_turn():
    def burst(*per_repeat: list[float]) -> dict:
        rounds = [
            {"repeat": n, "deliveries_per_s": value}
            for n, values in enumerate(per_repeat)
            for value in values
        ]
        return {"rounds": rounds}

    def steady(*p99: float) -> dict:
        runs = [{"p50_ms": 1.0, "p99_ms": value} for value in p99]
        return {**runs[0], "runs": runs}

    results = {
        "product": {
            "burst1k": burst([90, 100, 110], [190, 200, 210]),
            "steady": steady(10.0, 30.0),
        },
        "baseline": {"burst1k": burst([100, 100], [400]), "steady": steady(20.0, 20.0)},
    }
    text = baseline_text(results)
    assert "burst1k deliveries_per_s" in text
    assert "ratios 1.00, 0.50 (median 0.75, range 0.50-1.00)" in text
    assert (
        "steady p99_ms product/baseline per repeat: 10.0/20.0, 30.0/20.0; ratios 0.50, 1.50" in text
    )
    assert baseline_text({"product": results["product"]}) == ""
