"""Which model a single-model replica serves: its base model, or one fine-tune in its place.

The control plane drives swaps through the adapter endpoints (SPEC §4.3):
``PUT /v1/adapters/{name}`` loads a full model directory and serves it under ``name`` instead of
the base model; ``DELETE /v1/adapters/{name}`` brings the base model back, re-read from disk (the
base is not kept in memory while replaced, so a replica holds one model, except during a swap).

A swap loads the new model completely before it takes the old one's place; requests already
holding the old model finish on it, and its memory goes when the last of them is done.
Thread-safe: loads run in worker threads while handlers resolve names on the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from enginehouse.errors import ConflictError, ModelNotFoundError, ServiceUnavailableError, ValidationFailedError
from enginehouse.runtime.single.loading import ModelLoadError

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass(frozen=True)
class ServedModel(Generic[M]):
    name: str  # what clients pass as ``model``
    path: str
    model: M
    fine_tuned: bool


class ModelSlot(Generic[M]):
    def __init__(
        self,
        base: ServedModel[M],
        open_fine_tune: Callable[[str], M],
        open_base: Callable[[], M],
    ) -> None:
        self.base_name = base.name
        self.base_path = base.path
        self._open_fine_tune = open_fine_tune
        self._open_base = open_base
        self._current = base
        self._failed: dict[str, tuple[str, str]] = {}  # name → (path, reason)
        self._lock = threading.Lock()  # guards the two fields above; held briefly
        self._swap_lock = threading.Lock()  # one load at a time; held while reading weights

    @property
    def current(self) -> ServedModel[M]:
        with self._lock:
            return self._current

    def resolve(self, name: str) -> ServedModel[M]:
        """The model serving ``name``: 409 for the base name while a fine-tune replaces it."""
        current = self.current
        if name == current.name:
            return current
        if name == self.base_name:
            raise ConflictError(
                f"'{name}' is not serving: replaced by fine-tuned deployment '{current.name}' (this engine "
                f"serves one model at a time); call '{current.name}', or remove it to bring '{name}' back",
                code="base_replaced",
                param="model",
            )
        raise ModelNotFoundError(f"the model '{name}' does not exist on this replica", param="model")

    def load_fine_tune(self, name: str, path: str) -> ServedModel[M]:
        """Serve the model at ``path`` as ``name`` in place of the base model (blocking).

        Loading the same name and path again is a no-op; the same name with a new path re-points
        it. A second name while one is served is a 409; a model that does not fit is a 422 and
        leaves the current model serving.
        """
        if name == self.base_name:
            raise ConflictError(f"'{name}' is the base model's served name; pick another name for the fine-tune")
        with self._swap_lock:
            current = self.current
            if current.fine_tuned and current.name != name:
                raise ConflictError(
                    f"this engine already serves fine-tuned model '{current.name}' in place of its base model "
                    f"and serves one model at a time; remove '{current.name}' before loading '{name}'",
                    code="fine_tune_already_loaded",
                )
            if current.fine_tuned and _same_path(current.path, path):
                return current
            try:
                model = self._open_fine_tune(path)
            except ModelLoadError as exc:
                with self._lock:
                    self._failed[name] = (path, str(exc))
                raise ValidationFailedError(str(exc), code="model_load_failed", param="path") from None
            served = ServedModel(name, path, model, fine_tuned=True)
            with self._lock:
                self._current = served
                self._failed.pop(name, None)
        log.info("serving fine-tuned model %s from %s in place of %s", name, path, self.base_name)
        return served

    def restore_base(self, name: str) -> bool:
        """Stop serving fine-tune ``name`` and serve the base model again (blocking); False when
        ``name`` is not known here. If the base model cannot be re-read, ``name`` keeps serving
        and the answer is a 503 (the control plane retries)."""
        with self._swap_lock:
            current = self.current
            if not (current.fine_tuned and current.name == name):
                with self._lock:
                    return self._failed.pop(name, None) is not None
            try:
                model = self._open_base()
            except ModelLoadError as exc:
                raise ServiceUnavailableError(
                    f"could not re-load the base model to replace '{name}': {exc}; '{name}' keeps serving",
                    retry_after=10,
                    code="base_reload_failed",
                ) from None
            with self._lock:
                self._current = ServedModel(self.base_name, self.base_path, model, fine_tuned=False)
        log.info("fine-tuned model %s unloaded; serving base model %s again", name, self.base_name)
        return True

    def snapshot(self) -> dict[str, Any]:
        """The fine-tune entries and whether the base model is served, for ``GET /health``."""
        with self._lock:
            current, failed = self._current, dict(self._failed)
        adapters: dict[str, dict[str, str | None]] = {
            name: {"status": "failed", "path": path, "reason": reason} for name, (path, reason) in failed.items()
        }
        if current.fine_tuned:
            adapters[current.name] = {"status": "loaded", "path": current.path, "reason": None}
        return {"adapters": dict(sorted(adapters.items())), "base_served": not current.fine_tuned,
                "serving": current.name}


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()
