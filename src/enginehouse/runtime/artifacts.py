"""A replica's side of artifacts that travel (``enginehouse.artifacts``): the model and checkpoint
directories its node cannot see are fetched from the server into a cache on the node. A
fine-tuning job on a Ray node fetches its base model, datasets and checkpoints the same way
(``providers/ray_training_actor.py``), through routes of its own.

- **Content-addressed.** Each file is kept once, as ``blobs/<sha256>``, whichever directory named
  it; a directory is assembled as ``trees/<digest of its manifest>/`` (hard links to the blobs),
  so replicas on the node and restarts reuse what is there, and a changed checkpoint is a new tree.
- **Checked, never trusted.** A file is written under a temporary name, its size and sha256
  checked against the manifest, and only then renamed into place: a truncated or corrupt transfer
  is retried (``ATTEMPTS`` times), and never loaded.
- **Patient with a large first read.** The server reads a directory for its digests once; while
  a large one is read it answers 503 ``artifact_preparing`` with its progress (for the manifest,
  or for a file asked of a server that has not read its directory yet), and the fetcher logs that
  and asks again, for up to ``prepare_wait_s``.
- **Used directly when visible.** In ``missing`` mode a path the node can see (a shared
  filesystem) and a Hub id are left as they are; ``always`` fetches every server path.

Configured by the provider through the replica's environment (``ARTIFACT_URL_ENV`` ...); without
it, paths are used as they are (the local provider's replicas see the server's disk).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from enginehouse.core.model_names import looks_like_local_path
from enginehouse.reconciler.replica_client import error_message
from enginehouse.replicaauth import SECRET_HEADER

log = logging.getLogger(__name__)

ARTIFACT_URL_ENV = "ENGINEHOUSE_ARTIFACT_URL"
ARTIFACT_FETCH_ENV = "ENGINEHOUSE_ARTIFACT_FETCH"
ARTIFACT_CACHE_ENV = "ENGINEHOUSE_ARTIFACT_CACHE"
FetchMode = Literal["missing", "always"]
ATTEMPTS = 3
REPLICA_ROUTES = "/v1/replica-artifacts"
# How long a fetcher waits for the server's first reading of a large directory (the control
# plane's start timeout for a replica, ``replica_start_timeout_s``, may end it sooner).
PREPARE_WAIT_S = 3600.0
_CHUNK = 1024 * 1024
_COMPLETE = ".complete"


class ArtifactFetchError(Exception):
    """A directory that could not be fetched. ``permanent`` when trying again cannot help (the
    server refuses, or what it sends never matches its own digest)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class ArtifactFetcher:
    server_url: str
    secret: str
    cache_dir: Path
    mode: FetchMode = "missing"
    timeout_s: float = 60.0
    prepare_wait_s: float = PREPARE_WAIT_S
    # The server's routes for this caller: a replica's, or a training job's (``/v1/training-artifacts/<id>``).
    routes: str = REPLICA_ROUTES

    @classmethod
    def from_environment(cls, secret: str | None) -> ArtifactFetcher | None:
        """The fetcher the provider configured, or None (paths are used as they are)."""
        url = os.environ.get(ARTIFACT_URL_ENV, "")
        if not url or not secret:
            return None
        mode = os.environ.get(ARTIFACT_FETCH_ENV, "missing")
        return cls(url.rstrip("/"), secret, node_cache_dir(), "always" if mode == "always" else "missing")

    def resolve(self, source: str) -> str:
        """Where to load ``source`` from on this node: itself, or the cached copy of the server's."""
        if not looks_like_local_path(source):
            return source  # a Hub id: the node downloads it itself
        if self.mode == "missing" and Path(source).exists():
            return source
        with httpx.Client(base_url=self.server_url, headers={SECRET_HEADER: self.secret},
                          timeout=self.timeout_s) as client:
            files = self._manifest(client, source)
            tree = self.cache_dir / "trees" / _manifest_digest(files)
            if (tree / _COMPLETE).exists():
                log.info("%s: using the cached copy %s", source, tree)
                return str(tree)
            for entry in files:
                self._blob(client, source, entry)
        return str(self._assemble(tree, files))

    def resolve_file(self, source: str) -> str:
        """``resolve`` for one file (a dataset): the server sends it as a tree of that one file."""
        resolved = self.resolve(source)
        return resolved if resolved == source else str(Path(resolved) / Path(source).name)

    def _manifest(self, client: httpx.Client, source: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.prepare_wait_s
        while True:
            try:
                answer = client.get(f"{self.routes}/manifest", params={"path": source})
            except httpx.HTTPError as exc:
                raise ArtifactFetchError(f"cannot reach the server at {self.server_url} to fetch {source}: {exc}",
                                         permanent=False) from None
            if not (_still_preparing(answer) and time.monotonic() < deadline):
                break
            log.info("%s: %s", source, error_message(answer))
            time.sleep(_retry_after(answer))
        if answer.status_code != 200:
            raise ArtifactFetchError(f"the server refused {source}: {error_message(answer)}",
                                     permanent=answer.status_code < 500)
        files = answer.json()["files"]
        for entry in files:  # names come from the server: never let one leave the tree
            name = entry["name"]
            if name.startswith("/") or ".." in Path(name).parts or not name:
                raise ArtifactFetchError(f"the server's manifest of {source} names {name!r}", permanent=True)
        return list(files)

    def _blob(self, client: httpx.Client, source: str, entry: dict[str, Any]) -> Path:
        """The file ``entry`` names, in the cache: fetched and checked unless already there."""
        blobs = self.cache_dir / "blobs"
        blob = blobs / entry["sha256"]
        if blob.exists():
            return blob
        blobs.mkdir(parents=True, exist_ok=True)
        problem = ""
        attempt = 0
        # A server that has not read the directory yet (another server behind the same address,
        # or this one restarted since the manifest) asks for patience, as for a manifest: waiting
        # is not a failed attempt.
        deadline = time.monotonic() + self.prepare_wait_s
        while attempt < ATTEMPTS:
            # A name of its own: replicas on this node, and a replica's concurrent adapter loads, may
            # fetch the same file at once.
            handle, name = tempfile.mkstemp(dir=blobs, prefix=f".{entry['sha256']}.", suffix=".partial")
            os.close(handle)
            partial = Path(name)
            try:
                size, digest = self._download(client, source, entry["sha256"], partial)
            except _StillPreparing as preparing:
                partial.unlink(missing_ok=True)
                if time.monotonic() >= deadline:
                    raise ArtifactFetchError(f"the server refused {source}/{entry['name']}: {preparing}",
                                             permanent=False) from None
                log.info("%s/%s: %s", source, entry["name"], preparing)
                time.sleep(preparing.retry_after_s)
                continue
            except httpx.HTTPError as exc:
                problem = f"the transfer failed ({exc})"
            else:
                if (size, digest) == (entry["size"], entry["sha256"]):
                    os.replace(partial, blob)
                    return blob
                problem = (f"got {size} bytes with sha256 {digest}, not the {entry['size']} bytes with "
                           f"sha256 {entry['sha256']} its manifest gives (a truncated, corrupt or tampered transfer)")
            attempt += 1
            partial.unlink(missing_ok=True)
            log.warning("%s/%s, attempt %d of %d: %s", source, entry["name"], attempt, ATTEMPTS, problem)
        raise ArtifactFetchError(f"{source}/{entry['name']} was refused after {ATTEMPTS} attempts: {problem}",
                                 permanent=True)

    def _download(self, client: httpx.Client, source: str, sha256: str, target: Path) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        with client.stream("GET", f"{self.routes}/files/{sha256}", params={"path": source}) as answer:
            if answer.status_code != 200:
                answer.read()
                if _still_preparing(answer):
                    raise _StillPreparing(error_message(answer), _retry_after(answer))
                raise httpx.HTTPStatusError(error_message(answer), request=answer.request, response=answer)
            with open(target, "wb") as out:
                for chunk in answer.iter_bytes(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        return size, digest.hexdigest()

    def _assemble(self, tree: Path, files: list[dict[str, Any]]) -> Path:
        """The directory of ``files``, as hard links to their blobs (copies where links fail),
        made aside and renamed into place: a half-made tree is never seen."""
        if (tree / _COMPLETE).exists():
            return tree
        tree.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tree-", dir=tree.parent))
        for entry in files:
            target = scratch / entry["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = self.cache_dir / "blobs" / entry["sha256"]
            try:
                os.link(blob, target)
            except OSError:
                shutil.copyfile(blob, target)
        (scratch / _COMPLETE).write_text(json.dumps(files))
        try:
            os.rename(scratch, tree)
        except OSError:  # another replica on the node made it first: theirs is the same
            shutil.rmtree(scratch, ignore_errors=True)
        return tree


def node_cache_dir() -> Path:
    """This node's artifact cache, shared by the replicas and training jobs on it."""
    return Path(os.environ.get(ARTIFACT_CACHE_ENV) or Path(tempfile.gettempdir()) / "enginehouse" / "artifacts")


class _StillPreparing(Exception):
    """The server's 503 ``artifact_preparing`` for a file: ask again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _still_preparing(answer: httpx.Response) -> bool:
    """The server's answer while it first reads a large directory for its digests."""
    if answer.status_code != 503:
        return False
    try:
        return answer.json()["error"]["code"] == "artifact_preparing"
    except (ValueError, KeyError, TypeError):
        return False


def _retry_after(answer: httpx.Response) -> float:
    """Retry-After in seconds, kept between a tenth of a second and ten."""
    try:
        seconds = float(answer.headers.get("retry-after", "2"))
    except ValueError:
        seconds = 2.0
    return min(max(seconds, 0.1), 10.0)


def _manifest_digest(files: list[dict[str, Any]]) -> str:
    canonical = json.dumps([[f["name"], f["size"], f["sha256"]] for f in files], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()

