"""Engine lifecycle (``--only lifecycle``): how long an engine takes to come back, and to grow.

- **Reactivation**: an engine holding many adapter deployments against a base-only engine on the
  same model and runtime options. Each is reactivated from Inactive and timed from the reactivate
  call until it is Active and every deployment is Deployed, by reading the engine every
  ``poll_s``. The two engines take turns and only one is up at a time, so they never compete for
  the cores; the medians are compared, since what a user waits for after a deactivation should
  not grow much with the adapters the engine holds.
- **Scale-up**: a cluster engine of one to two replicas gets a step load (streaming completions
  from clients in a closed loop, from nothing to ``scale_concurrency`` at once); timed from the
  load's start until the engine shows two ready replicas, and until the new one has a call in
  flight (it serves). Without a second replica within ``scale_bound_s`` the run is reported as
  not run, with why, and the rest of the benchmark goes on.

Everything runs on one server (SQLite), which deletes every engine it holds at the end, also
after an error.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.config import BenchConfig, LifecycleConfig, fixed_prompts
from bench.enginehouse_runs import streaming_body
from bench.load import LoadResult, run_streaming_load
from bench.machine import CpuMeter
from bench.models import build_adapters, build_base
from bench.runs import least_disturbed, progress, wait_for_quiet
from bench.server import (BenchServer, create_engine, deactivate, delete_every_engine, deploy_all, reactivate,
                          register_job, running_server)
from tests.integration.harness import replica_pids, wait_for

# Reactivation with the adapters over reactivation of the base model alone, medians: at most this.
REACTIVATION_RATIO_GOAL = 1.5
ADAPTERS_KEY, BASE_KEY = "reactivate_adapters", "reactivate_base"
# Seconds an engine may take to come back, or to go Inactive, before the part fails.
SETTLE_TIMEOUT_S = 300.0
# After the second replica is ready, seconds to wait for it to be given a call.
SERVING_GRACE_S = 15.0


@dataclass(frozen=True)
class Reactivation:
    """One reactivation, seconds from the reactivate call."""

    to_active_s: float
    to_deployed_s: float  # Active with every deployment Deployed
    others_cpu_share: float
    # Reactivations done for this sample: more than one when others disturbed the first.
    attempts: int = 1


@dataclass
class ReactivationSeries:
    description: str
    deployments: int  # the base one included
    samples: list[Reactivation] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values = [getattr(s, name) for s in self.samples]
        return round(statistics.median(values), 3) if values else None

    @property
    def others_cpu_share(self) -> float | None:
        return max((s.others_cpu_share for s in self.samples), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "deployments": self.deployments,
                "to_active_s_p50": self.median("to_active_s"), "to_deployed_s_p50": self.median("to_deployed_s"),
                "samples": [vars(s) for s in self.samples]}


@dataclass
class ScaleUp:
    description: str
    # The autoscaler's first decision for two replicas (its reason says what load it saw): the
    # part of the wait spent measuring load, before a replica starts.
    to_decision_s: float | None = None
    decision_reason: str | None = None
    to_ready_s: float | None = None  # two ready replicas
    to_serving_s: float | None = None  # and the new one with a call in flight
    error: str | None = None  # why there is no number
    requests: int = 0
    failed: int = 0
    first_error: str | None = None
    others_cpu_share: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class LifecycleResults:
    reactivation: dict[str, ReactivationSeries]
    scale_up: ScaleUp
    info: dict[str, str]

    @property
    def reactivation_ratio(self) -> float | None:
        """Time back to serving with the adapters over the base model's alone, medians."""
        top = self.reactivation[ADAPTERS_KEY].median("to_deployed_s")
        bottom = self.reactivation[BASE_KEY].median("to_deployed_s")
        return round(top / bottom, 3) if top is not None and bottom else None


def run_lifecycle(cfg: BenchConfig, work_dir: Path) -> LifecycleResults:
    lc = cfg.lifecycle
    progress(f"lifecycle: building the model and {lc.adapters} adapters in {work_dir}")
    base = build_base(work_dir / "base", cfg.model)
    adapters = build_adapters(base, work_dir / "adapters", lc.adapters, cfg.adapter)
    prompts = fixed_prompts(base, lc.scale_concurrency, cfg.prompt_tokens)
    with running_server(work_dir / "lifecycle-server") as server, server.client() as http:
        try:
            series = reactivations(cfg, server, http, base, adapters)
            # Alone on the cores: the reactivation engines are deleted first.
            delete_every_engine(server, http)
            scale_up = measure_scale_up(cfg, server, http, base, prompts)
        finally:
            delete_every_engine(server, http)
    return LifecycleResults(series, scale_up, describe(lc))


