"""Turn the results of a run into the table, the headline ratios and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["baseline_text", "headline", "table", "targets", "targets_text", "write_json"]

Results = dict[str, dict[str, dict[str, Any]]]


def _get(results: Results, server: str, scenario: str, *keys: str) -> Any:
    value: Any = results.get(server, {}).get(scenario)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _losses(results: Results, server: str) -> tuple[int | None, int | None]:
    lost = dup = None
    for scenario in (
        "burst1k",
        "burst1k-app",
        "burst1k-pos",
        "burst5k",
        "steady",
        "steady-pos",
        "channels",
    ):
        entry = results.get(server, {}).get(scenario)
        if not entry or "error" in entry or "skipped" in entry:
            continue
        lost = (lost or 0) + entry.get("lost", 0)
        dup = (dup or 0) + entry.get("duplicated", 0)
    return lost, dup


def _redis(results: Results, server: str) -> str:
    for scenario in ("steady", "burst1k", "connect"):
        conns = _get(results, server, scenario, "redis_connections")
        if conns:
            return " + ".join(
                f"{n}" if role == "server" else f"{n} {role}" for role, n in conns.items()
            )
    return "-"


def _cell(results: Results, server: str, scenario: str, *keys: str, digits: int = 0) -> str:
    entry = results.get(server, {}).get(scenario)
    if entry is not None and "error" in entry:
        return "ERROR"
    if entry is not None and "skipped" in entry:
        return "n/a"
    return _num(_get(results, server, scenario, *keys), digits)


COLUMNS = [
    ("server", 14),
    ("connects/s", 10),
    ("user conn/s", 11),
    ("storm s", 7),
    ("storm hs p99", 12),
    ("chan del/s", 10),
    ("burst1k del/s", 13),
    ("app del/s", 9),
    ("pos del/s", 9),
    ("burst5k del/s", 13),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("max ms", 8),
    ("pos p99 ms", 10),
    ("lost", 8),
    ("dup", 6),
    ("KB/idle sock", 12),
    ("Redis conns", 12),
]


def table(results: Results) -> str:
    """One row per server; latency from the steady scenario, losses summed over bursts + steady."""
    rows = [[name for name, _ in COLUMNS]]
    for server in results:
        lost, dup = _losses(results, server)
        rows.append(
            [
                server,
                _cell(results, server, "connect", "connects_per_s"),
                _cell(results, server, "connect-user", "connects_per_s"),
                _cell(results, server, "storm", "all_subscribed_s", digits=2),
                _cell(results, server, "storm", "handshake", "p99_ms"),
                _cell(results, server, "channels", "deliveries_per_s"),
                _cell(results, server, "burst1k", "deliveries_per_s"),
                _cell(results, server, "burst1k-app", "deliveries_per_s"),
                _cell(results, server, "burst1k-pos", "deliveries_per_s"),
                _cell(results, server, "burst5k", "deliveries_per_s"),
                _cell(results, server, "steady", "p50_ms", digits=1),
                _cell(results, server, "steady", "p99_ms", digits=1),
                _cell(results, server, "steady", "max_ms", digits=1),
                _cell(results, server, "steady-pos", "p99_ms", digits=1),
                _num(lost),
                _num(dup),
                _cell(results, server, "idle", "kb_per_socket", digits=1),
                _redis(results, server),
            ]
        )
    widths = [max(width, *(len(row[i]) for row in rows)) for i, (_, width) in enumerate(COLUMNS)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(results: Results, a: str, b: str, scenario: str, key: str) -> float | None:
    x, y = _get(results, a, scenario, key), _get(results, b, scenario, key)
    if not x or not y or math.isnan(x) or math.isnan(y):
        return None
    return float(x) / float(y)


def _ratio2(results: Results, a: tuple[str, str, str], b: tuple[str, str, str]) -> float | None:
    x, y = _get(results, *a), _get(results, *b)
    if not x or not y or math.isnan(x) or math.isnan(y):
        return None
    return float(x) / float(y)


# Issue 17's targets: (key, target, "min" or "max")
TARGETS = {
    "connects_product_over_nchan": (0.5, "min"),
    "connects_product_over_nchan_redis": (0.5, "min"),
    "user_connects_product_over_nchan": (0.35, "min"),
    "user_connects_product_over_nchan_redis": (0.35, "min"),
    "storm_product_all_subscribed_s": (3.0, "max"),
    "idle_kb_product_over_nchan": (1.5, "max"),
    "burst1k_product_over_floor": (1.0, "min"),
    "burst5k_product_over_floor": (1.0, "min"),
    "steady_p99_product_over_nchan_redis": (1.15, "max"),
    # Issue 12: a burst to sockets with positions against the same burst without.
    "burst1k_positions_over_plain": (0.8, "min"),
    "burst1k_positions_over_app": (0.8, "min"),
    "steady_p99_positions_over_plain": (1.2, "max"),
    # Issue 14: today's product against an older checkout (``--baseline``), within 10%.
    "burst1k_product_over_baseline": (0.9, "min"),
    "burst5k_product_over_baseline": (0.9, "min"),
    "steady_p99_product_over_baseline": (1.1, "max"),
}


def targets(results: Results) -> dict[str, Any]:
    """Issue 17's (and issue 12's) ratios, each with its target and whether this run meets it."""
    product = "product"
    values = {
        "connects_product_over_nchan": _ratio(
            results, product, "nchan", "connect", "connects_per_s"
        ),
        "connects_product_over_nchan_redis": _ratio(
            results, product, "nchan-redis", "connect", "connects_per_s"
        ),
        # Against nchan's anonymous rate, as the issue sets it.
        "user_connects_product_over_nchan": _ratio2(
            results,
            (product, "connect-user", "connects_per_s"),
            ("nchan", "connect", "connects_per_s"),
        ),
        "user_connects_product_over_nchan_redis": _ratio2(
            results,
            (product, "connect-user", "connects_per_s"),
            ("nchan-redis", "connect", "connects_per_s"),
        ),
        "storm_product_all_subscribed_s": _get(results, product, "storm", "all_subscribed_s"),
        "idle_kb_product_over_nchan": _ratio(results, product, "nchan", "idle", "kb_per_socket"),
        "burst1k_product_over_floor": _ratio(
            results, product, "floor", "burst1k", "deliveries_per_s"
        ),
        "burst5k_product_over_floor": _ratio(
            results, product, "floor", "burst5k", "deliveries_per_s"
        ),
        "steady_p99_product_over_nchan_redis": _ratio(
            results, product, "nchan-redis", "steady", "p99_ms"
        ),
        # Positions on (history, FCALL, the positions flag) against today's default
        # (raw PUBLISH, plain sockets), and against the same FCALL burst to plain sockets.
        "burst1k_positions_over_plain": _ratio2(
            results,
            (product, "burst1k-pos", "deliveries_per_s"),
            (product, "burst1k", "deliveries_per_s"),
        ),
        "burst1k_positions_over_app": _ratio2(
            results,
            (product, "burst1k-pos", "deliveries_per_s"),
            (product, "burst1k-app", "deliveries_per_s"),
        ),
        "steady_p99_positions_over_plain": _ratio2(
            results, (product, "steady-pos", "p99_ms"), (product, "steady", "p99_ms")
        ),
        # The median of the ratios of the repeats (each pair ran back to back).
        "burst1k_product_over_baseline": _paired_median(results, "burst1k", "deliveries_per_s"),
        "burst5k_product_over_baseline": _paired_median(results, "burst5k", "deliveries_per_s"),
        "steady_p99_product_over_baseline": _paired_median(results, "steady", "p99_ms"),
    }
    out = {}
    for key, value in values.items():
        target, kind = TARGETS[key]
        met = None
        if value is not None:
            met = value >= target if kind == "min" else value <= target
        out[key] = {"value": value, "target": target, "kind": kind, "met": met}
    return out


def targets_text(checked: dict[str, Any]) -> str:
    lines = []
    for key, entry in checked.items():
        if entry["value"] is None:
            continue
        sign = ">=" if entry["kind"] == "min" else "<="
        verdict = "met" if entry["met"] else "NOT met"
        lines.append(f"{key}: {entry['value']:.2f} (target {sign} {entry['target']}) {verdict}")
    return "\n".join(lines)


def _per_repeat(entry: dict[str, Any] | None, key: str) -> list[float]:
    """One value per repeat of a scenario: the median of its burst rounds, else the run's."""
    if not entry or "error" in entry or "skipped" in entry:
        return []
    rounds = entry.get("rounds")
    if rounds:
        by_repeat: dict[int, list[float]] = {}
        for each in rounds:
            if each.get(key) is not None:
                by_repeat.setdefault(each.get("repeat", 0), []).append(each[key])
        return [statistics.median(v) for _, v in sorted(by_repeat.items())]
    return [run[key] for run in entry.get("runs", [entry]) if run.get(key) is not None]


