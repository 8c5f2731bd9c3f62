"""Model and checkpoint files as content-addressed artifacts, for replicas and fine-tuning jobs
that cannot see the server's disk (a node of a Ray cluster without a shared filesystem).

A directory the server holds (an engine's base model, a deployment's checkpoint) is described by
a manifest: each regular file under it (symbolic links followed, as a model loader would, which
Hugging Face's cache needs) with its size and sha256. The replica fetches each file by its digest,
checks it, and keeps it in its node's cache (``runtime/artifacts.py``). A single file (a job's
dataset) is served as a manifest of that one file, under its own name. Digests are remembered by
(path, size, modification time), so a directory is read in full once, not on every request.

Reading a large model for its digests takes minutes (a 140 GB model at disk speed), longer than
a caller should hold a request open. The first manifest request starts the reading in a thread of
its own and waits a little; a directory not read by then is answered with how far the reading has
got (``ArtifactPreparing``; the routes send 503 ``artifact_preparing`` with Retry-After), and the
caller asks again until the manifest is whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# How long a manifest request waits for a directory's first reading before it answers with the
# reading's progress instead (a model of a few GB is read within it).
MANIFEST_WAIT_S = 2.0


class ArtifactError(Exception):
    """What keeps a directory from being served as an artifact; the message says what."""


class ArtifactPreparing(Exception):
    """The directory's files are still being read for their digests, in the background."""

    def __init__(self, directory: Path, read_bytes: int, total_bytes: int) -> None:
        super().__init__(f"the server is still reading {directory} for its files' digests "
                         f"({_gigabytes(read_bytes)} of {_gigabytes(total_bytes)} GB read)")
        self.read_bytes = read_bytes
        self.total_bytes = total_bytes


@dataclass
class _Reading:
    """One directory's files being read for their digests by a thread of their own."""

    total_bytes: int
    read_bytes: int = 0
    error: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ArtifactFile:
    name: str  # the path under the directory, with "/" between parts
    size: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def file_digest(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of the file; ``progress`` is told the size of each chunk read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


class DigestCache:
    """sha256 of files, remembered while their size and modification time stay the same.
    Thread-safe: requests read manifests from worker threads."""

    def __init__(self, wait_s: float = MANIFEST_WAIT_S) -> None:
        self.wait_s = wait_s
        self._known: dict[str, tuple[int, int, str]] = {}
        self._readings: dict[str, _Reading] = {}  # directory → its reading in progress
        self._lock = threading.Lock()

    def digest(self, path: Path, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
        """(size, sha256) of the file at ``path``."""
        stat = path.stat()
        known = self._known_digest(path, stat)
        if known is not None:
            return stat.st_size, known
        digest = file_digest(path, progress)
        with self._lock:
            self._known[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
        return stat.st_size, digest

    def manifest(self, directory: Path) -> list[ArtifactFile]:
        """Every file under ``directory`` (or the one file it is: a training job's dataset),
        sorted by name; ``ArtifactError`` when it is neither a readable directory nor a file, and
        ``ArtifactPreparing`` while files not read before are still being read after ``wait_s``."""
        return [ArtifactFile(name, size, digest) for name, _path, size, digest in self._digested(directory)]

    def find(self, directory: Path, sha256: str) -> Path | None:
        """The file under ``directory`` (or ``directory`` itself, a file) whose content has digest
        ``sha256``. Read as ``manifest`` reads: a file asked for before its directory was read
        gets ``ArtifactPreparing`` too, rather than a request held for as long as hashing a large
        model takes."""
        return next((path for _name, path, _size, digest in self._digested(directory) if digest == sha256), None)

    def _digested(self, directory: Path) -> list[tuple[str, Path, int, str]]:
        """(name, path, size, sha256) of every file, reading those not read before in the
        background and waiting ``wait_s`` for them."""
        try:
            files = self._files(directory)
            unread: list[tuple[Path, os.stat_result]] = []
            for _name, path in files:
                stat = path.stat()
                if self._known_digest(path, stat) is None:
                    unread.append((path, stat))
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None
        if unread:
            reading = self._reading(directory, unread)
            if not reading.finished.wait(self.wait_s):
                raise ArtifactPreparing(directory, reading.read_bytes, reading.total_bytes)
            if reading.error is not None:
                raise ArtifactError(reading.error)
        try:
            return [(name, path, *self.digest(path)) for name, path in files]
        except OSError as exc:
            raise ArtifactError(f"{directory} cannot be read: {exc.strerror or exc}") from None

    def _known_digest(self, path: Path, stat: os.stat_result) -> str | None:
        with self._lock:
            known = self._known.get(str(path))
        return known[2] if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns) else None

    def _reading(self, directory: Path, unread: list[tuple[Path, os.stat_result]]) -> _Reading:
        """The reading of ``directory`` in progress, or a new one of its ``unread`` files."""
        key = str(directory)
        with self._lock:
            reading = self._readings.get(key)
            if reading is not None:
                return reading
            reading = self._readings[key] = _Reading(sum(stat.st_size for _path, stat in unread))
        thread = threading.Thread(target=self._read, args=(key, reading, [path for path, _stat in unread]),
                                  name=f"artifact-digests {directory.name}", daemon=True)
        thread.start()
        return reading

    def _read(self, key: str, reading: _Reading, paths: list[Path]) -> None:
        def progress(size: int) -> None:
            reading.read_bytes += size  # this thread alone writes it

        try:
            for path in paths:
                self.digest(path, progress)
        except OSError as exc:
            reading.error = f"{key} cannot be read: {exc.strerror or exc}"
            log.warning("%s", reading.error)
        finally:
            with self._lock:  # the next request after this reads again what changed since
                self._readings.pop(key, None)
            reading.finished.set()

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


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.1f}"
