"""/v1/datasets: JSONL uploads for fine-tuning (multipart/form-data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from enginehouse.api.deps import OrgDep, SessionDep, get_database
from enginehouse.api.paging import PageDep
from enginehouse.api.views import JsonResponse, dataset_to_dict, page_body
from enginehouse.errors import BadRequestError
from enginehouse.services import datasets as dataset_service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_CHUNK_BYTES = 1024 * 1024

# The body is parsed here, not by FastAPI (which would turn an upload over the limit into a
# generic 400), so the document describes it by hand.
_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "JSONL: one JSON object per line (SPEC §5.1 lists the fields per task type)."},
        "name": {"type": "string", "maxLength": 100,
                 "description": "The dataset's name; the file's name when left out."},
    },
}}}}}


@router.post("", status_code=201, openapi_extra=_UPLOAD_BODY)
async def upload_dataset(request: Request, org: OrgDep) -> JsonResponse:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequestError("send the dataset as multipart/form-data with the JSONL file in the field 'file' "
                              "(curl -F file=@data.jsonl -F name=...)", code="invalid_upload", param="file")
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequestError("the upload has no file in the field 'file'", code="invalid_upload", param="file")
        name = form.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequestError("name must be text, not a file", code="invalid_name", param="name")
        name = name if name is not None else _stem(upload.filename)
        return await run_in_threadpool(_store, request, org, name, upload)
    finally:
        await form.close()


def _stem(filename: str | None) -> str:
    stem = (filename or "").rsplit("/", 1)[-1].removesuffix(".jsonl").removesuffix(".json")
    return stem or "dataset"


def _store(request: Request, org: str, name: str, upload: UploadFile) -> JsonResponse:
    settings = request.app.state.settings
    chunks = iter(lambda: upload.file.read(_CHUNK_BYTES), b"")
    with get_database(request).session() as session:
        dataset = dataset_service.store_dataset(
            session, org, name, chunks, settings.datasets_dir, settings.max_dataset_bytes)
        body = dataset_to_dict(dataset_service.read_dataset(session, org, dataset.id))
    return JsonResponse(body, 201)


@router.get("")
def list_datasets(session: SessionDep, org: OrgDep, page: PageDep) -> JsonResponse:
    return JsonResponse(page_body(dataset_service.list_datasets(session, org, page), dataset_to_dict))


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, session: SessionDep, org: OrgDep) -> JsonResponse:
    return JsonResponse(dataset_to_dict(dataset_service.read_dataset(session, org, dataset_id)))


@router.delete("/{dataset_id}", status_code=202)
def delete_dataset(dataset_id: str, session: SessionDep, org: OrgDep) -> JSONResponse:
    dataset_service.delete_dataset(session, org, dataset_id)
    return JSONResponse({"id": dataset_id, "object": "dataset", "deleted": True}, 202)
