"""Fetching the demo's instruction-tuned model from the Hugging Face Hub, once, into the data
directory, or saying quickly that it cannot be had.

An offline machine must fall back in seconds, not after a download library's retries: the Hub is
asked once, with a short deadline, before anything is downloaded, and not at all when
``HF_HUB_OFFLINE`` is set. A finished download leaves a marker file, so a later start (offline or
not) uses the directory as it is without asking the Hub again; an interrupted one resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from enginehouse.core.deadline import within

log = logging.getLogger(__name__)

INSTRUCT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# What a replica needs of it: weights, configuration, tokenizer (with its chat template). Named
# one by one: the repository also holds ONNX exports and training logs nobody here reads.
INSTRUCT_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"]
# Written after the last file arrived: its presence means the directory is whole.
COMPLETE_MARKER = ".enginehouse-complete"
# How long the Hub may take to answer the first question before the machine counts as offline.
REACH_TIMEOUT_S = 5.0


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (huggingface_hub reads it from the environment)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def hub_reachable(endpoint: str, repo_id: str, timeout_s: float = REACH_TIMEOUT_S) -> bool:
    """Whether the Hub answers about ``repo_id`` within ``timeout_s``. Bounded by ``within`` too,
    because name resolution ignores httpx's timeouts (a resolver with no network can hang for a
    long time)."""

    def ask() -> bool:
        try:
            return httpx.get(f"{endpoint}/api/models/{repo_id}", timeout=timeout_s).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    return within(timeout_s + 1, ask, name="demo-hub-check") is True


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


def fetch_instruct_model(directory: Path, repo_id: str = INSTRUCT_MODEL) -> Path | None:
    """The model's directory, downloaded now if need be (huggingface_hub draws its progress bars
    on the console); None when it cannot be had, saying why in the log."""
    if is_complete(directory):
        return directory
    if hub_offline():
        log.info("demo: HF_HUB_OFFLINE is set, so %s is not fetched; the text-generation demo uses a tiny "
                 "model built here instead", repo_id)
        return None
    endpoint = hub_endpoint()
    if not hub_reachable(endpoint, repo_id):
        log.info("demo: %s does not answer (offline?), so %s is not fetched; the text-generation demo uses "
                 "a tiny model built here instead", endpoint, repo_id)
        return None
    from huggingface_hub import snapshot_download

    log.info("demo: downloading %s into %s", repo_id, directory)
    try:
        snapshot_download(repo_id, local_dir=directory, allow_patterns=INSTRUCT_FILES)
    except Exception as exc:  # any failure of the download means the same thing here: fall back
        log.warning("demo: downloading %s failed (%s); the text-generation demo uses a tiny model built here "
                    "instead", repo_id, exc)
        return None
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json")
               if not (directory / name).is_file()]
    if missing:
        log.warning("demo: the download of %s lacks %s; the text-generation demo uses a tiny model built here "
                    "instead", repo_id, ", ".join(missing))
        return None
    (directory / COMPLETE_MARKER).write_text(repo_id + "\n")
    return directory
