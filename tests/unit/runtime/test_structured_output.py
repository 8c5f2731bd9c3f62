"""Constrained decoding in the batching engine, and reading tool calls out of answers.

The tiny model's weights are random, so whatever it writes inside the constraint is arbitrary;
what must hold is that every constrained answer parses and fits its schema, whatever the seed,
while unconstrained rows of the same steps (other adapters, other settings) are untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from enginehouse.protocol.openai import ChatCompletionRequest
from enginehouse.protocol.sampling import Guide
from enginehouse.runtime.textgen.grammar import GrammarError
from enginehouse.runtime.textgen.sequence import GenerationRequest
from enginehouse.runtime.textgen.tool_calls import FORMATS, detect_format, forced_calls
from tests.unit.runtime.support import PROMPTS, Harness

Reference = Callable[[Path | None, str, int], list[int]]

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Rome", "Lima"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "metric": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 12},
    },
    "required": ["city", "days", "metric"],
    "additionalProperties": False,
}


def _constrained(harness: Harness, prompt: str, guide: Guide, adapter: str | None = None,
                 **params: object) -> GenerationRequest:
    request = harness.request(prompt, adapter=adapter, guide=guide, **params)
    grammar = harness.engine.chooser.grammar
    assert grammar is not None
    request.grammar = grammar.compile(guide)
    return request


def test_constrained_rows_fit_their_schema_in_a_mixed_batch(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = make_harness()
    for i, path in enumerate(tiny_adapter_dirs[:2]):
        harness.runner.load_adapter(f"ft{i}", str(path))
    guide = Guide("json_schema", json.dumps(SCHEMA))
    constrained = [
        _constrained(harness, PROMPTS[seed % 4], guide, adapter=[None, "ft0", "ft1"][seed % 3],
                     temperature=1.0, seed=seed, max_tokens=80, n=2)
        for seed in range(6)
    ]
    free = [harness.request(PROMPTS[1], adapter="ft0", max_tokens=10),
            harness.request(PROMPTS[2], max_tokens=10)]
    harness.submit(*constrained[:3], *free, *constrained[3:])
    harness.run(*constrained, *free)
    for request in constrained:
        for choice in range(2):
            text = harness.collector.text(request.request_id, choice)
            jsonschema.validate(json.loads(text), SCHEMA)
            assert harness.collector.finish(request.request_id, choice) == "stop"
    assert harness.collector.tokens(free[0].request_id) == peft_greedy(tiny_adapter_dirs[0], PROMPTS[1], 10)
    assert harness.collector.tokens(free[1].request_id) == peft_greedy(None, PROMPTS[2], 10)


def test_forced_tool_calls_always_name_a_tool_with_valid_arguments(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "ping"}},
    ]
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "required",
         "parallel_tool_calls": False}
    )
    guide = body.to_sampling_params().guide
    assert guide is not None
    requests = [_constrained(harness, PROMPTS[seed % 4], guide, temperature=1.0, seed=seed, max_tokens=120)
                for seed in range(8)]
    harness.submit(*requests)
    harness.run(*requests)
    for request in requests:
        calls = forced_calls(harness.collector.text(request.request_id), None)
        assert calls is not None and len(calls) == 1, harness.collector.text(request.request_id)
        for call in calls:
            assert call.function.name in {"get_weather", "ping"}
            if call.function.name == "get_weather":
                jsonschema.validate(json.loads(call.function.arguments), SCHEMA)


def test_schemas_the_engine_cannot_enforce_are_refused(make_harness: Callable[..., Harness]) -> None:
    grammar = make_harness().engine.chooser.grammar
    assert grammar is not None
    for schema in ({"type": "strin"}, {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}):
        with pytest.raises(GrammarError):
            grammar.compile(Guide("json_schema", json.dumps(schema)))


def test_hermes_calls_and_the_content_before_them() -> None:
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' \
           '<tool_call>{"name": "ping", "arguments": {}}</tool_call>'
    content, calls = FORMATS["hermes"].split(text)
    assert content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Rome"}), ("ping", {})]
    assert len({c.id for c in calls}) == 2
    # Broken JSON is no call: the text stays content.
    assert FORMATS["hermes"].split("<tool_call>{nope</tool_call>") == ("<tool_call>{nope</tool_call>", [])
    # A stream shows content up to the marker, holding back what could be its beginning.
    assert FORMATS["hermes"].content_before_calls("Sure <tool") == len("Sure ")
    assert FORMATS["hermes"].content_before_calls("Sure <tool_call>{") == len("Sure ")
    assert FORMATS["hermes"].content_before_calls("Sure thing") == len("Sure thing")


def test_mistral_and_llama3_calls() -> None:
    _, calls = FORMATS["mistral"].split('[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}]')
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("a", {"x": 1})]
    content, calls = FORMATS["llama3_json"].split(
        '<|python_tag|>{"name": "a", "parameters": {"q": "x; y"}}; {"name": "b", "parameters": {}}')
    assert content == "" and [c.function.name for c in calls] == ["a", "b"]
    assert json.loads(calls[0].function.arguments) == {"q": "x; y"}
    assert FORMATS["llama3_json"].split("Plain words.") == ("Plain words.", [])
    assert FORMATS["llama3_json"].content_before_calls("{") == 0
    assert FORMATS["llama3_json"].content_before_calls("Plain") == len("Plain")


def test_the_format_is_read_from_the_chat_template() -> None:
    assert detect_format("... <tool_call>\n{{ tool_call | tojson }} ...") is FORMATS["hermes"]
    assert detect_format("{{ '[TOOL_CALLS]' }}") is FORMATS["mistral"]
    assert detect_format("{{- '<|python_tag|>' }}") is FORMATS["llama3_json"]
    assert detect_format("{{ message['content'] }}") is None


def test_forced_answers_become_calls() -> None:
    assert forced_calls('{"city": "Lima"}', "get_weather")[0].function.name == "get_weather"  # type: ignore[index]
    calls = forced_calls('[{"name": "a", "parameters": {"x": 1}}, {"name": "b", "parameters": {}}]', None)
    assert calls is not None and [c.function.name for c in calls] == ["a", "b"]
    assert forced_calls('[{"name": "a", "param', None) is None
