"""The OpenAI parameters beyond the basics, end to end: a real server and replica, called through
the official openai client and the lm-evaluation-harness.

Log-probabilities are compared with the tiny model's own logits computed here with transformers
(and PEFT for the adapter); constrained answers must parse and fit their schema whatever the seed.
The database plays no part in any of this, so the module runs on the embedded SQLite only.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import torch
from transformers import AutoTokenizer

from tests.integration.harness import ServerProcess, wait_deployments
from tests.reference_models import reference_model
from tests.integration.test_textgen import create_engine, deploy, register_job

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def database_url() -> str:
    return ""


class Setup:
    def __init__(self, server: ServerProcess, engine: dict[str, Any], base_dir: Path, adapter_dir: Path) -> None:
        self.server = server
        self.engine = engine
        self.base_dir = base_dir
        self.adapter_dir = adapter_dir
        self.http = server.client()
        self.openai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)

    def directory(self, model: str) -> Path | None:
        return self.adapter_dir if model == "p-ft" else None


@pytest.fixture(scope="module")
def setup(start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> Setup:  # type: ignore[no-untyped-def]
    server = start_server()
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    engine = create_engine(http, "p", tiny_llama_dir)
    deploy(http, engine["id"], "p-ft", job["id"], 1)
    engine = wait_deployments(http, engine["id"])
    return Setup(server, engine, tiny_llama_dir, tiny_adapter_dirs[0])


def _log_softmax(setup: Setup, model: str, ids: list[int]) -> torch.Tensor:
    """``[len(ids), vocab]``: the log-probabilities of each position's next token."""
    directory = setup.directory(model)
    with torch.inference_mode():
        logits = reference_model(setup.base_dir, directory)(torch.tensor([ids])).logits
    return torch.log_softmax(logits[0].float(), dim=-1)


def _greedy(setup: Setup, model: str, ids: list[int], steps: int) -> list[int]:
    """``ids`` followed by ``steps`` greedy tokens of the reference model."""
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(_log_softmax(setup, model, ids)[-1].argmax()))
    return ids


def _tokenizer(setup: Setup) -> Any:
    return AutoTokenizer.from_pretrained(str(setup.base_dir))


@pytest.mark.parametrize("model", ["p", "p-ft"])
def test_completion_logprobs_and_echo_equal_the_models_own(setup: Setup, model: str) -> None:
    tokenizer = _tokenizer(setup)
    prompt_ids = tokenizer(PROMPT).input_ids
    # Other requests, to the other deployment, share the batch while this one runs.
    other = "p-ft" if model == "p" else "p"
    with ThreadPoolExecutor(4) as pool:
        noise = [pool.submit(setup.openai.completions.create, model=other, prompt=PROMPT, max_tokens=8)
                 for _ in range(3)]
        reply = setup.openai.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0,
                                                logprobs=3, echo=True, extra_body={"ignore_eos": True})
        assert all(f.result().choices for f in noise)
    choice = reply.choices[0]
    assert choice.text.startswith(PROMPT)
    logprobs = choice.logprobs
    assert logprobs is not None
    assert len(logprobs.tokens) == len(prompt_ids) + 6
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    ids = _greedy(setup, model, prompt_ids, 6)
    reference = _log_softmax(setup, model, ids)
    for position in range(1, len(ids)):
        expected = float(reference[position - 1, ids[position]])
        assert logprobs.token_logprobs[position] == pytest.approx(expected, abs=1e-4)
        top = logprobs.top_logprobs[position]
        best = torch.topk(reference[position - 1], 3).values.tolist()
        # Keyed by the token's text, so tokens showing the same text (parts of one character)
        # share an entry; every entry is one of the three best or the chosen token's own.
        assert max(top.values()) == pytest.approx(best[0], abs=1e-4)
        for value in top.values():
            assert min(abs(value - v) for v in [*best, expected]) < 1e-4
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_echo_with_no_tokens_is_the_likelihood_query(setup: Setup) -> None:
    prompt_ids = _tokenizer(setup)(PROMPT).input_ids
    reply = setup.http.post("/v1/completions", json={"model": "p", "prompt": prompt_ids, "max_tokens": 0,
                                                     "echo": True, "logprobs": 0}).json()
    choice = reply["choices"][0]
    assert reply["usage"]["completion_tokens"] == 0 and choice["finish_reason"] == "length"
    reference = _log_softmax(setup, "p", prompt_ids)
    expected = [None] + [float(reference[i - 1, prompt_ids[i]]) for i in range(1, len(prompt_ids))]
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(expected[1:], abs=1e-4)
    assert choice["logprobs"]["token_logprobs"][0] is None


