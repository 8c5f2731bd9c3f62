"""Bringing a checkpoint back from where it was trained (a Ray node) into the server's data
directory, file by file, each checked against the size and sha256 its node gave for it.

The copy is made in a hidden ``.<name>.partial`` directory and renamed into place only once every
file is checked, so a checkpoint directory the server holds is always whole: its existence alone
says it was brought back (a restarted server does not copy it again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

CHUNK_BYTES = 8 * 1024 * 1024
ATTEMPTS = 3  # per file: a transfer that does not match its digest is tried again

# Reads ``length`` bytes at ``offset`` of one file of the checkpoint (by its manifest name).
ReadChunk = Callable[[str, int, int], bytes]


class CheckpointCopyError(Exception):
    """A checkpoint that could not be brought back; the message says which file and why."""


def copy_checkpoint(manifest: list[dict[str, Any]], read: ReadChunk, target: Path,
                    chunk_bytes: int = CHUNK_BYTES) -> Path:
    """The checkpoint ``manifest`` describes, read with ``read``, as the directory ``target``."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a copy cut short by a server that stopped
    partial.mkdir(parents=True)
    try:
        for entry in manifest:
            _copy_file(entry, read, partial, chunk_bytes)
        os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def _copy_file(entry: dict[str, Any], read: ReadChunk, directory: Path, chunk_bytes: int) -> None:
    name, size, sha256 = str(entry["name"]), int(entry["size"]), str(entry["sha256"])
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:  # never let a name leave the directory
        raise CheckpointCopyError(f"the checkpoint's manifest names {name!r}")
    target = directory.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    problem = ""
    for _attempt in range(ATTEMPTS):
        got_size, got_sha256 = _transfer(read, name, size, target, chunk_bytes)
        if (got_size, got_sha256) == (size, sha256):
            return
        problem = (f"got {got_size} bytes with sha256 {got_sha256}, not the {size} bytes with sha256 "
                   f"{sha256} its node gave")
    raise CheckpointCopyError(f"{name} was refused after {ATTEMPTS} attempts: {problem}")


def _transfer(read: ReadChunk, name: str, size: int, target: Path, chunk_bytes: int) -> tuple[int, str]:
    digest, written = hashlib.sha256(), 0
    with open(target, "wb") as out:
        while written < size:
            chunk = read(name, written, min(chunk_bytes, size - written))
            if not chunk:  # the file is shorter than its manifest said
                break
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return written, digest.hexdigest()
