"""Run the benchmark: ``python -m tests.bench [--servers ...] [--scenarios ...] [--quick]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from testproject.redis_server import RedisServer
from tests.servers import ROOT

from . import servers
from .handshakes import HANDSHAKE_SCENARIOS
from .measure import raise_open_files
from .profile import Profiler
from .report import (
    baseline_text,
    headline,
    headline_text,
    notes,
    table,
    targets,
    targets_text,
    write_json,
)
from .scenarios import FULL, QUICK, SCENARIO_ENV, Bench
from .scenarios import SCENARIOS as _DELIVERY
from .servers import SERVERS

SCENARIOS = {
    "connect": HANDSHAKE_SCENARIOS["connect"],
    "connect-user": HANDSHAKE_SCENARIOS["connect-user"],
    **_DELIVERY,
    "channels": HANDSHAKE_SCENARIOS["channels"],
    "storm": HANDSHAKE_SCENARIOS["storm"],
}

RESULTS = Path(__file__).resolve().parent / "results"
# Servers whose losses mean the harness itself is broken.
MUST_NOT_LOSE = ("floor", "floor-unbatched")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--servers",
        default=",".join(name for name in SERVERS if not name.startswith("product-")),
        help=f"comma-separated, from: {', '.join(SERVERS)} (default: all but the "
        "product-* variants)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--rounds", type=int, help="burst rounds per scenario (median is reported)")
    parser.add_argument("--payload", type=int, help="payload size in bytes (default 64)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        help="before each measured window, wait up to this many seconds for other processes "
        "to use < 15%% of a core (default 30, 0 with --quick)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record each measured window with py-spy (results/<run>-profiles/)",
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native as well")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if the product lost or duplicated a delivery",
    )
    parser.add_argument(
        "--daphne-backlog",
        type=int,
        default=4096,
        help="listen backlog for every daphne server (default 4096; 0: Twisted's 50)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        help="client processes for the handshake scenarios (default 2)",
    )
    parser.add_argument(
        "--daphne-connect-timeout",
        type=int,
        help="daphne --websocket_connect_timeout (seconds to finish a handshake; daphne's 5)",
    )
    parser.add_argument(
        "--product-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the product's rows (and baseline), e.g. WS4REDIS_MAX_HANDSHAKES=0 "
        "or WS4REDIS_LOG_LEVEL=INFO with BENCH_KEEP_LOGS=1 in the environment; repeatable",
    )
    parser.add_argument(
        "--storm-jitter",
        type=float,
        help="storm: each socket's first reconnect waits a random 0..N ms (default 0: at once)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the servers in turn this many times, each time afresh, and pool the burst "
        "rounds (servers compared under the same noise: e.g. product,product-nometrics)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (a git worktree with its own .venv from "
        "make install): adds the row 'baseline', the product served from there",
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON (default: results/)")
    args = parser.parse_args(argv)
    for item in args.product_env:
        if not item.partition("=")[0] or "=" not in item:
            parser.error(f"--product-env: NAME=VALUE, got {item!r}")
    if args.baseline is not None:
        try:
            SERVERS["baseline"] = servers.baseline_spec(args.baseline)
        except ValueError as exc:
            parser.error(f"--baseline: {exc}")
        if "baseline" not in args.servers.split(","):
            args.servers += ",baseline"
    args.servers = _choose(parser, args.servers, SERVERS, "server")
    args.scenarios = _choose(parser, args.scenarios, SCENARIOS, "scenario")
    return args


def _choose(parser: argparse.ArgumentParser, value: str, known: Any, kind: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    for name in chosen:
        if name not in known:
            parser.error(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return chosen


def _migrate(db_path: str) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TESTPROJECT_DB": db_path,
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def _new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), f"uvloop {metadata.version('uvloop')}"


def _git(where: Path = ROOT) -> dict[str, Any]:
    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


def _users(db_path: str, count: int) -> list[tuple[str, str]]:
    """Create ``count`` logged-in users with sessions in the bench database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TESTPROJECT_DB": db_path,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.users", str(count)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return [(name, key) for name, key in json.loads(done.stdout)]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("django", "channels", "channels-redis", "daphne", "redis", "twisted", "uvloop"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _summary(server: str, scenario: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{server}/{scenario}: ERROR {result['error']}"
    if "skipped" in result:
        return f"{server}/{scenario}: skipped ({result['skipped']})"
    keys = (
        "all_subscribed_s",
        "connects_per_s",
        "deliveries_per_s",
        "server_cpu_ns_per_delivery",
        "p99_ms",
        "kb_per_socket",
        "lost",
        "duplicated",
    )
    parts = []
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{key}={value:,.1f}" if isinstance(value, float) else f"{key}={value:,}")
    return f"{server}/{scenario}: {' '.join(parts)}"


def run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    if args.payload:
        sizes = dataclasses.replace(sizes, payload=args.payload)
    if args.wait_idle is not None:
        sizes = dataclasses.replace(sizes, wait_idle=args.wait_idle)
    if args.storm_jitter is not None:
        sizes = dataclasses.replace(sizes, storm_jitter_ms=args.storm_jitter)
    if args.clients:
        sizes = dataclasses.replace(sizes, clients=args.clients)
    open_files = raise_open_files(32768)
    servers.daphne_backlog = args.daphne_backlog
    servers.daphne_connect_timeout = args.daphne_connect_timeout
    servers.product_env.update(item.partition("=")[::2] for item in args.product_env)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profiler = None
    if args.profile or args.profile_native:
        profiler = Profiler(RESULTS / f"{stamp}-profiles", native=args.profile_native)
        if not profiler.available:
            print("py-spy not found: pip install py-spy (profiling skipped)", file=sys.stderr)
            profiler = None
    loop, loop_name = _new_loop()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    partial = RESULTS / f"{stamp}.partial.json"
    loadavg_at_start = os.getloadavg()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ws4redis-bench-") as tmp:
        db_path = os.path.join(tmp, "db.sqlite3")
        _migrate(db_path)
        users = None
        if {"connect-user", "channels"} & set(args.scenarios):
            users = _users(db_path, max(sizes.user_sockets, sizes.channels_sockets))
        with RedisServer() as redis_server:
            admin = redis.Redis(port=redis_server.port)
            for repeat in range(max(1, args.repeat)):
                for name in args.servers:
                    spec = SERVERS[name]
                    missing = spec.available()
                    if missing:
                        print(f"{name}: {missing}", flush=True)
                        skipped[name] = missing
                        continue
                    for scenario in args.scenarios:
                        admin.flushall()
                        result = _one(
                            loop, spec, scenario, redis_server, db_path, sizes, profiler, users
                        )
                        for each in result.get("rounds", []):
                            each["repeat"] = repeat
                        print(_summary(name, scenario, result), flush=True)
                        done = results.setdefault(name, {})
                        done[scenario] = _pool(done.get(scenario), result)
                    # What is done so far survives an interrupted run.
                    write_json(partial, {"started": stamp, "partial": True, "results": results})
            admin.close()
    loop.close()

    ratios = headline(results)
    print()
    print(table(results))
    print()
    print(headline_text(ratios))
    checked = targets(results)
    if targets_text(checked):
        print()
        print(targets_text(checked))
    if baseline_text(results):
        print()
        print(baseline_text(results))
    remarks = "\n".join([*(f"{n}: skipped, {why}" for n, why in skipped.items()), notes(results)])
    if remarks.strip():
        print()
        print(remarks)
    if profiler is not None and profiler.outputs:
        print(f"\nprofiles (collapsed stacks + .summary): {profiler.directory}")
    data = {
        "started": stamp,
        "seconds": time.monotonic() - began,
        "git": _git(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": loadavg_at_start,
            "loadavg_at_end": os.getloadavg(),
            "open_files_limit": open_files,
        },
        "client": {
            "processes": f"one; {sizes.clients} for connect, connect-user, channels, storm",
            "loop": loop_name,
        },
        "skipped": skipped,
        "versions": _versions(),
        "sizes": dataclasses.asdict(sizes),
        "daphne_backlog": args.daphne_backlog,
        "daphne_connect_timeout": args.daphne_connect_timeout,
        "product_env": dict(servers.product_env),
        "repeat": args.repeat,
        "servers": {name: SERVERS[name].description for name in args.servers},
        "baseline": (
            {"path": str(args.baseline), **_git(SERVERS["baseline"].cwd)} if args.baseline else None
        ),
        "headline": ratios,
        "targets": checked,
        "results": results,
    }
    path = args.json or RESULTS / f"{stamp}.json"
    write_json(path, data)
    partial.unlink(missing_ok=True)
    print(f"\nJSON: {path}")
    return _status(results, strict=args.strict)


def _pool(before: dict[str, Any] | None, result: dict[str, Any]) -> dict[str, Any]:
    """Join the burst rounds of a repeated scenario; other scenarios report the first run
    and keep every run under ``runs``."""
    if before is None:
        return result
    if "rounds" not in before or "rounds" not in result:
        return {**before, "runs": [*before.get("runs", [before]), result]}
    rounds = [*before["rounds"], *result["rounds"]]
    pooled = {**before, "rounds": rounds, "repeats": before.get("repeats", 1) + 1}
    pooled["deliveries_per_s"] = statistics.median(r["deliveries_per_s"] for r in rounds)
    pooled["server_cpu_ns_per_delivery"] = (
        sum(r["server_cpu_s"] for r in rounds) * 1e9 / max(1, sum(r["delivered"] for r in rounds))
    )
    for key in ("lost", "duplicated", "reordered"):
        pooled[key] = sum(r[key] for r in rounds)
    return pooled


def _one(
    loop: asyncio.AbstractEventLoop,
    spec: Any,
    scenario: str,
    redis_server: RedisServer,
    db_path: str,
    sizes: Any,
    profiler: Profiler | None,
    users: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Start the server afresh, run one scenario within its budget, stop the server."""
    try:
        running = spec.start(redis_server.url, db_path, SCENARIO_ENV.get(scenario))
    except Exception as exc:
        return {"error": f"server did not start: {exc}"}
    assert redis_server.process is not None
    bench = Bench(
        running, redis_server.port, redis_server.process.pid, sizes, profiler, users=users
    )
    result: dict[str, Any]
    try:
        result = loop.run_until_complete(asyncio.wait_for(SCENARIOS[scenario](bench), sizes.budget))
    except Exception as exc:
        kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else repr(exc)
        result = {"error": f"{kind} (budget {sizes.budget:.0f}s)" if kind == "timeout" else kind}
        bench.profile_stop()
    exited = running.exited()
    if exited:
        result["server_exited"] = exited
    if "error" in result or exited:
        result["log_tail"] = running.log_tail()
    running.stop()
    loop.run_until_complete(asyncio.sleep(0.1))  # let closed transports finish
    return result


def _status(results: dict[str, dict[str, dict[str, Any]]], *, strict: bool) -> int:
    status = 0
    for server, scenarios in results.items():
        for scenario, entry in scenarios.items():
            if "error" in entry and (server.startswith("product") or server in MUST_NOT_LOSE):
                print(f"FAILED: {server}/{scenario} did not complete", file=sys.stderr)
                status = 1
            losses = entry.get("lost", 0) + entry.get("duplicated", 0)
            if losses and (server in MUST_NOT_LOSE or (strict and server == "product")):
                print(f"FAILED: {server}/{scenario} lost or duplicated {losses}", file=sys.stderr)
                status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    return run(_parse(argv))


if __name__ == "__main__":
    raise SystemExit(main())