@pytest.mark.parametrize("model", ["p", "p-ft"])
def test_chat_logprobs_streamed_or_not(setup: Setup, model: str) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    reply = setup.openai.chat.completions.create(model=model, messages=messages, max_tokens=6,  # type: ignore[arg-type]
                                                 temperature=0, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    # Together the tokens' bytes are the answer, even where a token holds part of a character.
    joined = b"".join(bytes(e.bytes or []) for e in content)
    assert content and joined.decode(errors="replace") == reply.choices[0].message.content
    tokenizer = _tokenizer(setup)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = _greedy(setup, model, prompt_ids, len(content))
    reference = _log_softmax(setup, model, ids)
    for step, entry in enumerate(content):
        row = reference[len(prompt_ids) - 1 + step]
        assert entry.logprob == pytest.approx(float(row[ids[len(prompt_ids) + step]]), abs=1e-4)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(torch.topk(row, 2).values.tolist(), abs=1e-4)
        assert bytes(entry.bytes or []).decode(errors="replace") == entry.token
    stream = setup.openai.chat.completions.create(model=model, messages=messages, max_tokens=6,  # type: ignore[arg-type]
                                                  temperature=0, logprobs=True, top_logprobs=2, stream=True)
    streamed = [e for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content
                for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def _lm_eval_tasks(root: Path) -> Path:
    questions = [
        {"question": "The engine serves", "choices": [" many adapters.", " the weather.", " tokens one by one."],
         "answer": 0},
        {"question": "Hello, world! How are", "choices": [" you today?", " the adapters?"], "answer": 0},
        {"question": "Numbers like 42, 3.14", "choices": [" and 1000 appear too.", " are rare."], "answer": 1},
    ]
    (root / "mc.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (root / "gen.jsonl").write_text("".join(json.dumps({"question": q["question"], "answer": "x"}) + "\n"
                                            for q in questions))
    (root / "eh_mc.yaml").write_text(
        "task: eh_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'mc.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        'target_delimiter: ""\nmetric_list:\n  - metric: acc\n'
    )
    (root / "eh_gen.yaml").write_text(
        "task: eh_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'gen.jsonl'}\ntest_split: test\noutput_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return root


def test_lm_evaluation_harness_runs_against_a_deployment(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("OPENAI_API_KEY", setup.server.api_key)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = _lm_eval_tasks(tmp_path)
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": "p-ft", "base_url": f"{setup.server.url}/v1/completions",
                    "tokenizer_backend": "huggingface", "tokenizer": str(setup.base_dir), "max_length": 256,
                    "max_retries": 1},
        tasks=["eh_mc", "eh_gen"],
        task_manager=TaskManager(include_path=str(tasks)),
        log_samples=True,
    )
    assert results is not None
    tokenizer = _tokenizer(setup)
    samples = results["samples"]["eh_mc"]
    assert len(samples) == 3
    for sample in samples:
        doc = sample["doc"]
        # As the harness encodes a pair: context and context + continuation, no special tokens.
        context = tokenizer(doc["question"], add_special_tokens=False).input_ids
        for choice, response in zip(doc["choices"], sample["resps"]):
            continuation = tokenizer(doc["question"] + choice, add_special_tokens=False).input_ids[len(context):]
            reference = _log_softmax(setup, "p-ft", context + continuation)
            expected = sum(float(reference[len(context) - 1 + i, token]) for i, token in enumerate(continuation))
            assert response[0][0] == pytest.approx(expected, abs=1e-3)
    generations = results["samples"]["eh_gen"]
    assert len(generations) == 3
    for sample in generations:
        prompt = tokenizer(sample["doc"]["question"], add_special_tokens=False).input_ids
        direct = setup.openai.completions.create(model="p-ft", prompt=prompt, max_tokens=6, temperature=0,
                                                 stop=["\n\n"]).choices[0].text
        assert sample["resps"][0][0] == direct


SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 9},
                   "sunny": {"type": "boolean"}},
    "required": ["city", "days", "sunny"],
    "additionalProperties": False,
}


