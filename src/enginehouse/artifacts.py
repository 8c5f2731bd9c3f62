"""Model and checkpoint files as content-addressed artifacts, for replicas that cannot see the
server's disk (a node of a Ray cluster without a shared filesystem).

A directory the server holds (an engine's base model, a deployment's checkpoint) is described by
a manifest: each regular file under it (symbolic links followed, as a model loader would, which
Hugging Face's cache needs) with its size and sha256. The replica fetches each file by its digest,
checks it, and keeps it in its node's cache (``runtime/artifacts.py``). Digests are remembered by
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
        """Every file under ``directory``, sorted by name; ``ArtifactError`` when it is not a
        readable directory."""
        if not directory.is_dir():
            raise ArtifactError(f"{directory} is not a directory on the server")
        files: list[ArtifactFile] = []
        try:
            for root, _dirs, names in os.walk(directory, followlinks=True):
                for name in names:
                    path = Path(root) / name
                    if not path.is_file():  # a dangling link, a socket...
                        continue
                    size, digest = self.digest(path)
                    files.append(ArtifactFile(path.relative_to(directory).as_posix(), size, digest))
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None
        return sorted(files, key=lambda f: f.name)

    def find(self, directory: Path, sha256: str) -> Path | None:
        """The file under ``directory`` whose content has digest ``sha256``, if any."""
        for entry in self.manifest(directory):
            if entry.sha256 == sha256:
                return directory / entry.name
        return None
