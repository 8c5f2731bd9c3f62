"""/v1/training-artifacts/{job_id}: the files a fine-tuning job running on a cluster node needs
(its base model, datasets and starting checkpoints), served to that job alone.

The caller proves it is the job's worker with the job's own secret (``artifact_grants``), sent in
the header replicas use for theirs; it is given only the paths the job's launch named. Users'
API keys and replicas' secrets open nothing here, and a released job's secret nothing at all.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from enginehouse.api.routers.replica_artifacts import PathQuery, SecretHeader, file_answer, manifest_answer
from enginehouse.api.views import JsonResponse
from enginehouse.artifact_grants import granted_paths, job_directory
from enginehouse.errors import AuthenticationError, NotFoundError
from enginehouse.replicaauth import SECRET_HEADER

router = APIRouter(prefix="/v1/training-artifacts/{job_id}", tags=["replica artifacts"])


def _job_path(request: Request, job_id: str, secret: str | None, path: str) -> Path:
    """``path``, when the job holding ``secret`` may read it; 401 or 404 otherwise."""
    job_dir = job_directory(request.app.state.settings.data_dir / "training", job_id)
    allowed = granted_paths(job_dir, secret or "") if job_dir is not None else None
    if allowed is None:
        # The same answer for an unknown job as for a wrong secret: nothing is learnt by guessing.
        raise AuthenticationError(f"only a training job's worker may fetch its files, with its own "
                                  f"{SECRET_HEADER} header", code="training_secret_refused")
    if path not in allowed:
        raise NotFoundError(f"{path!r} is not a model, dataset or checkpoint of this training job",
                            code="artifact_not_found", param="path")
    return Path(path)


@router.get("/manifest")
def training_manifest(job_id: str, path: PathQuery, request: Request, secret: SecretHeader = None) -> JsonResponse:
    """Every file of the directory (or the one file), with its size and sha256."""
    return manifest_answer(request, _job_path(request, job_id, secret, path), path)


@router.get("/files/{sha256}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}})
def training_file(job_id: str, sha256: str, path: PathQuery, request: Request,
                  secret: SecretHeader = None) -> FileResponse:
    """One file of the directory (or the file itself), by the sha256 its manifest gives."""
    return file_answer(request, _job_path(request, job_id, secret, path), path, sha256)
