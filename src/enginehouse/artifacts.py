"""Model and checkpoint files as content-addressed artifacts, for replicas and fine-tuning jobs
that cannot see the server's disk (a node of a Ray cluster without a shared filesystem).

A directory the server holds (an engine's base model, a deployment's checkpoint) is described by
a manifest: each regular file under it (symbolic links followed, as a model loader would, which
Hugging Face's cache needs) with its size and sha256. The replica fetches each file by its digest,
checks it, and keeps it in its node's cache (``runtime/artifacts.py``). A single file (a job's
dataset) is served as a manifest of that one file, under its own name. Digests are remembered by
(path, size, modification time), so a directory is read in full once, not on every request.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """What keeps a directory from being served as an artifact; the message says what."""


@dataclass(frozen=True)
class ArtifactFile:
    name: str  # the path under the directory, with "/" between parts
    size: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DigestCache:
    """sha256 of files, remembered while their size and modification time stay the same.
    Thread-safe: requests read manifests from worker threads."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def digest(self, path: Path) -> tuple[int, str]:
        """(size, sha256) of the file at ``path``."""
        stat = path.stat()
        key = str(path)
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return stat.st_size, known[2]
        digest = file_digest(path)
        with self._lock:
            self._known[key] = (stat.st_size, stat.st_mtime_ns, digest)
        return stat.st_size, digest

    def manifest(self, directory: Path) -> list[ArtifactFile]:
        """Every file under ``directory`` (or the one file it is: a training job's dataset),
        sorted by name; ``ArtifactError`` when it is neither a readable directory nor a file."""
        try:
            return [ArtifactFile(name, *self.digest(path)) for name, path in self._files(directory)]
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None

    def find(self, directory: Path, sha256: str) -> Path | None:
        """The file under ``directory`` (or ``directory`` itself, a file) whose content has digest ``sha256``."""
        try:
            return next((path for _name, path in self._files(directory) if self.digest(path)[1] == sha256), None)
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None

    @staticmethod
    def _files(directory: Path) -> list[tuple[str, Path]]:
        """(name in the manifest, path) of each regular file, sorted by name."""
        if directory.is_file():
            return [(directory.name, directory)]
        if not directory.is_dir():
            raise ArtifactError(f"{directory} is neither a directory nor a file on the server")
        files: list[tuple[str, Path]] = []
        try:
            for root, _dirs, names in os.walk(directory, followlinks=True):
                for name in names:
                    path = Path(root) / name
                    if path.is_file():  # not a dangling link, a socket...
                        files.append((path.relative_to(directory).as_posix(), path))
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None
        return sorted(files)
