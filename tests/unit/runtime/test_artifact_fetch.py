"""A replica fetching the server's files (``runtime/artifacts.py``) from a peer that misbehaves on
purpose: a transfer cut short is retried, content that never matches its digest is refused and
never kept, a manifest naming a path outside the tree is refused, and what was fetched once is
reused from the node's cache. The peer speaks the server's two routes (tested against the real
server in tests/unit/api/test_replica_artifacts.py and, end to end, on Ray)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from enginehouse.replicaauth import SECRET_HEADER
from enginehouse.runtime.artifacts import ATTEMPTS, ArtifactFetcher, ArtifactFetchError
from tests.integration.harness import free_port

SOURCE = "/srv/models/tiny"
FILES = {"config.json": b'{"model_type": "llama"}', "weights/model.safetensors": bytes(range(256)) * 64}
SECRET = "replica-secret"


class Peer:
    """The server's artifact routes over real HTTP, with faults: ``truncate_first`` cuts each
    file's first transfer in half, ``tamper`` flips a byte of every transfer, ``names`` replaces
    the manifest's file names."""

    def __init__(self) -> None:
        self.files = dict(FILES)
        self.truncate_first = False
        self.tamper = False
        self.names: list[str] | None = None
        self.preparing = 0  # manifest requests answered "still reading" before the manifest
        self.preparing_files = 0  # likewise each file's first requests (a server that has not read it)
        self.manifests = 0
        self.routes = "/v1/replica-artifacts"  # a training job's are its own
        self.fetches: Counter[str] = Counter()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                url = urlsplit(self.path)
                if self.headers.get(SECRET_HEADER) != SECRET or parse_qs(url.query).get("path") != [SOURCE]:
                    return self._send(401, b"{}")
                if not url.path.startswith(f"{peer.routes}/"):
                    return self._send(404, b"{}")
                if url.path == f"{peer.routes}/manifest":
                    peer.manifests += 1
                    if peer.manifests <= peer.preparing:
                        error = {"message": f"still reading ({peer.manifests})", "code": "artifact_preparing"}
                        return self._send(503, json.dumps({"error": error}).encode(), {"Retry-After": "0"})
                    return self._send(200, json.dumps({"files": peer.manifest()}).encode())
                digest = url.path.rsplit("/", 1)[-1]
                name = next(n for n, c in peer.files.items() if hashlib.sha256(c).hexdigest() == digest)
                peer.fetches[name] += 1
                if peer.fetches[name] <= peer.preparing_files:
                    error = {"message": f"still reading {name} ({peer.fetches[name]})", "code": "artifact_preparing"}
                    return self._send(503, json.dumps({"error": error}).encode(), {"Retry-After": "0"})
                content = peer.files[name]
                if peer.tamper:
                    content = bytes([content[0] ^ 1]) + content[1:]
                if peer.truncate_first and peer.fetches[name] == 1:
                    content = content[: len(content) // 2]
                return self._send(200, content)

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def manifest(self) -> list[dict[str, Any]]:
        entries = [{"name": n, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()} for n, c in self.files.items()]
        for entry, name in zip(entries, self.names or [], strict=False):
            entry["name"] = name
        return entries


@pytest.fixture
def peer() -> Iterator[Peer]:
    served = Peer()
    yield served
    served.server.shutdown()
    served.server.server_close()


def fetcher(peer: Peer, cache: Path, mode: str = "always") -> ArtifactFetcher:
    return ArtifactFetcher(peer.url, SECRET, cache, mode)  # type: ignore[arg-type]


def test_a_directory_is_fetched_checked_and_then_reused_from_the_cache(peer: Peer, tmp_path: Path) -> None:
    tree = Path(fetcher(peer, tmp_path / "cache").resolve(SOURCE))
    assert {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()
            and p.name != ".complete"} == FILES
    assert set(peer.fetches.values()) == {1}
    # Another replica on the node, or this one restarted: nothing is fetched again.
    assert fetcher(peer, tmp_path / "cache").resolve(SOURCE) == str(tree)
    assert set(peer.fetches.values()) == {1}


def test_a_manifest_still_being_read_is_asked_for_again(peer: Peer, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    peer.preparing = 2
    with caplog.at_level(logging.INFO, logger="enginehouse.runtime.artifacts"):
        tree = Path(fetcher(peer, tmp_path / "cache").resolve(SOURCE))
    assert (tree / "config.json").read_bytes() == FILES["config.json"]
    assert peer.manifests == 3
    assert "still reading (2)" in caplog.text  # the server's progress reaches the replica's log


@pytest.mark.parametrize("asked", ["manifest", "files"])
def test_a_directory_still_being_read_past_the_wait_may_be_tried_again(peer: Peer, tmp_path: Path,
                                                                        asked: str) -> None:
    if asked == "manifest":
        peer.preparing = 1000
    else:  # the manifest came whole (another server behind the same address, say); its files not yet
        peer.preparing_files = 1000
    impatient = ArtifactFetcher(peer.url, SECRET, tmp_path / "cache", "always", prepare_wait_s=0.3)
    with pytest.raises(ArtifactFetchError) as failed:
        impatient.resolve(SOURCE)
    assert not failed.value.permanent and "still reading" in str(failed.value)
    asked_for = peer.manifests if asked == "manifest" else peer.fetches["config.json"]
    assert 1 < asked_for < 1000
    assert asked == "files" or not peer.fetches


def test_a_file_still_being_read_is_asked_for_again_without_using_up_its_attempts(
        peer: Peer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    peer.preparing_files = ATTEMPTS + 2
    with caplog.at_level(logging.INFO, logger="enginehouse.runtime.artifacts"):
        tree = Path(fetcher(peer, tmp_path / "cache").resolve(SOURCE))
    assert (tree / "weights" / "model.safetensors").read_bytes() == FILES["weights/model.safetensors"]
    assert set(peer.fetches.values()) == {ATTEMPTS + 3}
    assert f"still reading config.json ({ATTEMPTS + 2})" in caplog.text


def test_a_transfer_cut_short_is_fetched_again(peer: Peer, tmp_path: Path) -> None:
    peer.truncate_first = True
    tree = Path(fetcher(peer, tmp_path / "cache").resolve(SOURCE))
    assert (tree / "weights" / "model.safetensors").read_bytes() == FILES["weights/model.safetensors"]
    assert set(peer.fetches.values()) == {2}


def test_content_that_never_matches_its_digest_is_refused_and_not_kept(peer: Peer, tmp_path: Path) -> None:
    peer.tamper = True
    with pytest.raises(ArtifactFetchError) as refused:
        fetcher(peer, tmp_path / "cache").resolve(SOURCE)
    assert refused.value.permanent and f"refused after {ATTEMPTS} attempts" in str(refused.value)
    assert "tampered" in str(refused.value)
    assert sum(peer.fetches.values()) == ATTEMPTS  # the first file was never accepted
    assert not list((tmp_path / "cache").rglob("*.safetensors")) and not (tmp_path / "cache" / "trees").exists()
    assert [p.name for p in (tmp_path / "cache" / "blobs").iterdir()] == []  # no partial left either


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "a/../../b"])
def test_a_manifest_naming_a_path_outside_the_tree_is_refused(peer: Peer, tmp_path: Path, name: str) -> None:
    peer.names = [name]
    with pytest.raises(ArtifactFetchError, match="names"):
        fetcher(peer, tmp_path / "cache").resolve(SOURCE)
    assert not peer.fetches


def test_a_jobs_dataset_file_comes_through_its_own_routes(peer: Peer, tmp_path: Path) -> None:
    # A file is served as a tree of that one file, under its own name.
    peer.files = {"tiny": b'{"prompt": "a", "completion": "b"}\n'}
    peer.routes = "/v1/training-artifacts/tr-1"
    job = ArtifactFetcher(peer.url, SECRET, tmp_path / "cache", "always", routes=peer.routes)
    fetched = Path(job.resolve_file(SOURCE))
    assert fetched.name == "tiny" and fetched.read_bytes() == peer.files["tiny"]
    with pytest.raises(ArtifactFetchError, match="refused"):  # a replica's routes are not the job's
        fetcher(peer, tmp_path / "other-cache").resolve(SOURCE)
    visible = tmp_path / "ds.jsonl"
    visible.write_text("{}\n")
    assert ArtifactFetcher(peer.url, SECRET, tmp_path / "cache", "missing").resolve_file(str(visible)) == str(visible)


def test_what_the_node_sees_is_used_as_it_is(peer: Peer, tmp_path: Path) -> None:
    visible = tmp_path / "visible"
    visible.mkdir()
    missing_mode = fetcher(peer, tmp_path / "cache", mode="missing")
    assert missing_mode.resolve(str(visible)) == str(visible)
    assert missing_mode.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert fetcher(peer, tmp_path / "cache").resolve("org/model") == "org/model"  # a Hub id, even in always
    assert not peer.fetches


def test_an_unreachable_server_may_be_tried_again(tmp_path: Path) -> None:
    lost = ArtifactFetcher(f"http://127.0.0.1:{free_port()}", SECRET, tmp_path / "cache", "always", timeout_s=2)
    with pytest.raises(ArtifactFetchError) as failed:
        lost.resolve(SOURCE)
    assert not failed.value.permanent and "cannot reach the server" in str(failed.value)
