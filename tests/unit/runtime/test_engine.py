"""The batching engine, stepped by hand: greedy output equals PEFT's token for token, whatever
the batch mix, arrival times, slot pressure or unloads around a request."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.runtime.support import PROMPTS, Harness

Reference = Callable[[Path | None, str, int], list[int]]


def _expect(reference: Reference, adapter_dir: Path | None, prompt: str, max_tokens: int) -> list[int]:
    return reference(adapter_dir, prompt, max_tokens)


def _loaded(make_harness: Callable[..., Harness], adapter_dirs: list[Path], **options: object) -> Harness:
    harness = make_harness(**options)
    for i, path in enumerate(adapter_dirs):
        harness.runner.load_adapter(f"ft{i}", str(path))
    return harness


def test_each_adapter_alone_equals_peft_and_differs_from_base(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs)
    outputs = {}
    for name, path in [(None, None), *((f"ft{i}", p) for i, p in enumerate(tiny_adapter_dirs))]:
        request = harness.request(PROMPTS[0], adapter=name, max_tokens=12)
        harness.submit(request)
        harness.run(request)
        tokens = harness.collector.tokens(request.request_id)
        assert tokens == _expect(peft_greedy, path, PROMPTS[0], 12), name
        outputs[name] = tuple(tokens)
    assert len(set(outputs.values())) == len(outputs)


def test_staggered_mixed_batch_equals_per_request_peft(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs)
    models = [None, "ft0", "ft1", "ft2"]
    dirs = {None: None, **{f"ft{i}": p for i, p in enumerate(tiny_adapter_dirs)}}
    jobs = [(m, p, 6 + 3 * (i % 4)) for i, (m, p) in enumerate((m, p) for p in PROMPTS for m in models)]
    requests = []
    for i, (model, prompt, max_tokens) in enumerate(jobs):
        request = harness.request(prompt, adapter=model, max_tokens=max_tokens)
        requests.append(request)
        harness.submit(request)
        for _ in range(i % 3):  # arrivals land between decode steps of the running batch
            harness.engine.step()
    harness.run(*requests)
    for (model, prompt, max_tokens), request in zip(jobs, requests):
        expected = _expect(peft_greedy, dirs[model], prompt, max_tokens)
        assert harness.collector.tokens(request.request_id) == expected, (model, prompt)


def test_small_batch_and_prefill_budget_still_exact(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs[:2], max_batch_size=2, max_prefill_tokens=16)
    jobs = [(None, PROMPTS[1]), ("ft0", PROMPTS[2]), ("ft1", PROMPTS[0]), ("ft0", PROMPTS[3]), (None, PROMPTS[2])]
    requests = [harness.request(p, adapter=m, max_tokens=8) for m, p in jobs]
    harness.submit(*requests)
    harness.engine.step()
    # The 16-token prefill budget admits one of these prompts per step.
    assert harness.engine.counts() == (1, 4)
    for _ in range(200):
        if not harness.engine.step():
            break
        assert harness.engine.counts()[0] <= 2
    dirs = {None: None, "ft0": tiny_adapter_dirs[0], "ft1": tiny_adapter_dirs[1]}
    for (model, prompt), request in zip(jobs, requests):
        assert harness.collector.tokens(request.request_id) == _expect(peft_greedy, dirs[model], prompt, 8)


def test_requests_wait_for_a_slot_without_blocking_others(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs[:2], max_loras=1, max_cpu_loras=1)
    first = harness.request(PROMPTS[0], adapter="ft0", max_tokens=10)
    blocked = harness.request(PROMPTS[1], adapter="ft1", max_tokens=6)
    base = harness.request(PROMPTS[2], max_tokens=4)
    harness.submit(first, blocked, base)
    harness.engine.step()
    running, waiting = harness.engine.counts()
    assert (running, waiting) == (2, 1)  # ft1 waits for the only slot; the base request runs
    harness.run(first, blocked, base)
    assert harness.collector.tokens(first.request_id) == _expect(peft_greedy, tiny_adapter_dirs[0], PROMPTS[0], 10)
    assert harness.collector.tokens(blocked.request_id) == _expect(peft_greedy, tiny_adapter_dirs[1], PROMPTS[1], 6)
    assert harness.collector.tokens(base.request_id) == _expect(peft_greedy, None, PROMPTS[2], 4)
    # ft0's weights left host memory (max_cpu_loras=1); it is read again on its next request.
    again = harness.request(PROMPTS[0], adapter="ft0", max_tokens=10)
    harness.submit(again)
    harness.run(again)
    assert harness.collector.tokens(again.request_id) == harness.collector.tokens(first.request_id)


def test_unloading_an_adapter_mid_request_disturbs_nobody(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs)
    doomed = harness.request(PROMPTS[0], adapter="ft1", max_tokens=16)
    other = harness.request(PROMPTS[1], adapter="ft2", max_tokens=16)
    harness.submit(doomed, other)
    for _ in range(4):
        harness.engine.step()
    assert harness.runner.unload_adapter("ft1")
    later = harness.request(PROMPTS[2], adapter="ft0", max_tokens=8)
    harness.submit(later)
    harness.run(doomed, other, later)
    assert harness.collector.tokens(doomed.request_id) == _expect(peft_greedy, tiny_adapter_dirs[1], PROMPTS[0], 16)
    assert harness.collector.tokens(other.request_id) == _expect(peft_greedy, tiny_adapter_dirs[2], PROMPTS[1], 16)
    assert harness.collector.tokens(later.request_id) == _expect(peft_greedy, tiny_adapter_dirs[0], PROMPTS[2], 8)
    assert harness.registry.get("ft1") is None


def test_alpha_pattern_adapter_equals_peft(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], peft_greedy: Reference, tmp_path: Path
) -> None:
    patterned = tmp_path / "patterned"
    shutil.copytree(tiny_adapter_dirs[0], patterned)
    config_path = patterned / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["alpha_pattern"] = {"v_proj": 64}
    config_path.write_text(json.dumps(config))
    harness = _loaded(make_harness, [patterned])
    request = harness.request(PROMPTS[1], adapter="ft0", max_tokens=10)
    harness.submit(request)
    harness.run(request)
    assert harness.collector.tokens(request.request_id) == _expect(peft_greedy, patterned, PROMPTS[1], 10)


def test_abort_frees_the_rows_and_others_go_on(
    make_harness: Callable[..., Harness], peft_greedy: Reference
) -> None:
    harness = make_harness()
    gone = harness.request(PROMPTS[0], max_tokens=30, n=2)
    stays = harness.request(PROMPTS[1], max_tokens=12)
    harness.submit(gone, stays)
    harness.engine.step()
    assert harness.engine.counts() == (3, 0)
    harness.engine.abort(gone.request_id)
    before = len(harness.collector.of(gone.request_id))
    harness.engine.step()
    assert harness.engine.counts()[0] == 1
    harness.run(stays)
    assert len(harness.collector.of(gone.request_id)) == before
    assert harness.collector.tokens(stays.request_id) == _expect(peft_greedy, None, PROMPTS[1], 12)


def test_eos_stops_unless_ignored(make_harness: Callable[..., Harness], peft_greedy: Reference) -> None:
    harness = make_harness()
    free = _expect(peft_greedy, None, PROMPTS[3], 10)
    # Pretend the 4th greedy token is the end-of-sequence token.
    eos = free[3]
    harness.engine.config = type(harness.engine.config)(
        max_batch_size=4, max_prefill_tokens=256, eos_token_ids=frozenset({eos}),
        vocab_size=harness.engine.config.vocab_size,
    )
    stopped = harness.request(PROMPTS[3], max_tokens=10)
    ignoring = harness.request(PROMPTS[3], max_tokens=10, ignore_eos=True)
    harness.submit(stopped, ignoring)
    harness.run(stopped, ignoring)
    assert harness.collector.tokens(stopped.request_id) == free[: free.index(eos) + 1]
    assert harness.collector.finish(stopped.request_id) == "stop"
    assert harness.collector.tokens(ignoring.request_id) == free
    assert harness.collector.finish(ignoring.request_id) == "length"
    last = harness.collector.of(stopped.request_id)[-1]
    assert last.completion_tokens == free.index(eos) + 1


def test_stop_strings_cut_the_text(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    full = harness.request(PROMPTS[0], max_tokens=20, ignore_eos=True)
    harness.submit(full)
    harness.run(full)
    text = harness.collector.text(full.request_id)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = harness.request(PROMPTS[0], max_tokens=20, ignore_eos=True, stop=(stop,))
    harness.submit(cut)
    harness.run(cut)
    assert harness.collector.text(cut.request_id) == text[: text.index(stop)]
    assert harness.collector.finish(cut.request_id) == "stop"


@pytest.mark.parametrize("adapter", [None, "ft0"])
def test_seeded_sampling_is_reproducible_and_choices_differ(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path], adapter: str | None
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs[:1])
    settings = {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "seed": 7, "n": 3, "max_tokens": 12}
    first = harness.request(PROMPTS[1], adapter=adapter, **settings)
    noise = harness.request(PROMPTS[2], adapter=adapter, temperature=1.0, max_tokens=12)
    harness.submit(first, noise)
    harness.run(first, noise)
    second = harness.request(PROMPTS[1], adapter=adapter, **settings)
    harness.submit(second)
    harness.run(second)
    texts = [tuple(harness.collector.tokens(first.request_id, i)) for i in range(3)]
    assert texts == [tuple(harness.collector.tokens(second.request_id, i)) for i in range(3)]
    assert len(set(texts)) > 1
    assert all(len(t) == 12 or harness.collector.finish(first.request_id, i) == "stop" for i, t in enumerate(texts))


def test_a_long_waiting_adapter_is_not_starved_by_others(
    make_harness: Callable[..., Harness], tiny_adapter_dirs: list[Path]
) -> None:
    harness = _loaded(make_harness, tiny_adapter_dirs[:2], max_loras=1)
    running = harness.request(PROMPTS[0], adapter="ft0", max_tokens=6)
    harness.submit(running)
    harness.engine.step()
    blocked = harness.request(PROMPTS[1], adapter="ft1", max_tokens=4)
    blocked.arrival -= 60  # it has waited for a slot far longer than the patience
    same_as_running = harness.request(PROMPTS[2], adapter="ft0", max_tokens=4)
    base = harness.request(PROMPTS[3], max_tokens=4)
    harness.submit(blocked, same_as_running, base)
    harness.engine.step()
    # ft0 could join its resident slot, but that would keep ft1 out indefinitely; base still runs.
    assert harness.collector.of(same_as_running.request_id) == []
    assert harness.collector.of(base.request_id)
    harness.run(running, blocked, same_as_running, base)
    events = harness.collector.events
    first = {e.request_id: events.index(e) for e in reversed(events)}
    assert first[blocked.request_id] < first[same_as_running.request_id]
