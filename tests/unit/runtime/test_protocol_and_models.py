"""The shared OpenAI request models, runtime options, and the tiny demo models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from transformers import AutoTokenizer

from enginehouse.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    describe_validation_error,
)
from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.options import RuntimeOptionsError, parse_runtime_options


def _refused(model: type, body: object) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return describe_validation_error(info.value)


def test_completion_request_to_sampling_params() -> None:
    request = CompletionRequest.model_validate({
        "model": "m", "prompt": "hi", "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0,
        "top_p": 0.5, "top_k": -1, "seed": 3, "stop": "x", "n": 2, "ignore_eos": True, "logit_bias": {"1": 2},
    })
    assert request.to_sampling_params() == SamplingParams(
        max_tokens=7, temperature=0.0, top_p=0.5, top_k=0, seed=3, stop=("x",), n=2, ignore_eos=True,
        logit_bias=((1, 2.0),),
    )
    assert request.to_sampling_params().greedy
    defaults = CompletionRequest.model_validate({"model": "m", "prompt": "hi"}).to_sampling_params()
    assert defaults == SamplingParams() and defaults.temperature == 1.0 and not defaults.greedy


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("hi", ["hi"]), (["a", "b"], ["a", "b"]), ([1, 2], [[1, 2]]), ([[1], [2, 3]], [[1], [2, 3]])],
)
def test_prompt_shapes(prompt: object, expected: list[object]) -> None:
    assert CompletionRequest.model_validate({"model": "m", "prompt": prompt}).prompts() == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": ["a", 1]}, "prompt"),
        ({"model": "m", "prompt": [-1]}, "prompt"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "temperature": 2.5}, "temperature"),
        ({"model": "m", "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": "m", "prompt": "x", "top_k": -2}, "top_k"),
        ({"model": "m", "prompt": "x", "n": 17}, "n"),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "prompt": "x", "stop": [""]}, "stop"),
        ({"model": "", "prompt": "x"}, "model"),
        ({"prompt": "x"}, "model"),
        # OpenAI's ranges, and vLLM's extensions' own
        ({"model": "m", "prompt": "x", "presence_penalty": 50}, "presence_penalty"),
        ({"model": "m", "prompt": "x", "frequency_penalty": -2.5}, "frequency_penalty"),
        ({"model": "m", "prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
        ({"model": "m", "prompt": "x", "min_p": 1.5}, "min_p"),
        ({"model": "m", "prompt": "x", "logprobs": 21}, "logprobs"),
        ({"model": "m", "prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "logit_bias": {"a": 1}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "min_tokens": 9, "max_tokens": 3}, "min_tokens"),
        ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        # types are not coerced: a string is not a boolean or a number
        ({"model": "m", "prompt": "x", "stream": "false"}, "stream"),
        ({"model": "m", "prompt": "x", "echo": 1}, "echo"),
        ({"model": "m", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        # parameters this server cannot honour, and ones OpenAI does not have
        ({"model": "m", "prompt": "x", "suffix": "end"}, "suffix"),
        ({"model": "m", "prompt": "x", "store": True}, "store"),
        ({"model": "m", "prompt": "x", "metadata": {"a": "b"}}, "metadata"),
        ({"model": "m", "prompt": "x", "frobnicate": 1}, "frobnicate"),
        ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "prompt": "x", "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_completion_validation_errors_name_the_field(body: dict, param: str) -> None:
    message, where = _refused(CompletionRequest, body)
    assert where == param and message


_CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"top_logprobs": 2}, "top_logprobs", "requires logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools"),
        ({"tools": _TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
         "not in tools"),
        ({"tools": _TOOLS * 2}, "tools", "unique"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name", "pattern"),
        ({"tools": _TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format",
         "cannot be combined"),
        ({"response_format": {"type": "json_object"}, "min_tokens": 2}, "min_tokens", "structured output"),
        ({"audio": {"voice": "alloy"}}, "audio", "not supported"),
        ({"functions": [{"name": "f"}]}, "functions", "use 'tools'"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "reasoning"),
        ({"modalities": ["text", "audio"]}, "modalities.1", "text"),
        ({"service_tier": "flex"}, "service_tier", "auto"),
        ({"echo": True}, "echo", "unrecognized"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages.0", "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}], "n": True}, "n", "integer"),
    ],
)
def test_chat_validation_errors_name_the_parameter(extra: dict, param: str, words: str) -> None:
    message, where = _refused(ChatCompletionRequest, {**_CHAT, **extra})
    assert where == param and words in message, message


def test_chat_parameters_become_sampling_params() -> None:
    request = ChatCompletionRequest.model_validate({
        **_CHAT, "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "repetition_penalty": 1.1, "min_p": 0.1, "min_tokens": 2, "logit_bias": {"7": -100, "3": 5},
        "user": "u-1", "service_tier": "auto", "store": False, "parallel_tool_calls": False, "tools": _TOOLS,
        "tool_choice": "none",
    })
    params = request.to_sampling_params()
    assert (params.logprobs, params.prompt_logprobs) == (3, None)
    assert params.logit_bias == ((3, 5.0), (7, -100.0))
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, -0.5, 1.1)
    assert (params.min_p, params.min_tokens, params.guide) == (0.1, 2, None)
    assert not request.offers_tools and request.template_tools() == _TOOLS
    schema = ChatCompletionRequest.model_validate({
        **_CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "integer"}}}
    }).to_sampling_params().guide
    assert schema is not None and schema.spec == '{"type":"integer"}'
    named = ChatCompletionRequest.model_validate({
        **_CHAT, "tools": _TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    })
    assert named.forces_tool_call and named.to_sampling_params().guide.spec == '{"type":"object"}'  # type: ignore[union-attr]
    echo = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2], "echo": True, "max_tokens": 0,
                                             "logprobs": 1})
    assert echo.to_sampling_params().prompt_logprobs == 1 and echo.to_sampling_params().max_tokens == 0


def test_chat_messages() -> None:
    request = ChatCompletionRequest.model_validate({
        "model": "m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None},
        ],
        "stream": True, "stream_options": {"include_usage": True},
    })
    assert [m.text() for m in request.messages] == ["s", "a\nb", ""]
    assert request.include_usage and not request.messages[1].has_images
    _, param = _refused(ChatCompletionRequest, {"model": "m", "messages": [{"role": "robot", "content": "x"}]})
    assert param == "messages.0.role"
    _refused(ChatCompletionRequest, {"model": "m", "messages": []})
    _refused(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]})


def test_runtime_options() -> None:
    options = parse_runtime_options('{"max_loras": 2, "dtype": "float32", "something_new": 1, "max_model_len": null}')
    assert options.max_loras == 2 and options.max_cpu_loras == 64 and options.max_model_len is None
    assert parse_runtime_options(None).max_batch_size == 32
    for raw, expected in [("[1]", "JSON object"), ("{", "not valid JSON"), ('{"dtype": "int8"}', "dtype"),
                          ('{"max_loras": 9, "max_cpu_loras": 4}', "at least max_loras")]:
        with pytest.raises(RuntimeOptionsError, match=expected):
            parse_runtime_options(raw)


def test_tiny_tokenizer_round_trips_and_has_a_chat_template(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    assert 800 <= len(tokenizer) <= 1100
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    text = "Any text 🙂 — even ünïcödé, tabs\tand\nnewlines."
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert rendered.startswith("<s>") and rendered.endswith("<|assistant|>\n") and "<|user|>\nu</s>" in rendered
