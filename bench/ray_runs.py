"""Replicas on Ray against replicas on this machine (``python -m bench.ray_runs``).

On a Ray cluster of two nodes started on this machine (``ray start``, as the tests do), one real
server at a time (SQLite), first with the local provider, then with the Ray provider, each on the
benchmark's text-generation model:

- **Replica start**: an engine deactivated and reactivated ``--starts`` times, timed from the
  reactivate call until it is Active with its base deployment Deployed (the engine read every
  0.25 s): the provider's launch, the replica's process start and model load, its first health
  check. The median, local and Ray. Both replicas run as many torch threads as a node has CPUs.
- **Gateway cost**: ``--calls`` one-token completions, one at a time, alternating between the
  gateway and the replica's own address (with its secret): the gateway's p50 minus the
  replica's, for a local replica and for a Ray one.

Both sides run on the same cores, one thing at a time; the ratio (Ray over local) is what the
run is for. Results: a table on stdout, and ``ray.json`` / ``ray.md`` in ``--out-dir`` (a
temporary directory unless given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
import httpx

from bench.config import BenchConfig
from bench.models import build_base
from bench.runs import progress
from bench.server import BENCH_API_KEY, BenchServer, create_engine, deactivate, delete_engine, reactivate
from tests.integration.harness import wait_deployments
from tests.integration.ray_cluster import RAY_ENV, local_ray_cluster

NODE_CPUS = 2  # each node of the cluster (tests/integration/ray_cluster.py)
PROMPT = "the cat sat on the"


@dataclass(frozen=True)
class ProviderResults:
    provider: str
    start_s: list[float]  # each reactivation, seconds to Active with the base deployment Deployed
    gateway_ms: list[float]  # each call through the gateway
    direct_ms: list[float]  # each call to the replica itself

    @property
    def start_median_s(self) -> float:
        return statistics.median(self.start_s)

    @property
    def gateway_added_ms(self) -> float:
        return statistics.median(self.gateway_ms) - statistics.median(self.direct_ms)


def measure(provider: str, settings: dict[str, str], base: Path, data_dir: Path, starts: int,
            calls: int) -> ProviderResults:
    server = BenchServer(data_dir, api_key=BENCH_API_KEY, settings=settings)
    progress(f"{provider}: starting enginehouse (log: {server.log_path})")
    server.start()
    try:
        with server.client() as http:
            engine = create_engine(server, http, f"bench-{provider}", base, runtime_options={}, timeout=600)
            start_s = []
            for attempt in range(starts):
                deactivate(http, engine.id)
                started = time.monotonic()
                reactivate(http, engine.id)
                wait_deployments(http, engine.id, timeout=600)
                start_s.append(round(time.monotonic() - started, 2))
                progress(f"{provider}: start {attempt + 1}/{starts}: {start_s[-1]:.2f} s")
            engine_now = http.get(f"/v1/engines/{engine.id}").json()
            [replica] = [r for r in engine_now["replicas"] if r["status"] == "ready"]
            address = server.replica_address(replica["id"])
            gateway_ms, direct_ms = _latencies(server, address.url, dict(address.headers()), engine.name, calls)
            progress(f"{provider}: gateway p50 {statistics.median(gateway_ms):.2f} ms, "
                     f"replica p50 {statistics.median(direct_ms):.2f} ms")
            delete_engine(http, replace(engine, replica_id=replica["id"]))  # reactivations made new replicas
    finally:
        server.stop()
    return ProviderResults(provider, start_s, gateway_ms, direct_ms)


def _latencies(server: BenchServer, replica_url: str, secret: dict[str, str], model: str,
               calls: int) -> tuple[list[float], list[float]]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    gateway, direct = [], []
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as through, \
            httpx.Client(base_url=replica_url, headers=secret, timeout=60) as straight:
        for client, times in ((through, gateway), (straight, direct)):  # warm both connections
            for _ in range(5):
                client.post("/v1/completions", json=body).raise_for_status()
        for _ in range(calls):  # alternating, so drift hits both alike
            for client, times in ((through, gateway), (straight, direct)):
                started = time.perf_counter()
                client.post("/v1/completions", json=body).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
    return gateway, direct


def report(results: list[ProviderResults], model: str) -> str:
    local, ray = results
    lines = [
        f"Replicas on Ray (a two-node cluster on this machine) against local replicas; model: {model}.",
        "",
        "| provider | replica start, median s | starts | gateway p50 ms | replica p50 ms | gateway adds ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.provider} | {r.start_median_s:.2f} | {len(r.start_s)} | "
                     f"{statistics.median(r.gateway_ms):.2f} | {statistics.median(r.direct_ms):.2f} | "
                     f"{r.gateway_added_ms:.2f} |")
    lines += ["", f"Ray over local: replica start {ray.start_median_s / local.start_median_s:.2f}×, "
                  f"gateway's added latency {ray.gateway_added_ms - local.gateway_added_ms:+.2f} ms."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="reactivations timed per provider")
    parser.add_argument("--calls", type=int, default=100, help="calls timed each way per provider")
    parser.add_argument("--out-dir", type=Path, help="where ray.json and ray.md go")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="enginehouse-bench-ray-"))
    out_dir = args.out_dir or work
    cfg = BenchConfig()
    progress(f"building the model in {work}")
    base = build_base(work / "base", cfg.model)
    results = []
    # Both with the same torch threads: a Ray replica's actor reserves that many CPUs of its node
    # (two, a whole node here) and runs that many; the local one would take every core by default.
    threads = {"ENGINEHOUSE_REPLICA_THREADS": str(NODE_CPUS)}
    with local_ray_cluster() as cluster:
        for provider, settings in (("local", threads), ("ray", {**threads, "ENGINEHOUSE_PROVIDER": "ray",
                                                                 "ENGINEHOUSE_RAY_ADDRESS": cluster.address,
                                                                 **RAY_ENV})):
            results.append(measure(provider, settings, base, work / provider, args.starts, args.calls))
    model = f"the benchmark's Llama (hidden {cfg.model.hidden_size}, {cfg.model.num_layers} layers)"
    table = report(results, model)
    print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ray.md").write_text(table)
    (out_dir / "ray.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    progress(f"wrote {out_dir / 'ray.json'} and {out_dir / 'ray.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