def _pairs(results: Results, scenario: str, key: str) -> list[tuple[float, float]]:
    """(product, baseline) per repeat (the two ran in turn, so repeat n shares its noise)."""
    mine = _per_repeat(results.get("product", {}).get(scenario), key)
    theirs = _per_repeat(results.get("baseline", {}).get(scenario), key)
    return [(a, b) for a, b in zip(mine, theirs, strict=False) if a and b]


def _paired_median(results: Results, scenario: str, key: str) -> float | None:
    ratios = [a / b for a, b in _pairs(results, scenario, key)]
    return statistics.median(ratios) if ratios else None


def baseline_text(results: Results) -> str:
    """product over baseline per repeat, with the median and range of the ratios."""
    if "baseline" not in results or "product" not in results:
        return ""
    lines = []
    for scenario, key in (
        ("burst1k", "deliveries_per_s"),
        ("burst1k", "server_cpu_ns_per_delivery"),
        ("burst5k", "deliveries_per_s"),
        ("burst5k", "server_cpu_ns_per_delivery"),
        ("steady", "p50_ms"),
        ("steady", "p99_ms"),
    ):
        pairs = _pairs(results, scenario, key)
        if not pairs:
            continue
        ratios = [a / b for a, b in pairs]
        each = ", ".join(f"{_num(a, 1)}/{_num(b, 1)}" for a, b in pairs)
        lines.append(
            f"{scenario} {key} product/baseline per repeat: {each}; ratios "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}, "
            f"range {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return "\n".join(lines)