def reactivations(cfg: BenchConfig, server: BenchServer, http: httpx.Client, base: Path,
                  adapters: list[Path]) -> dict[str, ReactivationSeries]:
    lc = cfg.lifecycle
    options = {"max_loras": lc.max_loras, "max_cpu_loras": lc.max_cpu_loras}
    # The base-only engine first, then put to sleep, so the other is set up alone.
    progress("lifecycle: a base-only engine")
    plain = create_engine(server, http, "lc-base", base, options, timeout=SETTLE_TIMEOUT_S)
    deactivate(http, plain.id, SETTLE_TIMEOUT_S)
    progress(f"lifecycle: an engine with {lc.adapters} adapter deployments")
    loaded = create_engine(server, http, "lc-adapters", base, options, timeout=SETTLE_TIMEOUT_S)
    job_id = register_job(http, "lc-adapters", base, adapters)
    deploy_all(http, loaded, job_id, [f"lc-lora-{i:03d}" for i in range(lc.adapters)], timeout=SETTLE_TIMEOUT_S)
    deactivate(http, loaded.id, SETTLE_TIMEOUT_S)
    series = {
        ADAPTERS_KEY: ReactivationSeries(f"{lc.adapters} adapter deployments (max_loras {lc.max_loras}, "
                                         f"max_cpu_loras {lc.max_cpu_loras})", lc.adapters + 1),
        BASE_KEY: ReactivationSeries("base model only, the same runtime options", 1),
    }
    engine_ids = {ADAPTERS_KEY: loaded.id, BASE_KEY: plain.id}
    for round_ in range(lc.repeats):
        for key in (ADAPTERS_KEY, BASE_KEY):
            progress(f"lifecycle: ({key}) round {round_ + 1}")
            series[key].samples.append(sample_reactivation(cfg, server, http, engine_ids[key],
                                                           series[key].deployments))
    return series


def sample_reactivation(cfg: BenchConfig, server: BenchServer, http: httpx.Client, engine_id: str,
                        deployments: int) -> Reactivation:
    """One reactivation of an Inactive engine, left Inactive again. As ``measure`` does for a
    load, one that others disturbed is done again while patience allows, and the least disturbed
    is kept: on two cores a neighbour's burst stretches a replica's start by seconds."""
    def attempt(_number: int) -> Reactivation:
        wait_for(lambda: not replica_pids(server.data_dir), SETTLE_TIMEOUT_S, what="no replica running")
        wait_for_quiet(cfg.patience)
        sample = time_reactivation(http, engine_id, deployments, cfg.lifecycle.poll_s)
        deactivate(http, engine_id, SETTLE_TIMEOUT_S)
        progress(f"lifecycle: Active after {sample.to_active_s:.2f} s, every deployment Deployed after "
                 f"{sample.to_deployed_s:.2f} s, others' CPU {sample.others_cpu_share:.0%}")
        return sample

    best, attempts = least_disturbed(attempt, cfg.patience, "lifecycle: disturbed by other processes, "
                                                            "reactivating again")
    return replace(best, attempts=attempts)


def time_reactivation(http: httpx.Client, engine_id: str, deployments: int, poll_s: float) -> Reactivation:
    """Reactivate an Inactive engine and read it every ``poll_s`` until it serves everything; a
    time is when the answer that first showed it arrived (so it includes up to one poll late)."""
    meter = CpuMeter().start()
    start = time.perf_counter()
    reactivate(http, engine_id)
    to_active: float | None = None
    while True:
        engine = _engine(http, engine_id)
        elapsed = time.perf_counter() - start
        if engine["status"] == "Active":
            to_active = elapsed if to_active is None else to_active
            if _all_deployed(engine, deployments):
                return Reactivation(round(to_active, 3), round(elapsed, 3), round(meter.finish().others_share, 4))
        if elapsed > SETTLE_TIMEOUT_S:
            raise RuntimeError(f"engine {engine_id} not serving {SETTLE_TIMEOUT_S:.0f} s after reactivation: "
                               f"{engine['status']}, {_statuses(engine)}")
        time.sleep(poll_s)


