"""Read what sizing needs from a base model's files: ``config.json`` and the JSON header at the
start of each ``*.safetensors`` file (8 bytes of little-endian length, then the header). No
weight is read, so a local directory is sized in milliseconds whatever the model's size.

``base_model`` is resolved as the runtime resolves it (``from_pretrained``): a local directory,
or a Hub id looked up in the Hugging Face cache, then on the Hub itself, with a time limit so
that a server without network answers at once with what it could not learn.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enginehouse.core.deadline import first_line, within
from enginehouse.core.model_names import looks_like_local_path
from enginehouse.core.sizing import DTYPE_BYTES, ModelFacts, shape_from_config

# Headers of real checkpoints are kilobytes to a few megabytes; beyond this a file is no
# safetensors file (and must not make us allocate its claimed length).
MAX_HEADER_BYTES = 100 * 2**20
MAX_CONFIG_BYTES = 10 * 2**20
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
# How long creating an engine may wait for the Hub before sizing without it, and how long after
# the Hub failed to answer in time it is not asked again (a server without network would
# otherwise make every engine creation wait).
HUB_TIMEOUT_S = 3.0
HUB_QUIET_S = 300.0
_hub_silent_until = 0.0  # monotonic time


class UnreadableHeader(ValueError):
    pass


def parse_safetensors_header(prefix: bytes) -> dict[str, Any]:
    """The header of a safetensors file whose first bytes are ``prefix`` (length + JSON)."""
    if len(prefix) < 8:
        raise UnreadableHeader("shorter than a safetensors length prefix")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES or len(prefix) < 8 + length:
        raise UnreadableHeader(f"claims a {length}-byte header")
    try:
        header = json.loads(prefix[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableHeader(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise UnreadableHeader("header is not a JSON object")
    return header


def read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) == 8:
            (length,) = struct.unpack("<Q", prefix)
            prefix += handle.read(min(length, MAX_HEADER_BYTES + 1))
    return parse_safetensors_header(prefix)


def count_parameters(header: Mapping[str, Any]) -> dict[str, int]:
    """Elements per dtype of the tensors a header describes."""
    counts: dict[str, int] = {}
    for name, tensor in header.items():
        if name == "__metadata__" or not isinstance(tensor, Mapping):
            continue
        dtype, shape = tensor.get("dtype"), tensor.get("shape")
        if dtype not in DTYPE_BYTES or not isinstance(shape, list):
            raise UnreadableHeader(f"tensor {name!r} has no known dtype and shape")
        elements = 1
        for size in shape:
            if not isinstance(size, int) or size < 0:
                raise UnreadableHeader(f"tensor {name!r} has a bad shape")
            elements *= size
        counts[dtype] = counts.get(dtype, 0) + elements
    return counts


def _read_config(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = directory / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None, "config.json is too large to be a model config"
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "no config.json"
    except (OSError, ValueError) as exc:
        return None, f"config.json unreadable ({exc})"
    if not isinstance(config, dict):
        return None, "config.json is not a JSON object"
    return config, None


def _file_sizes(directory: Path) -> int:
    total = 0
    for path in directory.iterdir():
        if path.name.endswith(WEIGHT_FILE_SUFFIXES) and path.is_file():
            total += path.stat().st_size
    return total


def _parameters(directory: Path) -> tuple[dict[str, int], str | None]:
    counts: dict[str, int] = {}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return {}, "no safetensors files"
    for path in files:
        try:
            for dtype, count in count_parameters(read_safetensors_header(path)).items():
                counts[dtype] = counts.get(dtype, 0) + count
        except (OSError, UnreadableHeader) as exc:
            return {}, f"{path.name} has no readable safetensors header ({exc})"
    return counts, None


def facts_from_directory(directory: Path) -> ModelFacts:
    config, config_problem = _read_config(directory)
    parameters, weights_problem = _parameters(directory)
    notes = []
    if config_problem:
        notes.append(f"{config_problem}: KV cache, adapter slots and activations not counted")
    file_bytes = 0
    if weights_problem:
        file_bytes = _file_sizes(directory)
        notes.append(f"{weights_problem}: weights sized from file sizes ({file_bytes} bytes)")
    shape = shape_from_config(config) if config else None
    if config and shape is None:
        notes.append("config.json names no transformer dimensions: only weights and overhead counted")
    return ModelFacts(shape, parameters, file_bytes, tuple(notes))


def read_model_facts(base_model: str, hub_timeout_s: float = HUB_TIMEOUT_S) -> ModelFacts:
    """Never raises: what cannot be read becomes a note, and the estimate counts less."""
    try:
        directory = Path(base_model).expanduser()
        if directory.is_dir():
            return facts_from_directory(directory)
    except (OSError, ValueError) as exc:  # a NUL byte, a path too long, a directory we may not list
        return ModelFacts(None, notes=(f"base model {base_model!r} cannot be read ({exc})",))
    if looks_like_local_path(base_model):
        return ModelFacts(None, notes=(f"base model directory {base_model} does not exist",))
    return _facts_from_hub(base_model, hub_timeout_s)


def _facts_from_hub(repo_id: str, timeout_s: float) -> ModelFacts:
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception as exc:  # an id the Hub client refuses (bad characters, too long)
        return ModelFacts(None, notes=(f"{repo_id!r} is neither a directory nor a Hub id ({exc})",))
    if isinstance(cached, str):
        facts = facts_from_directory(Path(cached).parent)
        # A cache that holds the config but not the weights (yet) says little: ask the Hub.
        if facts.parameters_by_dtype or facts.weight_file_bytes or constants.HF_HUB_OFFLINE:
            return facts
    elif constants.HF_HUB_OFFLINE:
        return ModelFacts(None, notes=(f"{repo_id!r} is not in the Hugging Face cache and the Hub is offline",))
    global _hub_silent_until
    if time.monotonic() < _hub_silent_until:
        return ModelFacts(None, notes=(f"the Hugging Face Hub did not answer recently; {repo_id!r} not looked up",))
    # Bounded here too: a Hub call that hangs past its own time-outs must not hold up the request.
    answer = within(timeout_s, lambda: _ask_hub(repo_id, timeout_s), name="hub-sizing")
    if answer is None:
        _hub_silent_until = time.monotonic() + HUB_QUIET_S
        return ModelFacts(None, notes=(f"the Hugging Face Hub did not describe {repo_id!r} within {timeout_s:g} s",))
    return answer


def _ask_hub(repo_id: str, timeout_s: float) -> ModelFacts:
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    try:
        config_path = hf_hub_download(repo_id, "config.json", etag_timeout=timeout_s)
        metadata = get_safetensors_metadata(repo_id, timeout=timeout_s)
    except Exception as exc:  # network, authentication, no such repository, no safetensors
        return ModelFacts(None, notes=(f"the Hugging Face Hub could not describe {repo_id!r}: {first_line(exc)}",))
    config, problem = _read_config(Path(config_path).parent)
    shape = shape_from_config(config) if config else None
    notes = (f"{problem}: KV cache, adapter slots and activations not counted",) if problem else ()
    return ModelFacts(shape, dict(metadata.parameter_count), 0, notes)
