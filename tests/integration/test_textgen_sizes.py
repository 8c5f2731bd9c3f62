"""Greedy completions through a real server equal PEFT's at the benchmark sweep's model sizes,
base model and adapter alike. The two smaller shapes are served here; the larger ones cost tens
of seconds a replica, so they are checked in-process only (tests/unit/bench/test_sweep_equality.py),
where the same engine serves them."""

from __future__ import annotations


import openai
import pytest

from bench.config import SWEEP_SHAPES
from bench.models import AdapterShape, ModelShape, build_adapters, build_base
from tests.integration.harness import ServerProcess, wait_deployments, wait_for
from tests.integration.reference import greedy_completion
from tests.integration.test_textgen import create_engine, deploy, register_job

PROMPT = "the cat sat on the"
TOKENS = 4


@pytest.fixture(scope="module")
def database_url() -> str:
    """SQLite only: what is checked here is the serving path, not the database."""
    return ""


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


def _shape_id(shape: ModelShape) -> str:
    return f"h{shape.hidden_size}-l{shape.num_layers}"


@pytest.mark.parametrize("shape", SWEEP_SHAPES[:2], ids=_shape_id)
def test_greedy_completion_equals_peft_at_sweep_size(server: ServerProcess, shape: ModelShape,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp(_shape_id(shape))
    base = build_base(root / "base", shape)
    adapter = build_adapters(base, root / "adapters", 1, AdapterShape())[0]
    http = server.client()
    name = f"size-{_shape_id(shape)}"
    job = register_job(http, base, [adapter], name=name)
    engine = create_engine(http, name, base)
    try:
        deploy(http, engine["id"], f"{name}-ft", job["id"], 1)
        wait_deployments(http, engine["id"])
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
        for model, adapter_dir in ((name, None), (f"{name}-ft", adapter)):
            reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0)
            assert reply.choices[0].text == greedy_completion(base, adapter_dir, PROMPT, TOKENS), model
    finally:
        # Gone before the next size starts (even after a failure), so two replicas never share the cores.
        assert http.delete(f"/v1/engines/{engine['id']}").status_code == 202
        wait_for(lambda: http.get(f"/v1/engines/{engine['id']}").status_code == 404, timeout=60,
                 what="the engine to be gone")
