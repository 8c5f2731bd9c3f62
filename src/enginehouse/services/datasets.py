"""Datasets: JSONL files uploaded for fine-tuning, kept under ``<data dir>/datasets/``.

An upload is streamed to disk a chunk at a time and checked as it goes: every non-blank line
must be a JSON object (what each task type needs of a row is checked when a job uses it, since
a dataset does not say which task it is for). A dataset a Pending or Running job trains on
cannot be deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Row, or_, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import Name
from enginehouse.db.models import DatasetModel, TrainingJobModel
from enginehouse.errors import BadRequestError, ConflictError, NotFoundError, PayloadTooLargeError
from enginehouse.services.pages import Page, PageRequest, newest_first
from enginehouse.services.reads import read, read_columns

DATASET_FIELDS = ("id", "name", "rows", "bytes", "created_at")
# Jobs in these states still read their datasets.
ACTIVE_JOB_STATES = ("Pending", "Running", "Testing")
_NAME = TypeAdapter(Name)


def check_name(name: str) -> str:
    try:
        return _NAME.validate_python(name)
    except ValidationError as exc:
        raise BadRequestError(f"name: {exc.errors()[0]['msg']}", code="invalid_name", param="name") from None


def store_dataset(
    session: Session, org_id: str, name: str, chunks: Iterable[bytes], directory: Path, max_bytes: int
) -> DatasetModel:
    """Write the uploaded file to ``directory`` (checking it line by line) and record it."""
    check_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    dataset_id = new_id("ds")
    path = directory / f"{dataset_id}.jsonl"
    scratch = directory / f".{dataset_id}.upload"
    try:
        rows, size = _write_checked(chunks, scratch, max_bytes)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    dataset = DatasetModel(id=dataset_id, organization_id=org_id, name=name, rows=rows, bytes=size,
                           path=str(path), created_at=utcnow())
    session.add(dataset)
    try:
        session.flush()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return dataset


def _write_checked(chunks: Iterable[bytes], scratch: Path, max_bytes: int) -> tuple[int, int]:
    """(rows, bytes) of the file written to ``scratch``; a 400 naming the first bad line, or a
    413 once it passes ``max_bytes`` (having written no further)."""
    checker = _LineChecker()
    size = 0
    with open(scratch, "wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(
                    f"the dataset is larger than this server's limit of {max_bytes} bytes "
                    "(ENGINEHOUSE_MAX_DATASET_BYTES); split it or raise the limit")
            checker.feed(chunk)
            out.write(chunk)
    checker.close()
    if checker.rows == 0:
        raise BadRequestError("the dataset has no rows: upload a JSONL file with one JSON object per line",
                              code="invalid_dataset", param="file")
    return checker.rows, size


class _LineChecker:
    """Checks a JSONL stream a chunk at a time: every non-blank line a JSON object."""

    def __init__(self) -> None:
        self.rows = 0
        self.line_number = 0
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._check(line)

    def close(self) -> None:
        if self._partial:
            self._check(self._partial)
            self._partial = b""

    def _check(self, line: bytes) -> None:
        self.line_number += 1
        if not line.strip():
            return
        try:
            value: Any = json.loads(line)
        except UnicodeDecodeError:
            raise self._error("is not UTF-8 text") from None
        except ValueError as exc:
            raise self._error(f"is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise self._error(f"is a JSON {type(value).__name__}, not an object")
        self.rows += 1

    def _error(self, what: str) -> BadRequestError:
        return BadRequestError(f"line {self.line_number} {what}; a dataset holds one JSON object per line",
                               code="invalid_dataset", param="file")


def forget_file(path: str) -> None:
    """Remove a stored file whose row was never committed (a form refused after the upload)."""
    Path(path).unlink(missing_ok=True)


def read_dataset(session: Session, org_id: str, dataset_id: str) -> Row[Any]:
    query = select(*read_columns(session, DatasetModel, DATASET_FIELDS)).where(
        DatasetModel.id == dataset_id, DatasetModel.organization_id == org_id
    )
    row = read(session, query).first()
    if row is None:
        raise NotFoundError(f"dataset {dataset_id!r} not found", param="dataset_id")
    return row


def get_dataset(session: Session, org_id: str, dataset_id: str, param: str = "dataset_id") -> DatasetModel:
    dataset = session.get(DatasetModel, dataset_id)
    if dataset is None or dataset.organization_id != org_id:
        raise NotFoundError(f"dataset {dataset_id!r} not found", code="dataset_not_found", param=param)
    return dataset


def list_datasets(session: Session, org_id: str, page: PageRequest) -> Page[Row[Any]]:
    query = select(*read_columns(session, DatasetModel, DATASET_FIELDS)).where(
        DatasetModel.organization_id == org_id
    )
    return newest_first(session, query, DatasetModel, org_id, page, "dataset")


def delete_dataset(session: Session, org_id: str, dataset_id: str) -> None:
    dataset = get_dataset(session, org_id, dataset_id)
    user = session.scalars(
        select(TrainingJobModel.id).where(
            or_(TrainingJobModel.train_dataset_id == dataset_id, TrainingJobModel.test_dataset_id == dataset_id),
            TrainingJobModel.status.in_(ACTIVE_JOB_STATES),
        ).limit(1)
    ).first()
    if user is not None:
        raise ConflictError(f"dataset {dataset_id} is in use by training job {user}; cancel it or wait for it",
                            code="dataset_in_use", param="dataset_id")
    path = Path(dataset.path)
    session.delete(dataset)
    session.flush()
    path.unlink(missing_ok=True)
