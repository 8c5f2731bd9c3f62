"""The server's digests of the files it serves as artifacts (``enginehouse.artifacts.DigestCache``):
each file is read once while it stays the same, a changed one is read again alone, a directory
asked for by many callers at once is read by one reader, and a directory that cannot be read
says so and is read afresh on the next request."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from pathlib import Path

import pytest

from enginehouse import artifacts
from enginehouse.artifacts import ArtifactError, ArtifactPreparing, DigestCache
from tests.unit.api.test_replica_artifacts import _model


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The names of the files read for their digests, counted."""
    counted: Counter[str] = Counter()
    read = artifacts.file_digest

    def counting(path: Path, progress=None) -> str:  # type: ignore[no-untyped-def]
        counted[path.name] += 1
        return read(path, progress)

    monkeypatch.setattr(artifacts, "file_digest", counting)
    return counted


def test_each_file_is_read_once_until_it_changes(tmp_path: Path, reads: Counter[str]) -> None:
    model = _model(tmp_path / "model", {"config.json": b"{}", "weights/a.safetensors": b"w" * 4096})
    cache = DigestCache(wait_s=30)
    first = cache.manifest(model)
    assert [(f.name, f.size, f.sha256) for f in first] == [
        ("config.json", 2, hashlib.sha256(b"{}").hexdigest()),
        ("weights/a.safetensors", 4096, hashlib.sha256(b"w" * 4096).hexdigest())]
    assert cache.manifest(model) == first and reads == {"config.json": 1, "a.safetensors": 1}
    (model / "config.json").write_bytes(b'{"changed": true}')
    changed = cache.manifest(model)
    assert changed[0].sha256 == hashlib.sha256(b'{"changed": true}').hexdigest() and changed[1] == first[1]
    assert reads == {"config.json": 2, "a.safetensors": 1}


def test_callers_asking_at_once_share_one_reading(tmp_path: Path, reads: Counter[str]) -> None:
    model = _model(tmp_path / "model", {"config.json": b"{}"})
    with open(model / "model.safetensors", "wb") as handle:  # sparse: 64 MB to read, nothing on disk
        handle.truncate(64 * 2**20)
    cache = DigestCache(wait_s=0)
    with pytest.raises(ArtifactPreparing) as preparing:
        cache.manifest(model)
    assert preparing.value.total_bytes == 64 * 2**20 + 2 and "GB read" in str(preparing.value)
    cache.wait_s = 30
    answers: list[list[artifacts.ArtifactFile]] = []
    callers = [threading.Thread(target=lambda: answers.append(cache.manifest(model))) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(answers) == 4 and all(answer == answers[0] for answer in answers)
    assert reads == {"config.json": 1, "model.safetensors": 1}


def test_a_reading_that_fails_is_an_error_and_the_next_request_reads_afresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path / "model", {"config.json": b"{}"})
    read = artifacts.file_digest
    failures = [OSError(5, "Input/output error")]  # a disk that fails once

    def failing_once(path: Path, progress=None) -> str:  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return read(path, progress)

    monkeypatch.setattr(artifacts, "file_digest", failing_once)
    cache = DigestCache(wait_s=30)
    with pytest.raises(ArtifactError, match="cannot be read: Input/output error"):
        cache.manifest(model)
    assert cache.manifest(model)[0].sha256 == hashlib.sha256(b"{}").hexdigest()


def test_a_path_that_is_neither_directory_nor_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="neither a directory nor a file"):
        DigestCache().manifest(tmp_path / "missing")
