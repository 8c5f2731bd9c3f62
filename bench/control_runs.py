"""The control plane at scale (``--only control``): management calls against a real server
holding many engines and deployments, on SQLite and on PostgreSQL.

For each database: seed it through the services layer (``bench/control_seed.py``), start
``enginehouse up`` on it, and time each kind of call one at a time from one client over a
kept-alive connection, as a script or the CLI would call. What a call costs here is the server's
own work (database, rows to JSON) plus HTTP on the loopback; the engines are Inactive, so no
replica runs and the reconciler only walks them.

Each database's part is ``measure_database``: a later measurement of the same server (the
reconciler's idle CPU with this many engines, say) is one more step there and one more field of
``DatabaseResults``. What the reconciler does is measured twice, on the seeded database and on
one seeded with fewer engines: its CPU while nothing changes, and what one change costs it (the
engine steps a deploy onto one engine causes, read from the server's own metrics, and the server's
CPU), which must not grow with the engines it holds.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.config import BenchConfig, ControlConfig
from bench.control_seed import Seeded, postgres_schema, seed
from bench.load import LoadResult, RequestRecord, StopCheck, one_at_a_time
from bench.machine import CpuMeter
from bench.runs import RunOutcome, measure, progress
from bench.server import BENCH_API_KEY, running_server
from bench.stats import summarize_calls

DATABASES = ("sqlite", "postgresql")
# The most of one core an idle server holding the seeded engines may use.
IDLE_CORE_SHARE_GOAL = 0.05
# Steps one change causes with the seeded engines ÷ with fewer: the same, up to noise.
CHANGE_STEPS_RATIO_GOAL = 1.25
# After a change, how long to wait before the next: past the reconciler's next read of the
# events table (2 s), which may step the engine once more.
CHANGE_SETTLE_S = 3.0
# p50 goals, in milliseconds, by kind of call; a kind not here is reported with no goal.
GOALS_MS = {
    "engines_page": 50.0,
    "deployments_page": 50.0,
    "deployments_next_page": 50.0,
    "events_page": 50.0,
    "models": 100.0,
    "engine": 10.0,
    "deployment": 10.0,
    "deploy": 10.0,
}


@dataclass(frozen=True)
class Call:
    key: str
    what: str
    # The n-th call's method, path and JSON body (n counts every call made, warm-ups included).
    request: Callable[[int], tuple[str, str, dict[str, Any] | None]]
    status: int = 200


@dataclass(frozen=True)
class ReconcilerCost:
    """What the reconciler costs on a server holding ``engines`` engines."""

    engines: int
    idle_core_share: float
    changes: int
    steps_per_change: float
    server_cpu_ms_per_change: float


@dataclass
class DatabaseResults:
    version: str
    seeded: Seeded
    calls: dict[str, RunOutcome] = field(default_factory=dict)
    # Bytes of each kind of call's answer.
    answer_bytes: dict[str, int] = field(default_factory=dict)
    # Share of one core the server used while nothing called it (the reconciler's own cost).
    idle_core_share: float | None = None
    # The reconciler's cost with the seeded engines, then with fewer.
    reconciler: list[ReconcilerCost] = field(default_factory=list)

    def change_steps_ratio(self) -> float | None:
        """Steps per change with the most engines ÷ with the fewest."""
        if len(self.reconciler) < 2 or not self.reconciler[-1].steps_per_change:
            return None
        return round(self.reconciler[0].steps_per_change / self.reconciler[-1].steps_per_change, 2)


@dataclass
class ControlResults:
    databases: dict[str, DatabaseResults]
    # Database → why it was not measured.
    skipped: dict[str, str]
    info: dict[str, str]


def run_control(cfg: BenchConfig, work_dir: Path, postgres_url: str | None) -> ControlResults:
    databases: dict[str, DatabaseResults] = {}
    skipped: dict[str, str] = {}
    for database in DATABASES:
        data_dir = work_dir / f"control-{database}"
        if database == "sqlite":
            databases[database] = measure_database(cfg, data_dir, f"sqlite:///{data_dir / 'enginehouse.db'}")
            fewer_dir = work_dir / f"control-{database}-fewer"
            databases[database].reconciler.append(
                measure_fewer(cfg, fewer_dir, f"sqlite:///{fewer_dir / 'enginehouse.db'}"))
        elif postgres_url:
            with postgres_schema(postgres_url) as url:
                databases[database] = measure_database(cfg, data_dir, url)
            with postgres_schema(postgres_url) as url:
                databases[database].reconciler.append(measure_fewer(cfg, work_dir / f"control-{database}-fewer", url))
        else:
            skipped[database] = "no PostgreSQL to run on (--postgres-url or ENGINEHOUSE_TEST_DATABASE_URL)"
            progress(f"control plane on {database}: skipped, {skipped[database]}")
    return ControlResults(databases, skipped, describe(cfg.control))


def measure_database(cfg: BenchConfig, data_dir: Path, database_url: str) -> DatabaseResults:
    database = database_url.split(":", 1)[0].split("+", 1)[0]
    progress(f"control plane on {database}: seeding {cfg.control.engines} engines × "
             f"{cfg.control.deployments_per_engine} deployments through the services")
    shutil.rmtree(data_dir, ignore_errors=True)  # a fresh database each run, also in a kept --work-dir
    data_dir.mkdir(parents=True)
    seeded = seed(database_url, BENCH_API_KEY, data_dir, cfg.control)
    results = DatabaseResults(_version(database_url), seeded)
    with running_server(data_dir, database_url) as server, server.client() as http:
        for call in calls(cfg.control, seeded):
            key = f"{database}_{call.key}"
            results.answer_bytes[call.key] = _warm_up(http, call, cfg.control.warmup)
            load = _timed(http, call, cfg.control.samples)
            results.calls[call.key] = measure(key, f"{database}: {call.what}", load, cfg.patience,
                                              summarize_calls)
        results.idle_core_share = idle_core_share(cfg.control.idle_s)
        progress(f"control plane on {database}: idle server used {results.idle_core_share:.1%} of a core")
        results.reconciler.append(reconciler_cost(cfg.control, http, seeded, results.idle_core_share, database))
    return results


def measure_fewer(cfg: BenchConfig, data_dir: Path, database_url: str) -> ReconcilerCost:
    """The reconciler's cost on a server holding ``fewer_engines`` engines."""
    database = database_url.split(":", 1)[0].split("+", 1)[0]
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    seeded = seed(database_url, BENCH_API_KEY, data_dir, cfg.control, cfg.control.fewer_engines)
    with running_server(data_dir, database_url) as server, server.client() as http:
        idle = idle_core_share(cfg.control.idle_s)
        progress(f"control plane on {database}, {cfg.control.fewer_engines} engines: idle server used "
                 f"{idle:.1%} of a core")
        return reconciler_cost(cfg.control, http, seeded, idle, database)


