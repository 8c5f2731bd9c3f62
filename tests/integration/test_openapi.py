"""The OpenAPI document is true: schemathesis draws requests from a live server's own
``/openapi.json`` and checks every answer against it (a documented status, the documented content
type, a body that fits the schema, the documented headers) and that none is a 5xx.

The server is real, with a tiny text-generation engine ``gen`` serving, so an inference body
whose ``model`` is ``gen`` reaches a replica; half the drawn bodies are pointed at it. A second
engine asks for hardware this machine lacks, so it stays Provisioning and starts nothing; path
ids are pointed at it (or at ``gen``'s base deployment) half the time, so the management routes
meet a real object as well as unknown ones. Drawn engines ask for that hardware too, so the fuzzing
never starts replica processes of its own.

Bounded: a fixed number of examples per operation, a fixed seed, no shrinking; loopback only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st

from enginehouse.gateway.router import INFERENCE_ENDPOINTS
from tests.integration.harness import ServerProcess, wait_deployments
from tests.integration.test_textgen import create_engine

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40
PARKED = "gpu-h100-80gb"  # a deployment option this installation cannot provide
_SAMPLING_FIELDS = frozenset({
    "messages", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "n",
    "stop", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "ignore_eos",
    "logprobs", "top_logprobs", "echo", "stream",
})
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


@pytest.fixture(scope="module")
def real_objects(server: ServerProcess, tiny_llama_dir: Path) -> dict[str, str]:
    """Ids of objects that exist: the serving engine's base deployment and a parked engine."""
    http = server.client()
    gen = wait_deployments(http, create_engine(http, "gen", tiny_llama_dir)["id"])
    parked = create_engine(http, "parked", tiny_llama_dir, deployment_option=PARKED)
    return {"engine_id": parked["id"], "deployment_id": gen["deployments"][0]["id"], "model": "gen"}


def test_every_answer_is_what_the_document_says(server: ServerProcess, real_objects: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    auth = {"Authorization": f"Bearer {server.api_key}", "X-API-Key": server.api_key}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 28
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None,
                             deadline=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), real=st.booleans())
        def check(case: Any, real: bool) -> None:
            if real:
                _point_at(case, real_objects)
            _park(case)
            case.call_and_validate(headers=auth, checks=CHECKS, timeout=60)

        try:
            check()
        except Exception as exc:  # each operation's failure is reported, not just the first
            failures[label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())


def _point_at(case: Any, real: dict[str, str]) -> None:
    """Aim a drawn case at an object that exists."""
    for name in ("engine_id", "deployment_id"):
        # Deleting the parked engine would leave the other engine routes only unknown ids.
        if case.path_parameters and name in case.path_parameters and case.method.upper() != "DELETE":
            case.path_parameters[name] = real[name]
    if case.path in INFERENCE_ENDPOINTS and isinstance(case.body, dict):
        # Drawn bodies set so many fields that nearly every one meets some refusal (a field
        # OpenAI has and this server does not honour): these keep what steers generation.
        case.body = {k: v for k, v in case.body.items() if k in _SAMPLING_FIELDS}
        case.body["model"] = real["model"]
        if "messages" in case.body:
            case.body["messages"] = _plain_messages(case.body["messages"])


def _plain_messages(messages: Any) -> list[Any]:
    """The drawn messages a user or system could send without tool calls (the schema cannot say
    which roles carry which fields), or one short user message."""
    plain = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", "system")
             and not m.keys() & {"tool_calls", "tool_call_id", "function_call"}] if isinstance(messages, list) else []
    return plain or [{"role": "user", "content": "hello"}]


def _park(case: Any) -> None:
    """A drawn engine asks for hardware this machine lacks, so it never starts a replica."""
    if case.method.upper() != "POST" or not isinstance(case.body, dict):
        return
    if case.path == "/v1/engines":
        case.body["deployment_option"] = PARKED
    elif case.path == "/v1/deployments" and isinstance(case.body.get("engine"), dict):
        case.body["engine"]["deployment_option"] = PARKED


@pytest.mark.parametrize("settings", [
    {"temperature": 1e-30},
    {"temperature": 5e-324, "seed": 1},
    {"temperature": 1.0, "top_p": 1e-300},
    {"temperature": 0.5, "repetition_penalty": 1e-300},
    {"temperature": 2.0, "logit_bias": {"5": 100, "6": 100}, "frequency_penalty": -2.0},
])
def test_sampling_at_the_edges_still_answers(server: ServerProcess, real_objects: dict[str, str],
                                            settings: dict[str, Any]) -> None:
    body = {"model": real_objects["model"], "prompt": "the cat", "max_tokens": 4, **settings}
    response = server.client().post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
