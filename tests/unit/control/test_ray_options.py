"""What the Ray provider asks of the cluster and offers from it, from Ray's own descriptions of
nodes (as ``ray.nodes()`` gives them). Placement, liveness and healing on a real cluster are in
tests/integration/test_ray_provider.py."""

from __future__ import annotations

from typing import Any

from enginehouse.core import options
from enginehouse.providers.ray_cluster import actor_resources, cluster_options, fits, ray_accelerator_type, ray_namespace


def _node(alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"Alive": alive, "Resources": resources}


def test_cpu_is_the_largest_alive_cpu_node() -> None:
    found = cluster_options([_node(CPU=4, memory=8e9), _node(CPU=16, memory=64e9), _node(False, CPU=64, memory=1e12)])
    assert [(o.name, o.kind, o.cpus, o.memory_gb) for o in found] == [("cpu", "cpu", 16, 64.0)]
    assert cluster_options([]) == cluster_options([_node(False, CPU=8)]) == []


def test_gpu_shapes_are_offered_where_a_node_has_their_accelerator_and_count() -> None:
    found = {o.name for o in cluster_options([
        _node(CPU=8, memory=32e9, GPU=2, **{"accelerator_type:H100": 1}),
        _node(CPU=8, memory=32e9, GPU=1, **{"accelerator_type:L4": 1}),
    ])}
    h100 = {s.name for s in options.CLOUD_GPU_SHAPES if s.accelerator == "NVIDIA H100" and s.accelerator_count <= 2}
    l4 = {s.name for s in options.CLOUD_GPU_SHAPES if s.accelerator == "NVIDIA L4"}
    assert found == {"cpu"} | h100 | l4
    assert "gpu-h100-80gb-x4" not in found  # no node has four


def test_an_actor_asks_for_its_options_gpus_or_the_replicas_threads() -> None:
    h100x2 = next(s for s in options.CLOUD_GPU_SHAPES if s.name == "gpu-h100-80gb-x2")
    assert actor_resources(h100x2, threads=4) == {"num_cpus": 1, "num_gpus": 2, "accelerator_type": "H100"}
    assert actor_resources(options.host_cpu(), threads=4) == {"num_cpus": 4}
    assert actor_resources(None, threads=0) == {"num_cpus": 1}
    assert ray_accelerator_type("NVIDIA A100") == "A100"


def test_a_node_fits_an_actor_with_the_cpus_gpus_and_accelerator_it_asks_for() -> None:
    node = {"CPU": 8.0, "GPU": 2.0, "accelerator_type:H100": 1.0}
    assert fits(node, {"num_cpus": 8}) and not fits(node, {"num_cpus": 9})
    assert fits(node, {"num_cpus": 1, "num_gpus": 2, "accelerator_type": "H100"})
    assert not fits(node, {"num_cpus": 1, "num_gpus": 4, "accelerator_type": "H100"})
    assert not fits(node, {"num_cpus": 1, "num_gpus": 1, "accelerator_type": "A100"})


def test_each_control_plane_has_a_namespace_of_its_own() -> None:
    pg = "postgresql+psycopg://enginehouse:{}@db:5432/prod?options=-csearch_path%3Dteam_a"
    assert ray_namespace(pg.format("one")) == ray_namespace(pg.format("two"))  # a new password, the same servers
    assert ray_namespace(pg.format("one")) != ray_namespace(pg.format("one").replace("team_a", "team_b"))
    assert ray_namespace("sqlite:////srv/a/enginehouse.db") != ray_namespace("sqlite:////srv/b/enginehouse.db")
    assert ray_namespace("sqlite:////srv/a/enginehouse.db").startswith("enginehouse-")
