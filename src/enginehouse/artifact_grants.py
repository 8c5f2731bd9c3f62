"""What a fine-tuning job running elsewhere (on a Ray node) may fetch from the server: the files
its launch names (base model, datasets, starting checkpoints), and nothing else.

The provider makes a secret per job and hands it to the job's actor, never to a user; the
server keeps only its sha256, with the paths, in ``<data dir>/training/<job id>/artifact-grant.json``
(mode 0600, on the data directory every server shares), so any server can check a fetch, a
restarted one included. Releasing the job removes the grant: its secret opens nothing after.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from pathlib import Path

from enginehouse.core.json_files import JsonFileError, read_json_object
from enginehouse.services.orgs import hash_key

GRANT_FILE = "artifact-grant.json"
# Job ids become directory names: only what ``new_id`` makes, never a walk out of the tree.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def job_directory(training_root: Path, job_id: str) -> Path | None:
    """``<training root>/<job id>``, or None when ``job_id`` cannot be a job's id."""
    return training_root / job_id if _JOB_ID.fullmatch(job_id) else None


def write_grant(job_dir: Path, secret: str, paths: list[str]) -> None:
    """Let the holder of ``secret`` fetch ``paths``; replaces an earlier grant of the job."""
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"secret_sha256": hash_key(secret), "paths": sorted(set(paths))}
    scratch = job_dir / f".{GRANT_FILE}.tmp"
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(scratch, job_dir / GRANT_FILE)


def granted_paths(job_dir: Path, secret: str) -> frozenset[str] | None:
    """The paths the job lets ``secret`` fetch; None when it is not the job's secret (or the job
    has no grant: unknown, or released)."""
    try:
        record = read_json_object(job_dir / GRANT_FILE)
        expected, paths = str(record["secret_sha256"]), record["paths"]
    except (JsonFileError, KeyError):
        return None
    if not secret or not hmac.compare_digest(hash_key(secret), expected) or not isinstance(paths, list):
        return None
    return frozenset(str(path) for path in paths)


def revoke_grant(job_dir: Path) -> None:
    (job_dir / GRANT_FILE).unlink(missing_ok=True)