def test_json_schema_answers_always_fit(setup: Setup) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}

    def ask(seed: int) -> str:
        reply = setup.openai.chat.completions.create(
            model="p-ft" if seed % 2 else "p", messages=[{"role": "user", "content": "weather?"}],
            response_format=response_format, temperature=1.0, seed=seed, max_tokens=80,  # type: ignore[arg-type]
        )
        assert reply.choices[0].finish_reason == "stop"
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(12)))
    for answer in answers:
        jsonschema.validate(json.loads(answer), SCHEMA)
    json_object = setup.openai.chat.completions.create(
        model="p", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"},
        temperature=0, max_tokens=200,
    )
    if json_object.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(json_object.choices[0].message.content or ""), dict)


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "today's weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "the time now"}},
]


def test_required_tool_choice_always_calls_a_tool(setup: Setup) -> None:
    for seed in range(6):
        reply = setup.openai.chat.completions.create(
            model="p", messages=[{"role": "user", "content": "weather in Rome?"}], tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required", parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=95,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls or []
        assert call.type == "function" and call.function.name in {"get_weather", "get_time"}
        arguments = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            jsonschema.validate(arguments, SCHEMA)
        else:
            assert arguments == {}
    named = setup.openai.chat.completions.create(
        model="p-ft", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=80,
        stream=True,
    )
    chunks = list(named)
    calls = [call for chunk in chunks for c in chunk.choices for call in (c.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments), SCHEMA)  # type: ignore[union-attr,arg-type]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_call_in_the_answer_comes_back_as_a_call(setup: Setup) -> None:
    # A conversation holding an earlier call and its result goes through the chat template (the
    # tiny model's renders both the Hermes way); the tiny model writes noise, so its answer is
    # content, or tool_calls if the noise happens to form a call, never an error.
    messages = [
        {"role": "user", "content": "weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    reply = setup.openai.chat.completions.create(model="p", messages=messages, tools=TOOLS[1:],  # type: ignore[arg-type]
                                                 temperature=0, max_tokens=20)
    choice = reply.choices[0]
    assert choice.finish_reason in {"stop", "length", "tool_calls"}
    assert choice.message.content is not None or choice.message.tool_calls


def test_penalties_and_bias_through_the_api(setup: Setup) -> None:
    plain = setup.openai.completions.create(model="p", prompt="Hello", max_tokens=24, temperature=0,
                                            extra_body={"ignore_eos": True}).choices[0].text
    penalised = setup.openai.completions.create(model="p", prompt="Hello", max_tokens=24, temperature=0,
                                                frequency_penalty=2.0, extra_body={"ignore_eos": True})
    assert penalised.choices[0].text != plain
    token = _tokenizer(setup)(plain, add_special_tokens=False).input_ids[0]
    biased = setup.openai.completions.create(model="p", prompt="Hello", max_tokens=4, temperature=0,
                                             logit_bias={str(token): -100})
    assert not biased.choices[0].text.startswith(plain[:2])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "p", "prompt": "x", "stream": "false"}, "stream"),
        ({"model": "p", "prompt": "x", "presence_penalty": 50}, "presence_penalty"),
        ({"model": "p", "prompt": "x", "suffix": "!"}, "suffix"),
        ({"model": "p", "prompt": "x", "whatever": 1}, "whatever"),
        ({"model": "p", "prompt": "x", "logit_bias": {"99999": 1}}, "logit_bias"),
        ({"model": "p", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        ({"model": "p", "messages": [{"role": "user", "content": "x"}],
          "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "strin"}}}},
         "response_format"),
    ],
)
def test_parameters_it_cannot_honour_are_named(setup: Setup, body: dict[str, Any], param: str) -> None:
    endpoint = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    response = setup.http.post(endpoint, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["param"] == param


def test_a_huge_prompt_is_refused_without_harming_others(setup: Setup) -> None:
    replica = setup.http.get(f"/v1/engines/{setup.engine['id']}").json()["replicas"][0]["id"]
    huge = "word " * 2_000_000  # 10 MB
    with ThreadPoolExecutor(2) as pool:
        refused = pool.submit(setup.http.post, "/v1/completions", json={"model": "p", "prompt": huge})
        answers = []
        while not refused.done() or len(answers) < 3:
            reply = setup.openai.completions.create(model="p-ft", prompt=PROMPT, max_tokens=4, temperature=0,
                                                    timeout=30)
            answers.append(reply.choices[0].text)
        response = refused.result()
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert len(set(answers)) == 1
    engine = setup.http.get(f"/v1/engines/{setup.engine['id']}").json()
    assert [r["id"] for r in engine["replicas"]] == [replica]
    assert {d["status"] for d in engine["deployments"]} == {"Deployed"}
    chat = httpx.post(f"{setup.server.url}/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {setup.server.api_key}"},
                      json={"model": "p", "messages": [{"role": "user", "content": huge}]})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
