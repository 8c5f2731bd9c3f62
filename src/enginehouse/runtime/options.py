"""``--runtime-options``: what an engine's ``runtime_options`` tune inside each replica."""

from __future__ import annotations

import json
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

DtypeOption = Literal["auto", "float32", "bfloat16", "float16"]


class RuntimeOptionsError(ValueError):
    pass


class RuntimeOptions(BaseModel):
    # Unknown keys are logged and ignored: a newer control plane may send options an older
    # replica does not know, and that should not keep the replica from starting.
    model_config = ConfigDict(extra="ignore", frozen=True)

    # Adapters resident in the serving slots at once (one forward can mix this many).
    max_loras: int = Field(default=8, ge=1)
    # Adapters whose weights stay in host memory; more are re-read from disk when needed.
    max_cpu_loras: int = Field(default=64, ge=1)
    max_lora_rank: int = Field(default=64, ge=1)
    # Sequences running at once (a request with n choices counts n).
    max_batch_size: int = Field(default=32, ge=1)
    # Context length (prompt + completion); None: min(model's max positions, 4096).
    max_model_len: int | None = Field(default=None, ge=2)
    dtype: DtypeOption = "auto"
    # Prompt tokens (padded) prefilled per engine step, so one huge prompt cannot stall the
    # token streams of running requests for long. A longer prompt is still admitted, alone.
    max_prefill_tokens: int = Field(default=2048, ge=16)

    @model_validator(mode="after")
    def _tiers_nest(self) -> RuntimeOptions:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras})"
            )
        return self


def parse_runtime_options(raw: str | None) -> RuntimeOptions:
    """Parse the CLI's JSON; raises ``RuntimeOptionsError`` with a message for the user."""
    if not raw:
        return RuntimeOptions()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuntimeOptionsError(f"--runtime-options is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RuntimeOptionsError("--runtime-options must be a JSON object")
    data = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(data) - set(RuntimeOptions.model_fields))
    if unknown:
        log.warning("ignoring unknown runtime options: %s", ", ".join(unknown))
    try:
        return RuntimeOptions.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'runtime_options'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise RuntimeOptionsError(f"invalid runtime options: {problems}") from None