def measure_scale_up(cfg: BenchConfig, server: BenchServer, http: httpx.Client, base: Path,
                     prompts: list[str]) -> ScaleUp:
    lc = cfg.lifecycle
    result = ScaleUp(f"step load of {lc.scale_concurrency} streams onto 1 replica (target {lc.scale_target} "
                     f"in flight per replica, max 2): until a second replica serves")
    autoscaling = {"min_replicas": 1, "max_replicas": 2, "metric": "concurrency", "target": lc.scale_target,
                   "upscale_delay_s": 0, "downscale_delay_s": 30}
    progress("lifecycle: a cluster engine of 1 to 2 replicas")
    engine = create_engine(server, http, "lc-scale", base, {}, timeout=SETTLE_TIMEOUT_S, autoscaling=autoscaling)
    wait_for_quiet(cfg.patience)
    bodies = [streaming_body(engine.name, prompts[i % len(prompts)], lc.scale_max_tokens) for i in range(100_000)]
    stop = threading.Event()
    loads: list[LoadResult] = []
    meter = CpuMeter().start()
    start = time.perf_counter()
    # The load runs in its own thread (its own event loop) while this one reads the engine.
    loader = threading.Thread(target=lambda: loads.append(
        run_streaming_load(server.url, bodies, lc.scale_concurrency, server.auth, stop.is_set)), daemon=True)
    loader.start()
    try:
        _watch_scale_up(http, engine.id, engine.replica_id, start, lc, result)
    finally:
        stop.set()
        loader.join(timeout=SETTLE_TIMEOUT_S)
    result.others_cpu_share = round(meter.finish().others_share, 4)
    records = loads[0].records if loads else []
    failed = [r.error for r in records if r.error]
    result.requests, result.failed = len(records), len(failed)
    result.first_error = failed[0] if failed else None
    progress(f"lifecycle: (scale_up) decided after {_seconds(result.to_decision_s)}, "
             f"two ready replicas after {_seconds(result.to_ready_s)}, the new one serving "
             f"after {_seconds(result.to_serving_s)}; {len(records)} requests ({len(failed)} failed)"
             + (f"; not run: {result.error}" if result.error else ""))
    return result


def _watch_scale_up(http: httpx.Client, engine_id: str, first_replica: str, start: float, lc: LifecycleConfig,
                    result: ScaleUp) -> None:
    """Read the engine every ``poll_s`` until a replica other than the first is ready and has a
    call in flight, filling in ``result``; the bounds leave an error there instead of raising."""
    while True:
        engine = _engine(http, engine_id)
        elapsed = time.perf_counter() - start
        decision = engine.get("autoscaler") or {}
        if result.to_decision_s is None and int(decision.get("replicas") or 0) >= 2:
            result.to_decision_s, result.decision_reason = round(elapsed, 3), decision.get("reason")
        ready = [r for r in engine["replicas"] if r["status"] == "ready"]
        new = [r for r in ready if r["id"] != first_replica]
        if len(ready) >= 2 and new and result.to_ready_s is None:
            result.to_ready_s = round(elapsed, 3)
        if result.to_ready_s is not None and any(r.get("in_flight", 0) > 0 for r in new):
            result.to_serving_s = round(elapsed, 3)
            return
        if result.to_ready_s is None and elapsed > lc.scale_bound_s:
            result.error = f"no scale-up within {lc.scale_bound_s:.0f} s"
            return
        if result.to_ready_s is not None and elapsed - result.to_ready_s > SERVING_GRACE_S:
            result.error = f"the second replica got no call within {SERVING_GRACE_S:.0f} s of being ready"
            return
        time.sleep(lc.poll_s)


def _engine(http: httpx.Client, engine_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/engines/{engine_id}")
    if response.status_code != 200:
        raise RuntimeError(f"GET engine {engine_id}: {response.status_code} {response.text[:300]}")
    engine: dict[str, Any] = response.json()
    if engine["status"] == "Failed":
        raise RuntimeError(f"engine {engine_id} failed: {engine['status_reason']}")
    return engine


def _all_deployed(engine: dict[str, Any], deployments: int) -> bool:
    statuses = [d["status"] for d in engine["deployments"]]
    if "Failed" in statuses:
        raise RuntimeError(f"a deployment failed on reactivation: {_statuses(engine)}")
    return len(statuses) == deployments and all(s == "Deployed" for s in statuses)


def _statuses(engine: dict[str, Any]) -> dict[str, int]:
    """How many deployments are in each status: what an error says about an engine."""
    counts: dict[str, int] = {}
    for deployment in engine["deployments"]:
        counts[deployment["status"]] = counts.get(deployment["status"], 0) + 1
    return counts


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def describe(lc: LifecycleConfig) -> dict[str, str]:
    return {
        "load": f"reactivation: {lc.repeats} of each engine, alternating, one engine up at a time, the engine read "
                f"every {lc.poll_s * 1000:.0f} ms; scale-up: {lc.scale_concurrency} streaming clients in a closed "
                f"loop, {lc.scale_max_tokens} output tokens per request (ignore_eos), from nothing at once",
    }


def as_json(results: LifecycleResults) -> dict[str, Any]:
    return {
        **results.info,
        "reactivation": {key: s.as_dict() for key, s in results.reactivation.items()},
        "reactivation_ratio": results.reactivation_ratio,
        "scale_up": results.scale_up.as_dict(),
    }