def reconciler_cost(cfg: ControlConfig, http: httpx.Client, seeded: Seeded, idle: float, database: str
                    ) -> ReconcilerCost:
    """Deploy a fine-tune onto one engine at a time, ``cfg.changes`` times, each left to settle:
    the engine steps that caused (the server's own counter) and the server's CPU, per change."""
    before = reconciler_steps(http)  # read outside the CPU window: a scrape walks every engine
    meter = CpuMeter().start()
    for n in range(cfg.changes):
        engine = seeded.engine_ids[(len(seeded.engine_ids) // 2 + n) % len(seeded.engine_ids)]
        body = {"name": f"bench-change-{n:03d}", "training_id": seeded.training_id, "checkpoint": 1}
        response = http.post(f"/v1/engines/{engine}/deploy", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"a change failed: HTTP {response.status_code}: {response.text[:300]}")
        time.sleep(CHANGE_SETTLE_S)
    report = meter.finish()
    steps = reconciler_steps(http) - before
    cost = ReconcilerCost(len(seeded.engine_ids), idle, cfg.changes, round(steps / cfg.changes, 2),
                          round(report.by_role.get("server", 0.0) * 1000 / cfg.changes, 1))
    progress(f"control plane on {database}, {cost.engines} engines: one change cost {cost.steps_per_change} "
             f"engine steps and {cost.server_cpu_ms_per_change} ms of server CPU")
    return cost


def reconciler_steps(http: httpx.Client) -> float:
    """Engine steps the server's reconciler has run, whatever their cause (``GET /metrics``)."""
    response = http.get("/metrics")
    response.raise_for_status()
    return sum(float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
               if line.startswith("enginehouse_reconciler_steps_total{"))


def idle_core_share(seconds: float) -> float:
    """The server's CPU over ``seconds`` in which nobody calls it, as a share of one core: what
    the reconciler costs holding this many engines when nothing changes."""
    meter = CpuMeter().start()
    time.sleep(seconds)
    report = meter.finish()
    return round(report.by_role.get("server", 0.0) / seconds, 4)


def calls(cfg: ControlConfig, seeded: Seeded) -> list[Call]:
    """The calls timed, in order; ids are taken from the middle of the data, not its edges."""
    engine = seeded.engine_ids[len(seeded.engine_ids) // 2]
    deployment = seeded.deployment_ids[len(seeded.deployment_ids) // 2]
    per = cfg.deployments_per_engine

    def get(path: str) -> Callable[[int], tuple[str, str, None]]:
        return lambda _n: ("GET", path, None)

    def deploy(n: int) -> tuple[str, str, dict[str, Any]]:
        body = {"name": f"bench-deploy-{n:05d}", "training_id": seeded.training_id, "checkpoint": 1}
        return "POST", f"/v1/engines/{engine}/deploy", body

    return [
        Call("engines_page", f"GET /v1/engines: the first page, {min(cfg.engines, 100)} engines with their "
             f"{min(cfg.engines, 100) * per:,} deployments inline", get("/v1/engines")),
        Call("deployments_page", "GET /v1/deployments: the first page (100)", get("/v1/deployments")),
        Call("deployments_next_page", "GET /v1/deployments?after=: a page from the middle (100)",
             get(f"/v1/deployments?after={deployment}")),
        Call("deployments_page_1000", "GET /v1/deployments?limit=1000: the largest page",
             get("/v1/deployments?limit=1000")),
        Call("events_page", f"GET /v1/engines/{{id}}/events: the first page (100 of ~{per + 4})",
             get(f"/v1/engines/{engine}/events")),
        Call("models", f"GET /v1/models: every callable deployment ({seeded.deployments:,}) at once",
             get("/v1/models")),
        Call("engine", f"GET /v1/engines/{{id}}: one engine, {per} deployments inline",
             get(f"/v1/engines/{engine}")),
        Call("deployment", "GET /v1/deployments/{id}", get(f"/v1/deployments/{deployment}")),
        # Last: it adds deployments to the engine the calls above read.
        Call("deploy", "POST /v1/engines/{id}/deploy: a fine-tune onto an Inactive engine", deploy, 201),
    ]


_counter = itertools.count()


def _call_once(http: httpx.Client, call: Call) -> tuple[RequestRecord, int]:
    method, path, body = call.request(next(_counter))
    record = RequestRecord(sent=time.perf_counter())
    size = 0
    try:
        response = http.request(method, path, json=body)
        size = len(response.content)
        if response.status_code != call.status:
            record.error = f"HTTP {response.status_code}: {response.text[:300]}"
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.done = time.perf_counter()
    return record, size


def _warm_up(http: httpx.Client, call: Call, count: int) -> int:
    """Calls not timed (first connections, caches, the database's pages); the answer's size."""
    size = 0
    for _ in range(max(count, 1)):
        record, size = _call_once(http, call)
        if record.error:
            raise RuntimeError(f"{call.key}: {record.error}")
    return size


def _timed(http: httpx.Client, call: Call, count: int) -> Callable[[StopCheck | None], LoadResult]:
    return one_at_a_time(list(range(count)), lambda _item: [_call_once(http, call)[0]])


def _version(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version}"
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return f"PostgreSQL {connection.execute(text('SHOW server_version')).scalar()}"
    finally:
        engine.dispose()


def describe(cfg: ControlConfig) -> dict[str, str]:
    return {
        "load": f"{cfg.engines} Inactive engines × {cfg.deployments_per_engine} deployments (the base one "
                f"included), each asleep on a schedule whose window opens in 12 h, seeded through the "
                f"services; one client, one call at a time over a kept-alive "
                f"connection, {cfg.samples} timed calls of each kind after {cfg.warmup} not timed",
    }


def as_json(results: ControlResults) -> dict[str, Any]:
    return {
        **results.info,
        "skipped": results.skipped,
        "databases": {
            name: {
                "version": db.version,
                "seeded": {"engines": len(db.seeded.engine_ids), "deployments": db.seeded.deployments,
                           "events": db.seeded.events, "seconds": db.seeded.seconds},
                "answer_bytes": db.answer_bytes,
                "idle_core_share": db.idle_core_share,
                "reconciler": [asdict(cost) for cost in db.reconciler],
                "change_steps_ratio": db.change_steps_ratio(),
                "calls": {key: run.as_dict() for key, run in db.calls.items()},
            }
            for name, db in results.databases.items()
        },
    }