def headline(results: Results) -> dict[str, Any]:
    """The ratios issue 8 sets targets for (None where a side did not run)."""
    return {
        "burst1k_product_over_naive": _ratio(
            results, "product", "naive", "burst1k", "deliveries_per_s"
        ),
        "burst1k_product_over_floor": _ratio(
            results, "product", "floor", "burst1k", "deliveries_per_s"
        ),
        "burst5k_product_over_naive": _ratio(
            results, "product", "naive", "burst5k", "deliveries_per_s"
        ),
        "burst5k_product_over_floor": _ratio(
            results, "product", "floor", "burst5k", "deliveries_per_s"
        ),
        "burst1k_product_over_floor_unbatched": _ratio(
            results, "product", "floor-unbatched", "burst1k", "deliveries_per_s"
        ),
        "burst5k_product_over_floor_unbatched": _ratio(
            results, "product", "floor-unbatched", "burst5k", "deliveries_per_s"
        ),
        "connects_product_over_naive": _ratio(
            results, "product", "naive", "connect", "connects_per_s"
        ),
        # What the metrics cost: the product with them over the product without.
        "burst1k_product_over_product_nometrics": _ratio(
            results, "product", "product-nometrics", "burst1k", "deliveries_per_s"
        ),
        "burst5k_product_over_product_nometrics": _ratio(
            results, "product", "product-nometrics", "burst5k", "deliveries_per_s"
        ),
        "burst1k_cpu_per_delivery_product_over_product_nometrics": _ratio(
            results, "product", "product-nometrics", "burst1k", "server_cpu_ns_per_delivery"
        ),
        "burst5k_cpu_per_delivery_product_over_product_nometrics": _ratio(
            results, "product", "product-nometrics", "burst5k", "server_cpu_ns_per_delivery"
        ),
        "connects_product_over_product_nometrics": _ratio(
            results, "product", "product-nometrics", "connect", "connects_per_s"
        ),
        "p99_ms": {server: _get(results, server, "steady", "p99_ms") for server in results},
    }


def headline_text(ratios: dict[str, Any]) -> str:
    lines = []
    for key, value in ratios.items():
        if key == "p99_ms":
            parts = [f"{s} {_num(v, 1)}" for s, v in value.items()]
            lines.append(f"p99 latency (ms, steady): {', '.join(parts)}")
        elif value is not None:
            lines.append(f"{key}: {value:.2f}x")
    return "\n".join(lines)


def notes(results: Results) -> str:
    """Things a reader of the table must know: errors, closes, stalls, CPU use."""
    lines = []
    for server, scenarios in results.items():
        for scenario, entry in scenarios.items():
            if "skipped" in entry:
                continue
            if "error" in entry:
                lines.append(f"{server}/{scenario}: ERROR {entry['error']}")
                continue
            closed = entry.get("closed_by_server")
            if closed:
                lines.append(f"{server}/{scenario}: server closed sockets {closed}")
            if entry.get("listen_overflows"):
                lines.append(
                    f"{server}/{scenario}: {entry['listen_overflows']} SYNs dropped on a full "
                    f"listen backlog (retried after 1 s; handshake p99 "
                    f"{_num(entry['handshake']['p99_ms'])} ms)"
                )
            if entry.get("failed_handshakes"):
                lines.append(f"{server}/{scenario}: failed handshakes {entry['failed_handshakes']}")
            if entry.get("dropped"):
                lines.append(f"{server}/{scenario}: {entry['dropped']} connections dropped")
            if entry.get("reordered"):
                lines.append(f"{server}/{scenario}: {entry['reordered']} deliveries out of order")
            outcomes = [r["outcome"] for r in entry.get("rounds", [])] or [entry.get("outcome")]
            if any(o not in (None, "complete") for o in outcomes):
                lines.append(
                    f"{server}/{scenario}: {', '.join(map(str, outcomes))} (missing = lost)"
                )
            rounds = entry.get("rounds")
            cpu = rounds[0]["cpu_percent"] if rounds else entry.get("cpu_percent")
            if cpu:
                text = ", ".join(f"{role} {pct:.0f}%" for role, pct in cpu.items())
                if rounds:
                    text += f"; burst latency p50 {_num(rounds[0]['p50_ms'], 1)} ms"
                lines.append(f"{server}/{scenario}: CPU (% of a core): {text}")
                if cpu.get("others", 0) > 25:
                    lines.append(f"{server}/{scenario}: WARNING other processes were busy; noisy")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(data), indent=2) + "\n")
