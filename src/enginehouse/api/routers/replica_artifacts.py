"""/v1/replica-artifacts: the model and checkpoint files a replica's engine names, served to that
replica alone (``enginehouse.artifacts``).

The caller proves it is a replica with the secret it was launched with (the header it also
demands of its own callers); it is given only what its engine serves: the base model's
directory and its deployments' checkpoint directories. Users' API keys open nothing here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.api.deps import SessionDep
from enginehouse.api.views import JsonResponse
from enginehouse.artifacts import ArtifactError, ArtifactPreparing, DigestCache
from enginehouse.db.models import EngineModel, ReplicaModel
from enginehouse.errors import AuthenticationError, BadRequestError, NotFoundError, ServiceUnavailableError
from enginehouse.replicaauth import SECRET_HEADER
from enginehouse.services import engines as engine_service

router = APIRouter(prefix="/v1/replica-artifacts", tags=["replica artifacts"])

SecretHeader = Annotated[str | None, Header(alias=SECRET_HEADER, description="The calling replica's secret.")]
PathQuery = Annotated[str, Query(description="A directory the replica's engine names: its base model's, or a "
                                             "deployment's checkpoint.")]
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Seconds a caller is asked to wait before asking again for a manifest still being read.
PREPARING_RETRY_S = 2


def _engine_directory(session: Session, secret: str | None, path: str) -> Path:
    """``path``, when the replica holding ``secret`` may read it; 401 or 404 otherwise."""
    replica = session.scalar(select(ReplicaModel).where(ReplicaModel.secret == secret)) if secret else None
    if replica is None:
        raise AuthenticationError(f"only a replica may fetch artifacts, with its own {SECRET_HEADER} header",
                                  code="replica_secret_refused")
    engine = session.get(EngineModel, replica.engine_id)
    allowed = {engine.base_model} if engine is not None else set()
    if engine is not None:
        allowed |= {d.checkpoint_path for d in engine_service.engine_deployments(session, engine.id)
                    if d.checkpoint_path}
    if path not in allowed:
        raise NotFoundError(f"{path!r} is not a model or checkpoint of this replica's engine",
                            code="artifact_not_found", param="path")
    return Path(path)


def _digests(request: Request) -> DigestCache:
    return request.app.state.artifact_digests


@router.get("/manifest")
def manifest(path: PathQuery, request: Request, session: SessionDep, secret: SecretHeader = None) -> JsonResponse:
    """Every file of the directory, with its size and sha256."""
    return manifest_answer(request, _engine_directory(session, secret, path), path)


@router.get("/files/{sha256}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}})
def artifact_file(sha256: str, path: PathQuery, request: Request, session: SessionDep,
                  secret: SecretHeader = None) -> FileResponse:
    """One file of the directory, by the sha256 its manifest gives."""
    return file_answer(request, _engine_directory(session, secret, path), path, sha256)


def manifest_answer(request: Request, directory: Path, path: str) -> JsonResponse:
    """The manifest of ``directory`` (a file's: that one file), which the caller may read; 503
    ``artifact_preparing``, with how far the reading has got, while a large one is first read."""
    with _reading_errors():
        files = _digests(request).manifest(directory)
    return JsonResponse({"object": "artifact.manifest", "path": path, "files": [f.to_dict() for f in files]})


def file_answer(request: Request, directory: Path, path: str, sha256: str) -> FileResponse:
    """The file of ``directory`` with digest ``sha256``, which the caller may read; 503
    ``artifact_preparing`` as for its manifest while the directory is first read."""
    if not _SHA256.fullmatch(sha256):
        raise BadRequestError("sha256 must be 64 lowercase hexadecimal digits", code="invalid_digest", param="sha256")
    with _reading_errors():
        found = _digests(request).find(directory, sha256)
    if found is None:
        raise NotFoundError(f"no file of {path!r} has sha256 {sha256}", code="artifact_not_found", param="sha256")
    return FileResponse(found, media_type="application/octet-stream")


@contextmanager
def _reading_errors() -> Iterator[None]:
    """A directory that cannot be read is a 404; one still being read for the first time, a 503."""
    try:
        yield
    except ArtifactError as exc:
        raise NotFoundError(str(exc), code="artifact_not_found", param="path") from None
    except ArtifactPreparing as exc:
        raise ServiceUnavailableError(f"{exc}; ask again shortly", retry_after=PREPARING_RETRY_S,
                                      code="artifact_preparing") from None
